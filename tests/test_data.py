"""Tests for cutlight.data: folders, transforms, datasets, the datamodule (direction, loaders, evaluation shards) and
the built-in dataset."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler

from cutlight.data import (
    BuiltinDataModule,
    SingleFolderDataset,
    UnpairedDataModule,
    UnpairedImageDataset,
    ensure_builtin_dataset,
    list_images,
    load_image,
    score_domains,
    shapes_score,
)
from cutlight.data.builtin import builtin_root, generate_image
from cutlight.data.datamodule import loader_settings
from cutlight.data.resumable import ResumableSampler
from cutlight.data.shapes import (
    A_PALETTE,
    B_PALETTE,
    RADIUS_RANGE,
    Shape,
    erode,
    foreground_mask,
    layout_displacement,
    pil_to_batch,
    random_layout,
    render,
    rim_width,
)


def save_gradient(path: Path, size=(32, 32), value: int = 0, mode: str = "RGB") -> Path:
    """An image whose left half has red = ``value`` and right half red = 255: flips are visible."""
    width, height = size
    image = Image.new("RGB", size, (value, 60, 120))
    image.paste((255, 60, 120), (width // 2, 0, width, height))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.convert(mode).save(path)
    return path


def make_folder(folder: Path, count: int, size=(32, 32), start: int = 0) -> list[Path]:
    return [save_gradient(folder / f"img{start + i:03d}.png", size, value=10 * (start + i)) for i in range(count)]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    make_folder(tmp_path / "trainA", 3)
    make_folder(tmp_path / "trainB", 5, start=10)
    make_folder(tmp_path / "testA", 5)
    make_folder(tmp_path / "testB", 2, start=10)
    return tmp_path


def small(**kwargs) -> dict:
    return dict(load_size=32, crop_size=32, preprocess="crop", **kwargs)


# ---------------------------------------------------------------- folders and decoding
def test_listing_is_recursive_sorted_case_insensitive_and_logs_skips(tmp_path, caplog):
    for name in ["b.PNG", "a.jpg", "sub/c.JpEg", "sub/deeper/d.webp", "e.bmp", "f.TIFF"]:
        save_gradient(tmp_path / name)
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "sub" / "labels.csv").write_text("x")
    with caplog.at_level(logging.WARNING, logger="cutlight.data.folder"):
        paths = list_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in paths]
    assert rel == ["a.jpg", "b.PNG", "e.bmp", "f.TIFF", "sub/c.JpEg", "sub/deeper/d.webp"]
    assert "skipped 2 non-image file(s)" in caplog.text and "notes.txt" in caplog.text
    assert [p.name for p in list_images(tmp_path, max_images=2)] == ["a.jpg", "b.PNG"]


def test_missing_and_empty_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no images")
    with pytest.raises(ValueError, match="empty"):
        list_images(tmp_path / "empty")
    make_folder(tmp_path / "a", 1)
    with pytest.raises(ValueError, match="empty"):
        UnpairedImageDataset(tmp_path / "a", tmp_path / "empty", **small())


def test_corrupt_image_names_the_file(tmp_path):
    make_folder(tmp_path / "A", 1)
    make_folder(tmp_path / "B", 1)
    (tmp_path / "A" / "zz_broken.png").write_bytes(b"\x89PNG not really a png at all")
    dataset = UnpairedImageDataset(tmp_path / "A", tmp_path / "B", serial_batches=True, **small())
    dataset[0]
    with pytest.raises(ValueError, match="zz_broken.png"):
        dataset[1]


def test_channel_conversion_grayscale_rgba_palette_16bit(tmp_path):
    gray = save_gradient(tmp_path / "g.png", value=0, mode="L")
    rgb = load_image(gray, 3)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0))[0] == rgb.getpixel((0, 0))[1] == rgb.getpixel((0, 0))[2]

    rgba = Image.new("RGBA", (8, 8), (200, 10, 10, 0))  # fully transparent red
    rgba.putpixel((0, 0), (200, 10, 10, 255))
    rgba.save(tmp_path / "t.png")
    out = load_image(tmp_path / "t.png", 3)
    assert out.getpixel((1, 1)) == (255, 255, 255)  # composited on white
    assert out.getpixel((0, 0)) == (200, 10, 10)

    palette = Image.new("RGB", (8, 8), (0, 128, 255)).quantize(colors=4)
    assert palette.mode == "P"
    palette.save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png", 3).getpixel((3, 3)) == (0, 128, 255)
    assert load_image(tmp_path / "p.png", 1).mode == "L"

    deep = Image.new("I;16", (8, 8), 32768)
    deep.save(tmp_path / "d.png")
    assert load_image(tmp_path / "d.png", 1).getpixel((0, 0)) == 128  # scaled, not clipped to 255

    make_folder(tmp_path / "B", 1)
    dataset = UnpairedImageDataset(tmp_path / "B", tmp_path / "B", input_nc=1, output_nc=3, **small())
    item = dataset[0]
    assert item["A"].shape == (1, 32, 32) and item["B"].shape == (3, 32, 32)


# ---------------------------------------------------------------- transforms
@pytest.mark.parametrize(
    "preprocess, size, load, crop, expected",
    [
        ("resize_and_crop", (40, 24), 32, 16, (16, 16)),
        ("crop", (40, 24), 99, 24, (24, 24)),
        ("scale_width", (48, 24), 40, 16, (16, 16)),
        ("none", (37, 22), 99, 99, (20, 36)),  # (H, W) down to multiples of 4
        ("none", (32, 24), 99, 99, (24, 32)),
    ],
)
def test_preprocess_modes_shapes_and_range(tmp_path, preprocess, size, load, crop, expected):
    make_folder(tmp_path / "A", 2, size=size)
    make_folder(tmp_path / "B", 1, size=size)
    dataset = UnpairedImageDataset(tmp_path / "A", tmp_path / "B", load_size=load, crop_size=crop,
                                   preprocess=preprocess, flip=False)
    item = dataset[1]
    for key in ("A", "B"):
        assert type(item[key]) is torch.Tensor and item[key].dtype == torch.float32
        assert item[key].shape == (3, *expected)
        assert item[key].min() >= -1 and item[key].max() <= 1
    if preprocess == "none":  # no crop: both halves are there; uint8 v -> v / 127.5 - 1
        assert item["A"][0, 0, 0].item() == pytest.approx(10 / 127.5 - 1) and item["A"][0, 0, -1].item() == 1
    assert item["A_path"].endswith("img001.png") and item["B_path"].endswith("img000.png")


def test_bad_preprocess_and_too_small_images(tmp_path):
    make_folder(tmp_path / "A", 1, size=(40, 20))
    make_folder(tmp_path / "B", 1, size=(40, 40))
    with pytest.raises(ValueError, match="'fancy'.*resize_and_crop, crop, scale_width, none"):
        UnpairedImageDataset(tmp_path / "A", tmp_path / "B", preprocess="fancy")
    with pytest.raises(ValueError, match="load_size 16 is smaller than crop_size 32"):
        UnpairedDataModule(dir_a=str(tmp_path / "A"), dir_b=str(tmp_path / "B"), load_size=16, crop_size=32)
    dataset = UnpairedImageDataset(tmp_path / "A", tmp_path / "B", crop_size=32, preprocess="crop")
    with pytest.raises(ValueError, match=r"img000.png' is 40x20.*smaller than crop_size 32"):
        dataset[0]
    dataset = UnpairedImageDataset(tmp_path / "A", tmp_path / "B", load_size=48, crop_size=32,
                                   preprocess="scale_width")
    with pytest.raises(ValueError, match=r"48x24 after preprocess 'scale_width'.*crop_size 32"):
        dataset[0]


def test_flip_is_random_and_reproducible_with_seed(tmp_path):
    make_folder(tmp_path / "A", 1)
    make_folder(tmp_path / "B", 1)
    dataset = UnpairedImageDataset(tmp_path / "A", tmp_path / "B", **small())

    def left_is_dark(seed):
        torch.manual_seed(seed)
        return [bool(dataset[0]["A"][0, 0, 0] < 0) for _ in range(16)]

    assert left_is_dark(3) == left_is_dark(3)
    assert set(left_is_dark(3)) == {True, False}
    no_flip = UnpairedImageDataset(tmp_path / "A", tmp_path / "B", flip=False, **small())
    assert all(no_flip[0]["A"][0, 0, 0] < 0 for _ in range(8))


# ---------------------------------------------------------------- datasets
def test_length_and_serial_versus_random_pairing(layout):
    serial = UnpairedImageDataset(layout / "trainA", layout / "trainB", serial_batches=True, **small())
    assert len(serial) == 5  # max(3, 5)
    assert [Path(serial[i]["A_path"]).name for i in range(5)] == [f"img00{i % 3}.png" for i in range(5)]
    assert [Path(serial[i]["B_path"]).name for i in range(5)] == [f"img0{10 + i}.png" for i in range(5)]

    randomized = UnpairedImageDataset(layout / "trainA", layout / "trainB", **small())

    def pairing(seed):
        torch.manual_seed(seed)
        return [randomized[i % 5]["B_path"] for i in range(40)]

    assert pairing(0) == pairing(0)
    assert pairing(0) != pairing(1)
    assert len(set(pairing(0))) == 5
    with pytest.raises(IndexError):
        randomized[5]


def test_random_pairing_reproducible_with_workers(layout):
    dm = UnpairedDataModule(root=str(layout), batch_size=2, num_workers=2, **small())
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers and isinstance(loader.sampler, ResumableSampler) and loader.drop_last
    assert loader.sampler.shuffle

    def epoch(seed):
        pl.seed_everything(seed, workers=True, verbose=False)
        return [(tuple(b["A_path"]), tuple(b["B_path"])) for b in dm.train_dataloader()]

    first = epoch(5)
    assert len(first) == 2  # 5 items, batch 2, drop_last
    assert first == epoch(5)


def test_single_folder_dataset_is_deterministic(tmp_path):
    make_folder(tmp_path, 3, size=(40, 24))
    dataset = SingleFolderDataset(tmp_path, size=16, channels=3)
    first, second = dataset[2], dataset[2]
    assert first["image"].shape == (3, 16, 16) and torch.equal(first["image"], second["image"])
    assert first["index"] == 2 and first["path"].endswith("img002.png")
    assert len(SingleFolderDataset(tmp_path, size=16, max_images=2)) == 2


# ---------------------------------------------------------------- datamodule
def test_datamodule_root_layout_and_val_loaders(layout):
    dm = UnpairedDataModule(root=str(layout), val_batch_size=2, **small())
    dm.setup("fit")
    assert len(dm.train_dataset) == 5 and len(dm.val_dataset_a) == 5 and len(dm.val_dataset_b) == 2
    loaders = dm.val_dataloader()
    assert len(loaders) == 2
    runs = [[(tuple(b["path"]), b["image"]) for b in loader] for loader in loaders]
    again = [[(tuple(b["path"]), b["image"]) for b in loader] for loader in dm.val_dataloader()]
    assert [len(r) for r in runs] == [3, 1]  # 5 A images in batches of 2, no drop_last
    for run, rerun in zip(runs, again, strict=True):
        for (paths, images), (paths2, images2) in zip(run, rerun, strict=True):
            assert paths == paths2 and torch.equal(images, images2)
    assert [Path(p).name for batch in runs[0] for p in batch[0]] == [f"img00{i}.png" for i in range(5)]
    limited = UnpairedDataModule(root=str(layout), max_val_images=1, **small())
    limited.setup()
    assert len(limited.val_dataset_a) == 1


def test_datamodule_explicit_dirs_missing_validation_and_errors(layout, tmp_path_factory):
    dm = UnpairedDataModule(dir_a=str(layout / "trainB"), dir_b=str(layout / "testB"), **small())
    dm.setup("fit")
    assert len(dm.train_dataset) == 5 and dm.val_dataloader() == []
    explicit_val = UnpairedDataModule(root=str(layout), val_dir_a=str(layout / "trainA"),
                                      val_dir_b=str(layout / "trainB"), **small())
    explicit_val.setup()
    assert len(explicit_val.val_dataset_a) == 3
    no_test = tmp_path_factory.mktemp("only_train")
    make_folder(no_test / "trainA", 2)
    make_folder(no_test / "trainB", 2)
    dm = UnpairedDataModule(root=str(no_test), **small())
    dm.setup()
    assert dm.val_dataloader() == [] and dm.val_dataset_a is None
    with pytest.raises(ValueError, match="root.*dir_a"):
        UnpairedDataModule()
    with pytest.raises(ValueError, match="dir_b=None"):
        UnpairedDataModule(dir_a=str(layout / "trainA"))
    with pytest.raises(FileNotFoundError, match="missing_val"):
        UnpairedDataModule(root=str(layout), val_dir_a=str(layout / "missing_val"), val_dir_b=str(layout),
                           **small()).setup()
    too_big = UnpairedDataModule(root=str(layout), batch_size=8, **small())
    too_big.setup()
    with pytest.raises(ValueError, match="fewer than batch_size 8"):
        too_big.train_dataloader()


def test_eval_loaders_use_lightnings_unrepeated_sampler_under_distributed(layout, tmp_path):
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    dm = UnpairedDataModule(root=str(layout), **small())
    dm.setup()
    assert not isinstance(dm.val_dataloader()[0].sampler, DistributedSampler)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        samplers = [loader.sampler for loader in [*dm.val_dataloader(), dm.test_dataloader()]]
    finally:
        dist.destroy_process_group()
    assert all(isinstance(s, UnrepeatedDistributedSampler) for s in samplers)
    assert list(samplers[0]) == list(range(5))


@pytest.mark.parametrize("length, world", [(10, 3), (7, 2), (6, 1)])
def test_lightnings_unrepeated_sampler_shards_strided_without_padding(length, world):
    """What the DDP FID/KID test relies on: rank r of W gets r, r + W, ... (KID sees rank 0's shard first), every
    index exactly once, and it is a DistributedSampler (so Lightning does not replace it with a padding one)."""
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    data = list(range(length))
    samplers = [UnrepeatedDistributedSampler(data, num_replicas=world, rank=r, shuffle=False) for r in range(world)]
    shards = [list(s) for s in samplers]
    for rank, (sampler, shard) in enumerate(zip(samplers, shards)):
        assert shard == list(range(rank, length, world)) and len(sampler) == len(shard)
        assert isinstance(sampler, DistributedSampler)
    assert sorted(i for shard in shards for i in shard) == data  # every index exactly once


def test_direction_btoa_swaps_domains_folders_and_channels(layout, tmp_path):
    make_folder(tmp_path / "heldA", 2, start=20)
    make_folder(tmp_path / "heldB", 3, start=30)
    dm = UnpairedDataModule(root=str(layout), direction="BtoA", input_nc=3, output_nc=1,
                            test_dir_a=str(tmp_path / "heldA"), test_dir_b=str(tmp_path / "heldB"), **small())
    assert (dm.input_nc, dm.output_nc) == (1, 3)  # source = domain B (output_nc channels), target = A
    assert dm.hparams.direction == "BtoA" and dm.hparams.input_nc == 3  # the arguments as given
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    assert all("/trainB/" in p for p in batch["A_path"]) and all("/trainA/" in p for p in batch["B_path"])
    assert batch["A"].shape[1] == 1 and batch["B"].shape[1] == 3
    assert [Path(p).parent.name for p in (dm.val_dataset_a.paths[0], dm.val_dataset_b.paths[0])] == ["testB", "testA"]
    assert dm.val_dataset_a[0]["image"].shape[0] == 1 and dm.val_dataset_b[0]["image"].shape[0] == 3
    test_a, test_b = dm.test_dataloader().dataset.datasets
    assert (test_a.root.name, len(test_a), test_b.root.name, len(test_b)) == ("heldB", 3, "heldA", 2)
    # one loader (issue 27.10: trainer.test printed two identical columns), batches never mixing the sides
    assert [(b["side"], b["image"].shape[:2]) for b in dm.test_dataloader()] == [(0, (3, 1)), (1, (2, 3))]
    assert dm.predict_dataset.root.name == "heldB"  # the held-out source images
    with pytest.raises(ValueError, match="unknown direction 'AB'; expected one of AtoB, BtoA"):
        UnpairedDataModule(root=str(layout), direction="AB")
    with pytest.raises(ValueError, match="test_dir_a and test_dir_b"):
        UnpairedDataModule(root=str(layout), test_dir_a=str(tmp_path / "heldA"))


def test_stages_build_what_they_need_and_predict_keeps_sizes(layout):
    make_folder(layout / "testA" / "sub", 1, size=(40, 24), start=7)  # another size, in a subfolder
    dm = UnpairedDataModule(root=str(layout), **small())
    dm.setup("test")
    assert dm.train_dataset is None and dm.test_dataset_a is dm.val_dataset_a  # no test split: the validation one
    dm.setup("predict")
    items = list(dm.predict_dataloader())
    assert len(items) == 6 and all(b["image"].shape[0] == 1 for b in items)
    assert {tuple(b["image"].shape[2:]) for b in items} == {(32, 32), (24, 40)}  # own sizes, (H, W)
    no_test = UnpairedDataModule(dir_a=str(layout / "trainA"), dir_b=str(layout / "trainB"), **small())
    no_test.setup()
    with pytest.raises(ValueError, match="no test images"):
        no_test.test_dataloader()
    with pytest.raises(RuntimeError, match="predict_dataset"):
        no_test.predict_dataloader()


def test_loader_settings_follow_the_machine(monkeypatch):
    import cutlight.data.datamodule as datamodule

    cpu = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    monkeypatch.setattr(datamodule, "suggested_max_num_workers", lambda devices: 1)  # 2 cores: 2 // 1 - 1
    assert loader_settings(cpu, None, None) == {"num_workers": 0, "persistent_workers": False, "pin_memory": False}
    monkeypatch.setattr(datamodule, "suggested_max_num_workers", lambda devices: 31)
    assert loader_settings(cpu, None, None) == {"num_workers": 8, "persistent_workers": True, "pin_memory": False}
    assert loader_settings(None, 2, True) == {"num_workers": 2, "persistent_workers": True, "pin_memory": True}


# ---------------------------------------------------------------- built-in dataset and metric
def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builtin_generation_is_deterministic_and_cached(tmp_path, monkeypatch):
    first = ensure_builtin_dataset(size=32, num_train=6, num_test=3, cache_dir=str(tmp_path / "one"))
    second = ensure_builtin_dataset(size=32, num_train=6, num_test=3, cache_dir=str(tmp_path / "two"))
    files = tree_bytes(first)
    assert sorted({Path(k).parent.as_posix() for k in files}) == ["testA", "testB", "trainA", "trainB"]
    assert len(files) == 18 and files == tree_bytes(second)
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temp folder left behind
    stamp = os.stat(first / "trainA" / "00000.png").st_mtime_ns
    assert ensure_builtin_dataset(size=32, num_train=6, num_test=3, cache_dir=str(tmp_path / "one")) == first
    assert os.stat(first / "trainA" / "00000.png").st_mtime_ns == stamp  # reused, not regenerated
    monkeypatch.setenv("CUTLIGHT_CACHE", str(tmp_path / "env"))
    assert builtin_root(size=32).parent == tmp_path / "env"
    a0, b0 = (Image.open(first / f"train{d}" / "00000.png") for d in "AB")
    assert a0.size == (32, 32) and a0.mode == "RGB" and a0.tobytes() != b0.tobytes()


def test_builtin_datamodule(tmp_path):
    dm = BuiltinDataModule(size=32, num_train=4, num_test=3, cache_dir=str(tmp_path), batch_size=2)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["A"].shape == (2, 3, 32, 32) and batch["B"].shape == (2, 3, 32, 32)
    assert [len(loader.dataset) for loader in dm.val_dataloader()] == [3, 3]


def test_shapes_score_properties():
    scores = score_domains(size=64, num=16)
    identity, real_b, oracle = scores["identity"], scores["real_b"], scores["oracle"]
    assert identity["content_iou"] > 0.99 and identity["style"] < 0.05 and identity["score"] < 0.05
    assert real_b["style_colour"] > 0.99 and real_b["style_texture"] > 0.9 and real_b["content_iou"] < 0.3
    assert oracle["content_iou"] > 0.99 and oracle["style"] > 0.95 and oracle["score"] > 0.95


def test_shapes_score_random_layout_flat_colours_and_blank():
    generator = torch.Generator().manual_seed(0)
    layouts = [random_layout(generator, 64) for _ in range(16)]
    real_a = pil_to_batch([render(layout, "A", 64) for layout in layouts])  # (16, 3, 64, 64)
    shuffled = pil_to_batch([render(layout, "B", 64) for layout in layouts[1:] + layouts[:1]])
    assert shapes_score(real_a, shuffled)["content_iou"] < 0.3
    assert shapes_score(real_a, torch.full_like(real_a, -1))["content_iou"] == 0  # black: all background
    # Recolouring A's shapes with B's flat colours on B's background: colour yes, texture no.
    flat = pil_to_batch([generate_image("test", "A", 0, 64)])
    mask = (flat - pil_to_batch([render([], "A", 64)])).abs().sum(1, keepdim=True) > 0.1  # (1, 1, 64, 64)
    recoloured = torch.where(mask, torch.tensor([38, 108, 226]).view(1, 3, 1, 1) / 127.5 - 1,
                             torch.tensor([16, 22, 36]).view(1, 3, 1, 1) / 127.5 - 1)
    result = shapes_score(flat, recoloured)
    assert result["content_iou"] > 0.99 and result["style_colour"] > 0.99 and result["style_texture"] < 0.05
    with pytest.raises(ValueError, match="equal shape"):
        shapes_score(real_a, real_a[:, :1])


def test_layouts_keep_shapes_inside_and_apart():
    generator = torch.Generator().manual_seed(0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(300):
        layout = random_layout(generator, 64)
        counts[len(layout)] += 1
        for s in layout:
            assert RADIUS_RANGE[0] * 64 <= s.radius <= RADIUS_RANGE[1] * 64
            assert s.radius + 1 <= min(s.cx, s.cy) and max(s.cx, s.cy) <= 63 - s.radius
        for i, s in enumerate(layout):
            for t in layout[i + 1:]:
                assert math.hypot(s.cx - t.cx, s.cy - t.cy) >= s.radius + t.radius + rim_width(64)
    assert min(counts.values()) >= 10  # every count occurs (3 large shapes fit about 1 time in 12)
    # separate shapes stay separate: the foreground of an A image has as many parts as the layout has shapes
    layout = next(lay for lay in (random_layout(generator, 64) for _ in range(100)) if len(lay) == 3)
    mask = foreground_mask(pil_to_batch([render(layout, "A", 64)]))[0]  # (64, 64)
    assert _components(mask) == 3


def _components(mask: torch.Tensor) -> int:
    """4-connected components of a (H, W) bool mask (a small flood fill)."""
    seen, count = torch.zeros_like(mask), 0
    h, w = mask.shape
    for y0, x0 in mask.nonzero().tolist():
        if seen[y0, x0]:
            continue
        count, stack = count + 1, [(y0, x0)]
        while stack:
            y, x = stack.pop()
            if 0 <= y < h and 0 <= x < w and mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return count


def test_b_style_is_a_fill_with_a_rim_of_rim_width():
    disc = Shape("disc", 32.0, 32.0, 14.0, 0.0, colour=0, jitter=(0, 0, 0))
    a, b = pil_to_batch([render([disc], "A", 64), render([disc], "B", 64)])  # (3, 64, 64) each
    to_rgb = lambda c: torch.tensor(c, dtype=torch.float32) / 127.5 - 1  # noqa: E731
    torch.testing.assert_close(a[:, 32, 32], to_rgb(A_PALETTE[0]))
    torch.testing.assert_close(b[:, 32, 32], to_rgb(B_PALETTE[0]))  # the fill inside
    rim = to_rgb(tuple(round(c + 0.5 * (255 - c)) for c in B_PALETTE[0]))
    w = rim_width(64)
    row = b[:, 32, 32:]  # (3, 32) from the centre to the right border
    inside = [x for x in range(32) if foreground_mask(b[None])[0, 32, 32 + x]]
    edge = max(inside)
    for x in range(edge - w + 1, edge + 1):
        torch.testing.assert_close(row[:, x], rim)
    torch.testing.assert_close(row[:, edge - w], to_rgb(B_PALETTE[0]))
    # erosion by a disc: the drawn disc (29 px across: radius 14.5) eroded by w is about a disc of radius 14.5 - w
    eroded = erode(foreground_mask(b[None]), w)[0]
    assert abs(eroded.sum().item() / (math.pi * (14.5 - w) ** 2) - 1) < 0.05


def test_shapes_score_texture_needs_rim_and_fill():
    layouts = [random_layout(torch.Generator().manual_seed(i), 64) for i in range(8)]
    real_a = pil_to_batch([render(layout, "A", 64) for layout in layouts])  # (8, 3, 64, 64)
    oracle = pil_to_batch([render(layout, "B", 64) for layout in layouts])
    mask = foreground_mask(oracle)[:, None]  # (8, 1, 64, 64)
    navy = oracle[:, :, :1, :1].expand_as(oracle)  # the B background everywhere
    tint = torch.tensor([round(c + 0.5 * (255 - c)) for c in B_PALETTE[0]], dtype=torch.float32)  # blue's rim
    rim_colour = (tint / 127.5 - 1).view(1, 3, 1, 1).expand_as(oracle)
    solid_rim = torch.where(mask, rim_colour, navy)
    assert shapes_score(real_a, oracle)["style_texture"] > 0.99
    scores = shapes_score(real_a, solid_rim)  # B colours, right silhouettes, but no fill: no texture
    assert scores["content_iou"] > 0.99 and scores["style_colour"] > 0.99 and scores["style_texture"] < 0.05


def test_layout_displacement_measures_shapes_moved_as_a_whole():
    """The diagnostic behind a low content_iou: 0 for shapes in place (any style), the offset for a layout
    drawn moved by whole pixels, NaN when the translation has no foreground."""
    layouts = [random_layout(torch.Generator().manual_seed(i), 64) for i in range(6)]
    real_a = pil_to_batch([render(layout, "A", 64) for layout in layouts])  # (6, 3, 64, 64)
    oracle = pil_to_batch([render(layout, "B", 64) for layout in layouts])
    moved = pil_to_batch([render([dataclasses.replace(s, cx=s.cx - 2, cy=s.cy + 1) for s in layout], "B", 64)
                          for layout in layouts])
    torch.testing.assert_close(layout_displacement(real_a, oracle), torch.zeros(6, 2), atol=0.05, rtol=0)
    offsets = layout_displacement(real_a, moved)  # per image up to ~0.4 px off: rasterisation, the 1 px margin
    torch.testing.assert_close(offsets, torch.tensor([[-2.0, 1.0]]).expand(6, 2), atol=0.5, rtol=0)
    torch.testing.assert_close(offsets.mean(0), torch.tensor([-2.0, 1.0]), atol=0.15, rtol=0)
    blank = pil_to_batch([render([], "B", 64)] * 6)
    assert layout_displacement(real_a, blank).isnan().all()


def test_framed_variant_draws_the_frame_keeps_shapes_off_it_and_scores_inside_it():
    """frame=True (data version 4, make train): a frame of each domain's colour along the border, shapes kept
    rim_width away from it, and the score measured on the picture inside it (references 0 / 1 as without)."""
    from cutlight.data.shapes import A_BACKGROUND, A_FRAME, B_FRAME, frame_width, inside_frame

    f, w = frame_width(64), rim_width(64)
    generator = torch.Generator().manual_seed(0)
    counts = {1: 0, 2: 0, 3: 0}
    for _ in range(600):
        layout = random_layout(generator, 64, frame=True)
        counts[len(layout)] += 1
        for s in layout:
            assert s.radius + f + w <= min(s.cx, s.cy) and max(s.cx, s.cy) <= 64 - f - w - s.radius
    assert counts[1] > counts[2] >= 60  # large shapes inside the frame: mostly one, sometimes two

    def rgb(colour):
        return torch.tensor(colour, dtype=torch.float32) / 127.5 - 1

    layout = random_layout(torch.Generator().manual_seed(1), 64, frame=True)
    for domain, colour in (("A", A_FRAME), ("B", B_FRAME)):
        image = pil_to_batch([render(layout, domain, 64, frame=True)])[0]  # (3, 64, 64)
        border = torch.ones(64, 64, dtype=torch.bool)
        border[f:-f, f:-f] = False
        torch.testing.assert_close(image[:, border], rgb(colour)[:, None].expand(3, int(border.sum())))
        assert not (image[:, f:-f, f:-f] == rgb(colour)[:, None, None]).all(0).any()  # the frame is f px wide
    torch.testing.assert_close(pil_to_batch([render(layout, "A", 64)])[0, :, 0, 0], rgb(A_BACKGROUND))  # no frame

    scores = score_domains(size=64, num=16, frame=True)
    assert scores["identity"]["content_iou"] == 1 and scores["identity"]["style"] == 0
    assert scores["oracle"]["score"] == 1 and scores["real_b"]["content_iou"] < 0.5
    real_a = pil_to_batch([generate_image("test", "A", i, 64, frame=True) for i in range(4)])
    from cutlight.data.builtin import _seed

    oracle = pil_to_batch([render(random_layout(torch.Generator().manual_seed(_seed("test", "A", i)), 64,
                                                frame=True), "B", 64, frame=True) for i in range(4)])
    unframed = oracle.clone()
    unframed[:, :, :f], unframed[:, :, -f:] = -1, -1  # the frame painted black: not content, not scored style
    assert shapes_score(real_a, unframed, frame=True) == shapes_score(real_a, oracle, frame=True)
    assert shapes_score(real_a, unframed, frame=False)["content_iou"] < 1  # scored without cropping, it would count
    torch.testing.assert_close(layout_displacement(real_a, oracle, frame=True), torch.zeros(4, 2), atol=0.05, rtol=0)
    assert inside_frame(real_a).shape[-1] == 64 - 2 * f
