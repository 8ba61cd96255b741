"""``debug=tiny`` fits every data module (issue 27.3): it composes from the packaged configs (``cutlight.conf``)
and instantiates the data module of ``data=builtin``, ``data=folder`` and ``data=single_image`` (SinCUT's), and
the networks of every method."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from cutlight.checks import ConfigValueError
from cutlight.data import SingleImageDataModule

CONF = Path(__file__).resolve().parents[1] / "conf"


def tiny_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module("cutlight.conf", version_base="1.3"):
        return compose("train", overrides=[*overrides, "debug=tiny"])


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "photo.png", tmp_path / "painting.png"
    Image.new("RGB", (48, 40), (200, 30, 30)).save(a)
    Image.new("RGB", (40, 48), (30, 30, 200)).save(b)
    return a, b


def test_every_data_config_has_every_data_key_debug_tiny_sets():
    tiny = OmegaConf.load(CONF / "debug" / "tiny.yaml").data
    for path in sorted((CONF / "data").glob("*.yaml")):
        missing = set(tiny) - set(OmegaConf.load(path))
        assert not missing, f"conf/data/{path.name} lacks {sorted(missing)}, which debug=tiny sets"


@pytest.mark.parametrize("group", ["builtin", "folder", "single_image"])
def test_debug_tiny_instantiates_the_data_module(tmp_path, pair, group):
    extra = {"builtin": [f"data.cache_dir={tmp_path}"], "folder": [f"data.root={tmp_path}"],
             "single_image": [f"data.image_a={pair[0]}", f"data.image_b={pair[1]}"]}[group]
    cfg = tiny_cfg([f"data={group}", *extra])
    dm = instantiate(cfg.data)
    assert type(dm).__name__ == cfg.data._target_.rsplit(".", 1)[1]
    assert (dm.hparams.crop_size, dm.hparams.max_dataset_size, dm.hparams.max_val_images) == (32, 8, 4)


@pytest.mark.parametrize("experiment", ["sincut_cpu", "sincut"])
def test_debug_tiny_fits_sincut(pair, experiment):
    """The issue's command: ``experiment=sincut_cpu debug=tiny data.image_a=... data.image_b=...`` failed with
    ``SingleImageDataModule.__init__() got an unexpected keyword argument 'max_dataset_size'``."""
    cfg = tiny_cfg([f"experiment={experiment}", f"data.image_a={pair[0]}", f"data.image_b={pair[1]}"])
    dm = instantiate(cfg.data)
    assert isinstance(dm, SingleImageDataModule)
    dm.setup("fit")
    batch = cfg.data.batch_size
    assert len(dm.train_dataset) == max(8, batch) and len(dm.train_dataset) % batch == 0  # 8 samples, whole batches
    assert dm.train_dataset[0]["A"].shape == (3, 32, 32)
    model = instantiate(cfg.model)  # the tiny widths fit SinCUT's StyleGAN2 networks too
    assert model.generator is not None


@pytest.mark.parametrize("experiment", ["builtin_cpu", "cyclegan_builtin_cpu"])
def test_debug_tiny_fits_the_other_methods_networks(tmp_path, experiment):
    cfg = tiny_cfg([f"experiment={experiment}", f"data.cache_dir={tmp_path}"])
    instantiate(cfg.model)
    assert instantiate(cfg.data).hparams.max_dataset_size == 8


# ------------------------------------------------------------------- max_dataset_size for one image
@pytest.mark.parametrize("length, batch_size, cap, expected", [
    (400, 4, 8, 8),        # 8 samples per epoch
    (400, 16, 8, 16),      # rounded up to one whole batch (the reference's loader stops after it)
    (400, 4, 10, 12),      # whole batches
    (10, 4, 50, 10),       # the cap above length: length
    (400, 4, None, 400),
])
def test_single_image_max_dataset_size_caps_the_samples_per_epoch(pair, length, batch_size, cap, expected):
    dm = SingleImageDataModule(str(pair[0]), str(pair[1]), load_size=32, crop_size=32, length=length,
                               batch_size=batch_size, num_workers=0, max_dataset_size=cap, max_val_images=1)
    dm.setup("fit")
    assert len(dm.train_dataset) == expected
    assert len(dm.train_dataloader()) == expected // batch_size
    assert len(dm.full_dataset_a) == len(dm.full_dataset_b) == 1  # one validation image per side, whatever the cap


@pytest.mark.parametrize("key, value", [("max_dataset_size", 0), ("max_dataset_size", "abc"),
                                        ("max_val_images", 0), ("max_val_images", 1.5)])
def test_single_image_caps_are_checked_naming_the_key(pair, key, value):
    with pytest.raises(ConfigValueError, match=f"^{key}={value!r} is invalid: expected an integer >= 1 or null"):
        SingleImageDataModule(str(pair[0]), str(pair[1]), **{key: value})
