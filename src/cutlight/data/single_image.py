"""Single-image translation data (SinCUT): random zoomed patches of one source and one target image.

Training samples follow the reference's ``zoom_and_patch`` preprocessing:

1. once, at construction: decode each image (:func:`~cutlight.data.folder.load_image`; grayscale is replicated to
   RGB for 3 channels, alpha composited on white, RGB turned to L for 1 channel) and, when its short side is below
   ``load_size``, scale it up (bicubic, aspect kept) so the short side is ``load_size``; kept in memory as uint8;
2. per sample and image: zoom factors (fx, fy) drawn independently and uniformly in [1 / random_scale_max, 1];
   the image is resized (bilinear, antialiased) to max(crop, round(W * fx)) x max(crop, round(H * fy)), so a
   crop covers up to ``random_scale_max`` times more of the scene per axis;
3. a ``crop_size`` patch from a grid of non-overlapping cells laid over the zoomed image with a random offset
   (uniform in what is left over by the whole cells), the cell drawn uniformly;
4. a horizontal flip with p = 0.5 (``flip``); values scaled to [-1, 1].

Only the patch is computed: its rows of the resize (the same antialiased bilinear weights as PIL and
``F.interpolate(..., antialias=True)``) applied to the few source pixels it covers, equal to resizing the whole
image and cropping (tested), at a small fraction of the cost.

Randomness: each item draws a seed from torch's global RNG (per DataLoader worker, seeded by PyTorch from the
main process) and adds its index; a private generator with that seed draws the item. So ``seed_everything`` makes
the samples reproducible for a given number of workers, workers never repeat each other, and DDP ranks, whose
global RNGs are seeded alike but whose ``DistributedSampler`` shards hold different indices, draw different
patches. A and B draw independently.

Edge cases: a path that is a folder is accepted when it holds exactly one image (the reference's
``trainA/one.png`` layout), else ``ValueError``; a missing path raises ``FileNotFoundError``; an image that cannot
be decoded raises ``ValueError``. An image smaller than the crop cannot fail: with ``load_size >= crop_size`` the
pre-scale makes both sides at least ``crop_size``, and otherwise the zoom step's max(crop, ...) stretches a short
axis up to ``crop_size``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from cutlight.data.folder import list_images, load_image
from cutlight.data.transforms import resize

__all__ = ["FullImageDataset", "PatchParams", "ZoomAndPatchDataset", "load_full_image", "resolve_image_path",
           "zoomed_patch"]


def resolve_image_path(path: str | os.PathLike) -> Path:
    """``path`` itself when it is a file; the one image inside when it is a folder holding exactly one image."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"image '{p}' does not exist")
    if p.is_dir():
        images = list_images(p)  # ValueError when there is none
        if len(images) != 1:
            raise ValueError(
                f"'{p}' is a folder with {len(images)} images (e.g. '{images[0].name}'); single-image translation "
                "needs an image file, or a folder holding exactly one image"
            )
        return images[0]
    return p


def prescale(image: Image.Image, load_size: int) -> Image.Image:
    """Scale up (bicubic) so the short side is ``load_size``; images already that large are kept as they are."""
    w, h = image.size
    short = min(w, h)
    if short >= load_size:
        return image
    f = load_size / short
    return resize(image, max(load_size, round(w * f)), max(load_size, round(h * f)))


@dataclass(frozen=True)
class PatchParams:
    """Where one training patch comes from: the zoomed image size and the patch's top-left corner in it."""

    zoomed_height: int
    zoomed_width: int
    top: int
    left: int
    flip: bool


