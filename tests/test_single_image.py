"""SinCUT data: zoom-and-patch sampling, the full test-time image, bad inputs, the built-in pair, import boundary."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms.v2.functional import pil_to_tensor

from cutlight.data.builtin_pair import HEIGHT, WIDTH, ensure_builtin_pair, pair_root, render_pair
from cutlight.data.single_image import (
    PatchParams,
    ZoomAndPatchDataset,
    draw_patch_params,
    load_full_image,
    zoomed_patch,
)
from helpers import K_LAYER, K_OP, assert_scaled_close


def save_image(path, width, height, mode="RGB", seed=0):
    g = torch.Generator().manual_seed(seed)
    channels = 1 if mode == "L" else 3
    pixels = torch.randint(0, 256, (height, width, channels), generator=g, dtype=torch.uint8)
    Image.fromarray(pixels.squeeze(-1).numpy() if channels == 1 else pixels.numpy(), mode).save(path)
    return path


@pytest.fixture
def pair(tmp_path):
    return save_image(tmp_path / "a.png", 150, 100, seed=1), save_image(tmp_path / "b.png", 90, 120, seed=2)


@pytest.mark.numeric
def test_patch_equals_resizing_the_whole_image_then_cropping():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 120, 170), dtype=torch.uint8)
    params = [draw_patch_params(120, 170, 32, 3.0, flip=False) for _ in range(6)]
    params.append(PatchParams(300, 200, 268, 0, False))  # upscaling (and at the bottom-left border)
    params.append(PatchParams(120, 170, 88, 138, True))  # no zoom, bottom-right corner, flipped
    for p in params:
        whole = F.interpolate(image[None].float(), size=(p.zoomed_height, p.zoomed_width), mode="bilinear",
                              antialias=True, align_corners=False)[0]  # (3, zh, zw)
        want = whole[:, p.top: p.top + 32, p.left: p.left + 32]
        want = want.flip(-1) if p.flip else want
        assert_scaled_close(zoomed_patch(image, p, 32), want, K_LAYER)  # one resampling on the 0..255 scale


def test_zoom_range_grid_and_flips():
    torch.manual_seed(0)
    h, w, crop = 1024, 1536, 64
    draws = [draw_patch_params(h, w, crop, 3.0, flip=True) for _ in range(2000)]
    zw = torch.tensor([p.zoomed_width for p in draws], dtype=torch.float64)
    zh = torch.tensor([p.zoomed_height for p in draws], dtype=torch.float64)
    for z, full in ((zw, w), (zh, h)):
        assert z.min() >= round(full / 3) and z.max() <= full  # zoom factors in [1/3, 1]
        assert z.min() < full / 3 * 1.05 and z.max() > full * 0.95  # ... covering the range
        assert abs(z.mean().item() / full - 2 / 3) < 0.02  # uniform: mean factor 2/3
    assert not torch.equal(zw, zh)  # one factor per axis
    assert all(0 <= p.top <= p.zoomed_height - crop and 0 <= p.left <= p.zoomed_width - crop for p in draws)
    assert abs(sum(p.flip for p in draws) / len(draws) - 0.5) < 0.05
    # no zoom on an image of whole cells: no room for an offset, patches are exactly the grid cells
    cells = [draw_patch_params(256, 384, 64, 1.0, flip=False) for _ in range(300)]
    assert {(p.top % 64, p.left % 64) for p in cells} == {(0, 0)}
    assert len({(p.top, p.left) for p in cells}) == 4 * 6  # every cell is drawn
    # one spare column: the grid's offset is 0 or 1
    assert {p.left % 64 for p in (draw_patch_params(64, 129, 64, 1.0, False) for _ in range(100))} == {0, 1}


def test_dataset_items_prescale_and_determinism(pair):
    path_a, path_b = pair
    ds = ZoomAndPatchDataset(path_a, path_b, load_size=200, crop_size=32, length=10)
    assert tuple(ds.image_a.shape) == (3, 200, 300) and tuple(ds.image_b.shape) == (3, 267, 200)  # short side 200
    assert ds.image_a.dtype == torch.uint8 and len(ds) == 10
    torch.manual_seed(0)
    item = ds[3]
    assert item["A"].shape == item["B"].shape == (3, 32, 32) and item["A"].dtype == torch.float32
    assert item["A"].min() >= -1 and item["A"].max() <= 1 and item["A_path"] == str(path_a)
    torch.manual_seed(0)
    again = ds[3]
    assert torch.equal(item["A"], again["A"]) and torch.equal(item["B"], again["B"])
    assert not torch.equal(ds[3]["A"], item["A"])  # a fresh draw per access
    torch.manual_seed(0)
    assert not torch.equal(ds[4]["A"], item["A"])  # DDP ranks (same RNG state, other indices) differ
    with pytest.raises(IndexError):
        ds[10]
    big = ZoomAndPatchDataset(path_a, path_b, load_size=50, crop_size=32)  # already large enough: kept
    assert tuple(big.image_a.shape) == (3, 100, 150)


def test_dataloader_workers_are_seeded_and_distinct(pair):
    ds = ZoomAndPatchDataset(*pair, load_size=100, crop_size=16, length=8)

    def run():
        torch.manual_seed(123)
        return torch.cat([b["A"] for b in DataLoader(ds, batch_size=2, num_workers=2)])

    first, second = run(), run()
    assert torch.equal(first, second)  # reproducible under the seed
    assert len({tuple(x.flatten()[:8].tolist()) for x in first}) == len(first)  # no two workers repeat draws


def test_small_image_with_small_load_size_is_stretched_to_the_crop(tmp_path):
    a = save_image(tmp_path / "a.png", 20, 12)
    ds = ZoomAndPatchDataset(a, a, load_size=8, crop_size=16, length=1)
    assert tuple(ds.image_a.shape) == (3, 12, 20)  # no pre-scale (short side >= load_size)
    torch.manual_seed(0)
    assert ds[0]["A"].shape == (3, 16, 16)  # the zoom step's max(crop, ...) upsamples the short axis


def test_bad_inputs_and_conversions(tmp_path, pair):
    path_a, path_b = pair
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ZoomAndPatchDataset(tmp_path / "missing.png", path_b)
    folder = tmp_path / "trainA"
    folder.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ZoomAndPatchDataset(folder, path_b)
    save_image(folder / "only.png", 40, 30)
    assert ZoomAndPatchDataset(folder, path_b, load_size=32, crop_size=16).path_a == folder / "only.png"
    save_image(folder / "second.png", 40, 30)
    with pytest.raises(ValueError, match="folder with 2 images"):
        ZoomAndPatchDataset(folder, path_b)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot decode"):
        ZoomAndPatchDataset(tmp_path / "broken.png", path_b)
    gray = save_image(tmp_path / "gray.png", 40, 30, mode="L")
    ds = ZoomAndPatchDataset(gray, path_b, load_size=32, crop_size=16)
    assert ds.image_a.shape[0] == 3 and torch.equal(ds.image_a[0], ds.image_a[2])  # replicated to RGB
    assert ZoomAndPatchDataset(path_a, gray, load_size=32, crop_size=16, output_nc=1).image_b.shape[0] == 1
    for kwargs, match in (({"random_scale_max": 0.5}, "random_scale_max"), ({"crop_size": 0}, "crop_size"),
                          ({"input_nc": 2}, "input_nc")):
        with pytest.raises(ValueError, match=match):
            ZoomAndPatchDataset(path_a, path_b, **kwargs)


@pytest.mark.numeric
def test_full_image_for_translation(tmp_path):
    path = save_image(tmp_path / "odd.png", 31, 20)
    x, (h, w) = load_full_image(path, size_multiple=2)
    assert x.shape == (1, 3, 20, 32) and (h, w) == (20, 31)
    assert torch.equal(x[..., 31], x[..., 30])  # replicated column
    raw = pil_to_tensor(Image.open(path)).float() / 127.5 - 1  # (3, 20, 31)
    assert_scaled_close(x[0, :, :, :31], raw, K_OP)
    y, size = load_full_image(path, size_multiple=4, mode="crop")
    assert y.shape == (1, 3, 20, 28) and size == (20, 28)
    with pytest.raises(ValueError, match="unknown mode"):
        load_full_image(path, mode="resize")


def test_builtin_pair_is_deterministic_cached_and_atomic(tmp_path):
    a, b = ensure_builtin_pair(tmp_path)
    assert a.parent.name == "trainA" and b.parent.name == "trainB" and a.parent.parent == pair_root(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [pair_root(tmp_path).name]  # no temporary folder left behind
    mtime = a.stat().st_mtime_ns
    assert ensure_builtin_pair(tmp_path) == (a, b) and a.stat().st_mtime_ns == mtime  # reused
    img_a, img_b = Image.open(a), Image.open(b)
    assert img_a.size == img_b.size == (WIDTH, HEIGHT) and img_a.mode == img_b.mode == "RGB"
    again_a, again_b = render_pair()
    assert again_a.tobytes() == img_a.tobytes() and again_b.tobytes() == img_b.tobytes()
    ta, tb = (pil_to_tensor(i).float() for i in (img_a, img_b))  # (3, H, W)
    assert (tb[0] - tb[2]).mean() > (ta[0] - ta[2]).mean() + 20  # B is warmer than A
    rough = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731
    assert rough(tb) > 2 * rough(ta)  # and has brush texture
    ds = ZoomAndPatchDataset(a.parent, b.parent, load_size=400, crop_size=64, length=4)  # the trainA/ trainB/ layout
    assert ds[0]["B"].shape == (3, 64, 64)


def test_core_modules_import_without_lightning():
    """The SinCUT core is plain PyTorch. ``cutlight.data``'s package ``__init__`` imports the DataModule
    (Lightning), so the data modules are checked with that ``__init__`` bypassed."""
    code = textwrap.dedent(
        """
        import sys, types, pathlib
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {'pytorch_lightning', 'lightning', 'hydra', 'omegaconf', 'wandb',
                                          'torchmetrics'}:
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import cutlight
        data = types.ModuleType('cutlight.data')
        data.__path__ = [str(pathlib.Path(cutlight.__file__).parent / 'data')]
        sys.modules['cutlight.data'] = data
        from cutlight.networks import StyleGAN2Generator, StyleGAN2Discriminator
        from cutlight.objectives import SinCUTObjective
        from cutlight.losses import r1_penalty
        from cutlight.data.single_image import ZoomAndPatchDataset, load_full_image
        from cutlight.data.builtin_pair import ensure_builtin_pair
        assert not any(m.split('.')[0] in {'pytorch_lightning', 'lightning', 'hydra'} for m in sys.modules)
        print('ok')
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
