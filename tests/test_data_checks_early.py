"""What the data layer can know before the first step is checked in ``setup`` (issues 28.7 and 27.1): images of
different sizes under ``preprocess=none`` with batches of several images, and how many validation / test images
each side has (what FID/KID need)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from cutlight.checks import ConfigValueError
from cutlight.data import BuiltinDataModule, SingleImageDataModule, UnpairedDataModule
from cutlight.data.image_checks import header_size, mixed_sizes


def images(folder: Path, sizes: list[tuple[int, int]], prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        paths.append(folder / f"{prefix}{i}.png")
        Image.new("RGB", size, (10 * i, 100, 200)).save(paths[-1])
    return paths


def unpaired(root: Path, **kw) -> UnpairedDataModule:
    settings = dict(preprocess="none", batch_size=4, serial_batches=True, num_workers=0, load_size=32, crop_size=32)
    return UnpairedDataModule(root=str(root), **{**settings, **kw})


# ------------------------------------------------------------------- preprocess=none and the batch size
def test_mixed_sizes_with_preprocess_none_are_refused_in_setup_naming_two_files(tmp_path):
    a = images(tmp_path / "trainA", [(40, 40), (40, 40), (48, 40), (40, 40)])
    images(tmp_path / "trainB", [(40, 40)] * 4)
    dm = unpaired(tmp_path)
    with pytest.raises(ConfigValueError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert info.value.key == "data.batch_size" and message.startswith("data.batch_size=4 is invalid")
    assert f"'{a[0]}' is 40x40 but '{a[2]}' is 48x40 (WxH" in message
    assert "data.batch_size=1" in message and "data.preprocess=resize_and_crop" in message
    assert dm.train_dataset is None  # nothing built

    with pytest.raises(ConfigValueError, match="data.batch_size"):  # even without the file check
        unpaired(tmp_path, verify="none").setup("fit")


def test_mixed_sizes_in_the_target_domain_are_named_too(tmp_path):
    images(tmp_path / "trainA", [(40, 40)] * 3)
    b = images(tmp_path / "trainB", [(36, 52), (36, 52), (36, 52), (52, 36)])
    with pytest.raises(ConfigValueError, match=f"'{b[0]}' is 36x52 but '{b[3]}' is 52x36"):
        unpaired(tmp_path, batch_size=2).setup("fit")


def test_sizes_that_preprocess_none_makes_equal_are_batched(tmp_path):
    images(tmp_path / "trainA", [(40, 40), (43, 41), (41, 43), (40, 42)])  # all 40x40 after rounding down to 4
    images(tmp_path / "trainB", [(36, 44)] * 4)
    rotated = Image.new("RGB", (44, 36), (1, 2, 3))  # stored 44x36, EXIF turns it upright: 36x44 as loaded
    exif = rotated.getexif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "trainB" / "rotated.jpg", exif=exif)
    assert header_size(tmp_path / "trainB" / "rotated.jpg") == (36, 44)
    dm = unpaired(tmp_path)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))  # collate stacks them
    assert batch["A"].shape == (4, 3, 40, 40) and batch["B"].shape == (4, 3, 44, 36)


def test_mixed_sizes_pass_with_batch_size_1_or_a_resizing_preprocess(tmp_path):
    images(tmp_path / "trainA", [(40, 40), (48, 40), (64, 48)])
    images(tmp_path / "trainB", [(40, 40), (52, 40)])
    unpaired(tmp_path, batch_size=1).setup("fit")
    for preprocess in ("resize_and_crop", "crop", "scale_width"):
        dm = unpaired(tmp_path, preprocess=preprocess, batch_size=2, crop_size=24)
        dm.setup("fit")
        assert next(iter(dm.train_dataloader()))["A"].shape == (2, 3, 24, 24)


def test_mixed_sizes_skips_unreadable_files(tmp_path):
    good = images(tmp_path, [(40, 40), (40, 40)])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert mixed_sizes([good[0], tmp_path / "broken.png", good[1]]) is None
    assert header_size(tmp_path / "broken.png") is None


def test_mixed_sizes_are_refused_before_the_first_training_step(tmp_path):
    import pytorch_lightning as pl

    from helpers import tiny_module, tiny_trainer

    images(tmp_path / "trainA", [(40, 40), (44, 40)])
    images(tmp_path / "trainB", [(40, 40)] * 2)
    steps = []

    class Count(pl.Callback):
        def on_train_batch_start(self, *args):
            steps.append(1)

    with pytest.raises(ConfigValueError, match="data.batch_size=2 is invalid"):
        tiny_trainer(tmp_path, callbacks=[Count()]).fit(tiny_module(val_metrics=False),
                                                       datamodule=unpaired(tmp_path, batch_size=2))
    assert steps == []


# ------------------------------------------------------------------- validation / test images per side
def folder_layout(root: Path, counts: dict[str, int]) -> Path:
    for split, n in counts.items():
        images(root / split, [(40, 40)] * n)
    return root


def test_num_eval_images_counts_each_side_before_and_after_setup(tmp_path):
    root = folder_layout(tmp_path, {"trainA": 2, "trainB": 2, "testA": 1, "testB": 3})
    dm = unpaired(root, batch_size=1)
    assert dm.num_eval_images() == (1, 3)  # before setup: from the folders
    dm.setup("fit")
    assert dm.num_eval_images("val") == (1, 3) == (len(dm.val_dataset_a), len(dm.val_dataset_b))
    assert dm.num_eval_images("test") == (1, 3)  # the test split is the validation folders here
    assert unpaired(root, batch_size=1, direction="BtoA").num_eval_images() == (3, 1)  # source first
    assert unpaired(root, batch_size=1, max_val_images=2).num_eval_images() == (1, 2)
    with pytest.raises(ValueError, match="unknown split 'train'"):
        dm.num_eval_images("train")


def test_num_eval_images_without_validation_and_with_a_test_split(tmp_path):
    root = folder_layout(tmp_path, {"trainA": 2, "trainB": 2, "heldA": 5, "heldB": 4})
    dm = unpaired(root, batch_size=1)
    dm.setup("fit")
    assert dm.val_dataloader() == [] and dm.num_eval_images("val") == (0, 0)  # no testA/testB: no validation
    dm = unpaired(root, batch_size=1, test_dir_a=str(root / "heldA"), test_dir_b=str(root / "heldB"))
    assert dm.num_eval_images("test") == (5, 4) and dm.num_eval_images("val") == (0, 0)
    dm.setup("test")
    assert dm.num_eval_images("test") == (5, 4)


def test_num_eval_images_decodes_no_image(tmp_path, monkeypatch):
    import cutlight.data.datasets as datasets

    root = folder_layout(tmp_path, {"trainA": 1, "trainB": 1, "testA": 6, "testB": 7})
    monkeypatch.setattr(datasets, "load_image", lambda *a, **k: pytest.fail("an image was decoded"))
    dm = unpaired(root, batch_size=1, verify="none")
    dm.setup("fit")
    assert dm.num_eval_images() == (6, 7)


def test_num_eval_images_of_the_builtin_and_single_image_data(tmp_path):
    builtin = BuiltinDataModule(size=32, num_train=2, num_test=3, num_val=2, cache_dir=str(tmp_path))
    assert builtin.num_eval_images("val") == (2, 2)  # generated on demand
    builtin.setup("fit")
    assert builtin.num_eval_images("val") == (2, 2) and builtin.num_eval_images("test") == (3, 3)
    no_test = BuiltinDataModule(size=32, num_train=2, num_test=0, cache_dir=str(tmp_path))
    no_test.setup("fit")
    assert no_test.num_eval_images() == (0, 0)
    a, b = images(tmp_path / "pair", [(40, 40), (40, 40)])
    single = SingleImageDataModule(str(a), str(b))
    assert single.num_eval_images("val") == (1, 1) and single.num_eval_images("test") == (0, 0)


def test_num_eval_images_is_known_in_the_lightning_modules_setup(tmp_path):
    """Lightning sets the DataModule up before the LightningModule: its ``setup`` can refuse a split too small for
    FID/KID before the first step (the check itself is the LightningModule's)."""
    import pytorch_lightning as pl

    from helpers import tiny_module, tiny_trainer

    root = folder_layout(tmp_path, {"trainA": 2, "trainB": 2, "testA": 1, "testB": 1})
    seen, steps = [], []

    class Count(pl.Callback):
        def on_train_batch_start(self, *args):
            steps.append(1)

    model = tiny_module(val_metrics=False)

    def setup(stage):
        seen.append(model.trainer.datamodule.num_eval_images("val"))
        raise RuntimeError("FID/KID need >= 2 images per side")

    model.setup = setup
    with pytest.raises(RuntimeError, match="FID/KID need"):
        tiny_trainer(tmp_path, callbacks=[Count()]).fit(model, datamodule=unpaired(root, batch_size=1))
    assert seen == [(1, 1)] and steps == []


# ------------------------------------------------------------------- settings of the wrong type name their key
WRONG = [  # (key, bad value, the module's other settings)
    ("root", 1.5, {}), ("dir_a", True, {"dir_b": "/b"}), ("val_dir_b", [1], {"val_dir_a": "/a"}),
    ("flip", "maybe", {}), ("serial_batches", 1, {}), ("pin_memory", "yes", {}), ("input_nc", True, {}),
    ("output_nc", 2, {}), ("batch_size", "abc", {}), ("max_val_images", 0, {}),
]


@pytest.mark.parametrize("key, value, other", WRONG)
def test_folder_data_settings_of_the_wrong_type_name_the_key(tmp_path, key, value, other):
    settings = {"root": str(tmp_path), **other, key: value}
    with pytest.raises(ConfigValueError, match="^" + re.escape(f"{key}={value!r} is invalid: expected")) as info:
        UnpairedDataModule(**settings)
    assert info.value.key == key  # the training entrypoint prefixes it: data.<key>


@pytest.mark.parametrize("key, value", [("frame", "no"), ("cache_dir", 3.0), ("flip", None)])
def test_builtin_data_settings_of_the_wrong_type_name_the_key(tmp_path, key, value):
    with pytest.raises(ConfigValueError, match=f"^{key}={value!r} is invalid: expected"):
        BuiltinDataModule(**{"cache_dir": str(tmp_path), key: value})


@pytest.mark.parametrize("key, value", [
    ("image_a", 1.5), ("cache_dir", False), ("load_size", "big"), ("crop_size", 0), ("random_scale_max", 0.5),
    ("random_scale_max", "x"), ("flip", "true"), ("length", None), ("batch_size", 2.0), ("num_workers", -1),
    ("input_nc", 4), ("output_nc", True), ("pin_memory", None), ("length", 8),
])
def test_single_image_settings_of_the_wrong_type_name_the_key(tmp_path, key, value):
    a, b = images(tmp_path, [(40, 40), (40, 40)])
    settings = {"image_a": str(a), "image_b": str(b), key: value}
    with pytest.raises(ConfigValueError, match=f"^{key}={value!r} is invalid: expected"):
        SingleImageDataModule(**settings)  # length 8 < batch_size 16: no batch


def test_a_numeric_folder_name_is_a_path(tmp_path):
    """Hydra reads data.root=2024 as an integer: it still names the folder 2024."""
    dm = UnpairedDataModule(root=2024, dir_a=7, dir_b=8)
    assert (str(dm.dir_a), str(dm.dir_b)) == ("7", "8") and dm.hparams.root == "2024"


def test_a_wrong_data_setting_stops_the_entrypoint_naming_the_config_key(tmp_path):
    from helpers import TINY_ARGS, run_entrypoint

    res = run_entrypoint([*TINY_ARGS, "data.flip=maybe", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path,
                         env={"OMP_NUM_THREADS": "1"})
    assert res.returncode != 0
    assert "data.flip='maybe' is invalid: expected true or false" in res.stderr, res.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_evaluation_split_smaller_than_the_process_count_is_refused_in_setup(tmp_path):
    from types import SimpleNamespace

    root = folder_layout(tmp_path, {"trainA": 4, "trainB": 4, "testA": 3, "testB": 2})
    dm = unpaired(root, batch_size=1)
    dm.trainer = SimpleNamespace(world_size=3)  # what DDP over 3 processes attaches
    with pytest.raises(ValueError, match=f"2 evaluation image\\(s\\) in '{root / 'testB'}' .* for 3 processes"):
        dm.setup("fit")
    dm = unpaired(root, batch_size=1)
    dm.trainer = SimpleNamespace(world_size=2)
    dm.setup("fit")
    assert dm.num_eval_images() == (3, 2)