def draw_patch_params(height: int, width: int, crop_size: int, random_scale_max: float, flip: bool,
                      generator: torch.Generator | None = None) -> PatchParams:
    """Draw zoom, grid offset, cell and flip for an image of ``height`` x ``width`` (from ``generator``, else from
    torch's global RNG)."""
    low = 1.0 / random_scale_max
    fx, fy = (low + (1.0 - low) * torch.rand(2, generator=generator, dtype=torch.float64)).tolist()
    zw, zh = max(crop_size, round(width * fx)), max(crop_size, round(height * fy))
    nw, nh = zw // crop_size, zh // crop_size  # whole cells per axis
    start_x = int(torch.randint(zw - nw * crop_size + 1, (), generator=generator))
    start_y = int(torch.randint(zh - nh * crop_size + 1, (), generator=generator))
    cell = int(torch.randint(nw * nh, (), generator=generator))
    ix, iy = cell // nh, cell % nh
    flipped = bool(torch.rand((), generator=generator) < 0.5) if flip else False
    return PatchParams(zh, zw, start_y + iy * crop_size, start_x + ix * crop_size, flipped)


def _resize_rows(in_size: int, out_size: int, start: int, count: int) -> tuple[torch.Tensor, int]:
    """Rows ``start .. start + count - 1`` of the antialiased bilinear resize matrix ``in_size -> out_size``
    (half-pixel centres; triangle filter widened by the downscale factor; PIL's and torch's antialias rule),
    restricted to the input pixels they touch. Returns (weights (count, n), index of the first input pixel)."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # filter radius in input pixels
    centre = (torch.arange(start, start + count, dtype=torch.float64) + 0.5) * scale  # (count,)
    lo = max(math.floor(centre[0].item() - support + 0.5), 0)
    hi = min(math.floor(centre[-1].item() + support + 0.5), in_size)
    src = torch.arange(lo, hi, dtype=torch.float64) + 0.5  # (n,) input pixel centres
    w = (1.0 - ((src[None, :] - centre[:, None]) / support).abs()).clamp(min=0.0)  # (count, n)
    return w / w.sum(1, keepdim=True), lo


def zoomed_patch(image: torch.Tensor, params: PatchParams, crop_size: int) -> torch.Tensor:
    """The patch of ``image`` (C, H, W) resized to (zoomed_height, zoomed_width) at (top, left), flipped if asked.

    Returns (C, crop_size, crop_size) float32 in the input's value range.
    """
    _, h, w = image.shape
    wy, y0 = _resize_rows(h, params.zoomed_height, params.top, crop_size)  # (crop, ny)
    wx, x0 = _resize_rows(w, params.zoomed_width, params.left, crop_size)  # (crop, nx)
    window = image[:, y0: y0 + wy.shape[1], x0: x0 + wx.shape[1]].float()  # (C, ny, nx)
    patch = wy.float() @ window @ wx.float().T  # (C, crop, crop)
    return patch.flip(-1) if params.flip else patch


class ZoomAndPatchDataset(Dataset):
    """SinCUT's training set: ``length`` random patch pairs from one A image and one B image.

    Args:
        image_a, image_b: image files (or folders holding exactly one image).
        load_size: short side the images are scaled up to, once, when smaller (1024 in the reference).
        crop_size: patch side (64).
        random_scale_max: zoom factors per axis are drawn in [1 / random_scale_max, 1] (3).
        flip: random horizontal flips (p = 0.5).
        length: samples per epoch (100,000 in the reference; ``__getitem__`` ignores the index beyond range
            checking: every sample is a fresh random draw).
        input_nc, output_nc: channels (1 or 3) of the A and the B image.

    ``dataset[i]``: ``{"A": (input_nc, crop, crop), "B": (output_nc, crop, crop)`` float32 in [-1, 1],
    ``"A_path": str, "B_path": str}``.
    """

    def __init__(
        self,
        image_a: str | os.PathLike,
        image_b: str | os.PathLike,
        load_size: int = 1024,
        crop_size: int = 64,
        random_scale_max: float = 3.0,
        flip: bool = True,
        length: int = 100_000,
        input_nc: int = 3,
        output_nc: int = 3,
    ) -> None:
        for name, value in (("load_size", load_size), ("crop_size", crop_size), ("length", length)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not random_scale_max >= 1.0:
            raise ValueError(f"random_scale_max must be >= 1 (zoom factors in [1/random_scale_max, 1]), "
                             f"got {random_scale_max!r}")
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc)):
            if value not in (1, 3):
                raise ValueError(f"{name} must be 1 or 3, got {value!r}")
        self.load_size, self.crop_size = load_size, crop_size
        self.random_scale_max, self.flip, self.length = float(random_scale_max), bool(flip), length
        self.path_a, self.path_b = resolve_image_path(image_a), resolve_image_path(image_b)
        self.image_a = TF.pil_to_tensor(prescale(load_image(self.path_a, input_nc), load_size))  # (C, H, W)
        self.image_b = TF.pil_to_tensor(prescale(load_image(self.path_b, output_nc), load_size))  # (C, H, W)

    def __len__(self) -> int:
        return self.length

    def sample(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One random training patch of ``image`` (C, H, W) uint8 -> (C, crop, crop) float32 in [-1, 1]."""
        params = draw_patch_params(image.shape[1], image.shape[2], self.crop_size, self.random_scale_max, self.flip,
                                   generator)
        return zoomed_patch(image, params, self.crop_size) / 127.5 - 1.0

    def __getitem__(self, index: int) -> dict:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        seed = int(torch.randint(2**62, (), dtype=torch.int64)) + index % self.length  # see the module docstring
        generator = torch.Generator().manual_seed(seed)
        return {"A": self.sample(self.image_a, generator), "B": self.sample(self.image_b, generator),
                "A_path": str(self.path_a), "B_path": str(self.path_b)}

    def __repr__(self) -> str:
        return (f"ZoomAndPatchDataset(A='{self.path_a}' {tuple(self.image_a.shape)}, B='{self.path_b}' "
                f"{tuple(self.image_b.shape)}, crop_size={self.crop_size}, random_scale_max={self.random_scale_max}, "
                f"flip={self.flip}, length={self.length})")


