"""Image transforms (torchvision.transforms.v2): PIL image -> (C, H, W) float32 tensor in [-1, 1].

``preprocess`` modes (the reference CUT implementation's names):

==================  ===============================================================================================
``resize_and_crop``  resize to ``load_size`` x ``load_size`` (bicubic), then random crop ``crop_size`` x ``crop_size``
``crop``             random crop ``crop_size`` x ``crop_size`` from the image at its own size
``scale_width``      resize width to ``load_size`` keeping the aspect ratio, then random crop ``crop_size``
``none``             keep the size, except that H and W are resized *down* to the nearest multiple of 4
                     (the generator downsamples twice by 2); images in a batch must then share one size
==================  ===============================================================================================

With ``flip=True`` a random horizontal flip (p = 0.5) follows. Randomness comes from torch's global RNG (that of
the DataLoader worker), so ``seed_everything`` makes it reproducible. Images smaller than the crop after the
resize raise ``ValueError`` naming the file, its size and the crop size (no silent upscaling or padding).
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

from cutlight.checks import ConfigValueError, check_choice, check_int
from cutlight.data.folder import CHANNEL_CHOICES

PREPROCESS_CHOICES = ("resize_and_crop", "crop", "scale_width", "none")
_CROPPING = ("resize_and_crop", "crop", "scale_width")


def to_normalized_tensor(channels: int) -> v2.Compose:
    """PIL image with ``channels`` channels -> plain (C, H, W) float32 tensor in [-1, 1]."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=[0.5] * channels, std=[0.5] * channels),
            v2.ToPureTensor(),
        ]
    )


def resize(image: Image.Image, width: int, height: int) -> Image.Image:
    """Bicubic (antialiased) resize to ``width`` x ``height``; a no-op when the size already matches."""
    if image.size == (width, height):
        return image
    return TF.resize(image, [height, width], interpolation=InterpolationMode.BICUBIC, antialias=True)


class TrainTransform:
    """Random training transform: resize per ``preprocess``, random crop, random flip, scale to [-1, 1].

    Args:
        preprocess: one of :data:`PREPROCESS_CHOICES`.
        load_size: resize target (side for ``resize_and_crop``, width for ``scale_width``).
        crop_size: side of the square random crop (unused for ``none``).
        flip: random horizontal flip with p = 0.5.
        channels: 1, 3 or 4 (L, RGB, RGBA); the input image must already have this many channels.

    Call: ``transform(image, path) -> (channels, H, W)`` float32 tensor in [-1, 1]; ``path`` only names the file
    in errors.
    """

    def __init__(self, preprocess: str, load_size: int, crop_size: int, flip: bool, channels: int) -> None:
        check_choice("preprocess", preprocess, PREPROCESS_CHOICES)
        if channels not in CHANNEL_CHOICES:
            raise ValueError(f"channels must be one of {CHANNEL_CHOICES}, got {channels!r}")
        for name, value in (("load_size", load_size), ("crop_size", crop_size)):
            check_int(name, value, low=1)
        if preprocess in ("resize_and_crop", "scale_width") and load_size < crop_size:
            raise ConfigValueError(
                "load_size", load_size, f"load_size >= crop_size ({crop_size}) for preprocess '{preprocess}': "
                f"load_size {load_size} is smaller than crop_size {crop_size}"
            )
        self.preprocess = preprocess
        self.load_size = load_size
        self.crop_size = crop_size
        self.channels = channels
        self.crop = v2.RandomCrop(crop_size) if preprocess in _CROPPING else None
        self.flip = v2.RandomHorizontalFlip(p=0.5) if flip else None
        self.to_tensor = to_normalized_tensor(channels)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) of an image of size ``width`` x ``height`` after the resize step (before the crop)."""
        if self.preprocess == "resize_and_crop":
            return self.load_size, self.load_size
        if self.preprocess == "scale_width":
            return self.load_size, max(1, round(height * self.load_size / width))
        if self.preprocess == "none":
            return width // 4 * 4, height // 4 * 4
        return width, height

    def check_size(self, width: int, height: int, path: str | None = None) -> tuple[int, int]:
        """(width, height) after the resize step; ``ValueError`` when that is smaller than the crop."""
        new_w, new_h = self.resized_size(width, height)
        need = self.crop_size if self.crop is not None else 4
        if new_w < need or new_h < need:
            what = f"crop_size {self.crop_size}" if self.crop is not None else "the minimum size 4"
            where = f"image '{path}' is " if path else ""
            raise ValueError(
                f"{where}{width}x{height} (WxH), {new_w}x{new_h} after preprocess "
                f"'{self.preprocess}' (load_size {self.load_size}), smaller than {what}"
            )
        return new_w, new_h

    def __call__(self, image: Image.Image, path: str = "<image>") -> torch.Tensor:
        width, height = self.check_size(*image.size, path=path)
        image = resize(image, width, height)
        if self.crop is not None:
            image = self.crop(image)
        if self.flip is not None:
            image = self.flip(image)
        return self.to_tensor(image)

    def __repr__(self) -> str:
        return (
            f"TrainTransform(preprocess={self.preprocess!r}, load_size={self.load_size}, crop_size={self.crop_size}, "
            f"flip={self.flip is not None}, channels={self.channels})"
        )


class EvalTransform:
    """Deterministic transform: bicubic resize to ``size`` x ``size`` (``size=None``: keep the image's size), scale
    to [-1, 1].

    Call: ``transform(image) -> (channels, size, size)`` (or (channels, H, W)) float32 tensor in [-1, 1].
    """

    def __init__(self, size: int | None, channels: int) -> None:
        check_int("size", size, low=1, optional=True)
        if channels not in CHANNEL_CHOICES:
            raise ValueError(f"channels must be one of {CHANNEL_CHOICES}, got {channels!r}")
        self.size = size
        self.channels = channels
        self.to_tensor = to_normalized_tensor(channels)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.to_tensor(image if self.size is None else resize(image, self.size, self.size))
