"""Listing and decoding image files.

* :func:`list_images` walks a folder recursively and returns the image files sorted by their path relative to
  the folder. Symbolic links are followed, each real directory once (a link loop or a link back to a parent
  neither hangs the walk nor lists a file twice). Files with other extensions are skipped with a ``logging``
  warning (count and one example), never silently; so are folders that cannot be listed. A missing folder raises
  ``FileNotFoundError``; a folder without images raises ``ValueError``.
* :func:`load_image` decodes one file into a PIL image with the requested channel count. Every failure raises
  :class:`ImageFileError` (a ``ValueError``) naming the file: undecodable or truncated data, an unsupported mode,
  NaN or infinite values in a float image, and images with more than ``max_pixels`` pixels (default
  :data:`MAX_IMAGE_PIXELS`, Pillow's decompression-bomb limit; in training the ``data.max_image_pixels`` setting).

Channel conversion (:func:`convert_channels`):

* palette (``P``) images are expanded to RGB, or to RGBA when they carry a transparency entry; bilevel (``1``)
  images become 0 / 255;
* grayscale deeper than 8 bits (``I;16*``, ``I``, ``F``) becomes 8 bits by :func:`deep_gray_to_l` (Pillow's own
  conversion clips: a 32-bit image would come out white): each mode's conventional range when every value lies in
  it, else the image's own range (see that function for why);
* ``CMYK``, ``YCbCr`` and ``HSV`` are converted to RGB by Pillow;
* ``channels=1`` gives ``L``, ``channels=3`` gives ``RGB`` (grayscale is replicated to 3 channels): images with
  alpha (``RGBA``, ``LA``, ``PA``) are first alpha-composited **on a white background** (a transparent pixel
  becomes white, not the colour hidden under alpha 0);
* ``channels=4`` gives ``RGBA`` and **keeps** alpha as the fourth channel; images without alpha (a folder may mix
  modes) get a fully opaque alpha (255), grayscale is replicated to RGB.

EXIF orientation tags are applied (camera JPEGs come out upright).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# one-channel modes deeper than 8 bits -> (conventional low, high, integer values)
_DEEP_GRAY_MODES = {"I;16": (0, 65535, True), "I;16B": (0, 65535, True), "I;16L": (0, 65535, True),
                    "I;16N": (0, 65535, True), "I": (0, 65535, True), "F": (0.0, 1.0, False)}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
CHANNEL_CHOICES = (1, 3, 4)  # L, RGB, RGBA
MAX_IMAGE_PIXELS = 89_478_485  # Pillow's default decompression-bomb limit (about 9459 x 9459)
# modes convert_channels turns into L / RGB / RGBA
SUPPORTED_MODES = ("1", "L", "P", "RGB", "RGBA", "RGBX", "RGBa", "LA", "PA", "CMYK", "YCbCr", "HSV",
                   *_DEEP_GRAY_MODES)
# modes whose pixel values can make the loader refuse an image (a float NaN): the header check decodes these
VALUE_CHECKED_MODES = ("F",)


class ImageFileError(ValueError):
    """An image file that cannot be used; the message names the file and the reason."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name ends with one of :data:`IMAGE_EXTENSIONS` (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def list_images(folder: str | os.PathLike, max_images: int | None = None) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted by relative path, at most ``max_images`` of them.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        NotADirectoryError: ``folder`` is a file.
        ValueError: no image file under ``folder`` or ``max_images`` < 1.
    """
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"image folder '{root}' does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder '{root}' is not a directory")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive integer or None, got {max_images!r}")

    images: list[Path] = []
    skipped: list[Path] = []
    for dirpath, filenames in _walk_once(root):
        for name in filenames:
            path = Path(dirpath) / name
            (images if is_image_file(name) else skipped).append(path)
    if skipped:
        skipped.sort()
        logger.warning(
            "skipped %d non-image file(s) in '%s' (e.g. '%s'); accepted extensions: %s",
            len(skipped), root, skipped[0], ", ".join(IMAGE_EXTENSIONS),
        )
    if not images:
        raise ValueError(
            f"image folder '{root}' contains no image files (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
        )
    images.sort(key=lambda p: p.relative_to(root).as_posix())
    return images[:max_images] if max_images is not None else images


def convert_channels(image: Image.Image, channels: int) -> Image.Image:
    """Convert a PIL image of any common mode to ``L`` (``channels=1``), ``RGB`` (3) or ``RGBA`` (4)."""
    if channels not in CHANNEL_CHOICES:
        raise ValueError(f"channels must be one of {CHANNEL_CHOICES}, got {channels!r}")
    if image.mode not in SUPPORTED_MODES:
        raise ValueError(unsupported_mode(image.mode))
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in _DEEP_GRAY_MODES:
        image = deep_gray_to_l(image)
    if channels == 4:
        return image.convert("RGBA")  # alpha kept; opaque (255) when the image has none
    if image.mode in _ALPHA_MODES:
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image.convert("RGBA"))
    return image.convert("L" if channels == 1 else "RGB")


def deep_gray_to_l(image: Image.Image) -> Image.Image:
    """A grayscale image deeper than 8 bits (``I;16*``, ``I``: 32-bit integer, ``F``: 32-bit float) as ``L``.

    Rule: when every value lies in the mode's conventional range, that range maps to 0..255 (``I;16*`` and
    ``I``: 0..65535, in 256 equal bins, ``v // 256``; ``F``: 0.0..1.0, ``round(v * 255)``), so a dark image stays
    dark and the images of a folder keep their relative brightness. Otherwise the image's own range [min, max]
    maps to 0..255 (integers in 256 equal bins, floats rounded); an image holding a single value outside the
    conventional range saturates (0 below it, 255 above), so nothing divides by zero.

    Why: 16-bit files follow the 0..65535 convention, and older Pillow versions open 16-bit PNGs as ``I``, so
    ``I`` data within 16 bits is read as 16-bit data, exactly as ``I;16``; float images conventionally hold
    0..1 (NumPy, scikit-image, torchvision). 32-bit integer and float data beyond those ranges (a 32-bit TIFF of
    counts, a depth map, signed data) declares no range of its own: its actual range is the only one that keeps
    what the image shows (a gradient stays a gradient) instead of clipping it to white, as scaling it like
    16-bit data did. Refusing such files was the alternative; scaling keeps ``verify=header`` cheap (no decoding
    to decide) and in agreement with the loader. Limitation: 8-bit values stored as 32-bit integers read as
    16-bit data (nearly black): save such images as ``L``.

    Raises:
        ValueError: an ``F`` image with NaN or infinite values (they show no value).

    Returns an ``L`` image of the same size.
    """
    low, high, integer = _DEEP_GRAY_MODES[image.mode]
    values = np.asarray(image)  # (H, W) uint16 / int32 / float32
    values = values.astype(np.int64 if integer else np.float64)
    if not integer and not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise ValueError(f"mode 'F' (32-bit float) with {bad} NaN or infinite pixel value(s) of {values.size}: "
                         "they show no value; replace them with finite values")
    lo, hi = (values.min(), values.max()) if values.size else (low, high)
    if (lo < low or hi > high) and hi > lo:  # beyond the convention: the image's own range
        low, high = lo, hi
    if integer:
        levels = (np.clip(values, low, high) - low) * 256 // (high - low + 1)  # 256 equal bins
    else:
        levels = np.rint((np.clip(values, low, high) - low) * (255.0 / (high - low)))
    return Image.fromarray(levels.astype(np.uint8), mode="L")


def _walk_once(root: Path) -> Iterator[tuple[str, list[str]]]:
    """``os.walk(root, followlinks=True)`` that enters each real directory once (by device and inode), in sorted
    order; folders that cannot be listed are logged and skipped."""
    seen: set[tuple[int, int]] = set()

    def unreadable(err: OSError) -> None:
        logger.warning("cannot list '%s' (%s: %s); its images are skipped", err.filename, type(err).__name__,
                       err.strerror)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: already listed
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        yield dirpath, filenames


def unsupported_mode(mode: str) -> str:
    """Why an image mode is refused (see :data:`SUPPORTED_MODES`)."""
    return f"mode {mode!r} is not supported; supported modes: {', '.join(SUPPORTED_MODES)}"


def too_many_pixels(width: int, height: int, max_pixels: int | None) -> str:
    return (f"{width}x{height} = {width * height} pixels, more than the limit of {max_pixels} (data.max_image_pixels; "
            "Pillow's decompression-bomb guard)")


def bomb_reason(err: Exception, max_pixels: int | None) -> str:
    """Pillow's DecompressionBombError (raised while opening, before the size is known) in the words above."""
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = found.group(1) if found else "too many"
    return (f"{pixels} pixels, more than the limit of {max_pixels or Image.MAX_IMAGE_PIXELS} (data.max_image_pixels; "
            "Pillow's decompression-bomb guard)")