def load_full_image(
    path: str | os.PathLike, channels: int = 3, size_multiple: int = 2, mode: str = "pad"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """The whole image at its own resolution for test-time translation (the reference translates the full image).

    Args:
        path: image file (or folder holding exactly one image).
        channels: 1 or 3 (the generator's ``input_nc``).
        size_multiple: the generator's ``size_multiple``; H and W are brought to multiples of it.
        mode: ``pad`` (replicate the last row / column; crop the translation back with the returned size) or
            ``crop`` (drop the last rows / columns).

    Returns:
        ((1, channels, H', W') float32 in [-1, 1], (H, W)): the batch to translate and the size of the image content
        in it (translation[..., :H, :W] is the result).
    """
    if mode not in ("pad", "crop"):
        raise ValueError(f"unknown mode {mode!r}; expected one of pad, crop")
    if size_multiple < 1:
        raise ValueError(f"size_multiple must be >= 1, got {size_multiple}")
    x = TF.pil_to_tensor(load_image(resolve_image_path(path), channels)).float()[None] / 127.5 - 1.0  # (1, C, H, W)
    h, w = x.shape[-2:]
    if mode == "crop":
        h, w = h - h % size_multiple, w - w % size_multiple
        if h == 0 or w == 0:
            raise ValueError(f"image '{path}' is {x.shape[-1]}x{x.shape[-2]} (WxH), smaller than size_multiple "
                             f"{size_multiple}; use mode='pad'")
        return x[..., :h, :w], (h, w)
    pad_h, pad_w = -h % size_multiple, -w % size_multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
    return x, (h, w)


class FullImageDataset(Dataset):
    """Whole images at their own resolution, for SinCUT's validation and prediction (the reference translates the
    full test image): decoded once (``load_full_image``, no padding; the LightningModule pads to its generator's
    ``size_multiple`` and crops back).

    ``dataset[i]``: ``{"image": (channels, H_i, W_i)`` float32 in [-1, 1], ``"path": str, "index": int}``.
    """

    def __init__(self, paths: list[str | os.PathLike], channels: int = 3) -> None:
        self.paths = [resolve_image_path(p) for p in paths]
        self.images = [load_full_image(p, channels, size_multiple=1)[0][0] for p in self.paths]  # (C, H, W) each

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "path": str(self.paths[index]), "index": index}