def load_image(path: str | os.PathLike, channels: int, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode ``path`` into a PIL image with ``channels`` (1, 3 or 4) channels (see :func:`convert_channels`).

    ``max_pixels``: refuse images with more pixels (read from the header, before decoding); None: no limit of
    cutlight's own (Pillow's ``Image.MAX_IMAGE_PIXELS`` still applies).

    Raises:
        FileNotFoundError: no file at ``path``.
        ImageFileError: the file cannot be used as an image (a ``ValueError``; the message names the file and the
            reason).
    """
    if channels not in CHANNEL_CHOICES:
        raise ValueError(f"channels must be one of {CHANNEL_CHOICES}, got {channels!r}")
    try:
        image = Image.open(path)
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as err:  # not an OSError: caught on its own
        raise ImageFileError(f"image file '{path}' is too large: {bomb_reason(err, max_pixels)}") from err
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for malformed files
        raise ImageFileError(f"cannot decode image file '{path}': {type(err).__name__}: {err}") from err
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise ImageFileError(f"image file '{path}' is too large: {too_many_pixels(width, height, max_pixels)}")
        if image.mode not in SUPPORTED_MODES:
            raise ImageFileError(f"image file '{path}': {unsupported_mode(image.mode)}")
        try:
            image.load()
            image = ImageOps.exif_transpose(image)
        except Exception as err:  # noqa: BLE001 - truncated data, bad EXIF, decoder errors, memory
            raise ImageFileError(f"cannot decode image file '{path}': {type(err).__name__}: {err}") from err
    try:
        return convert_channels(image, channels)
    except ValueError as err:  # values the conversion refuses (a float NaN)
        raise ImageFileError(f"image file '{path}': {err}") from err
