"""Checking image files before training: every bad file is found at once, with its reason.

:func:`check_image` looks at one file cheaply (``verify="header"``): it must be a non-empty file Pillow
identifies, in a supported mode, with at most ``max_pixels`` pixels and large enough for the training crop
(``min_size``); PNG, JPEG, BMP and WebP files must also end where their format says they end (a file that does not end with
the PNG ``IEND`` chunk or the JPEG end-of-image marker, or is shorter than its BMP / RIFF header says, is decoded
in full to confirm, so a valid file with trailing data is never refused). Only the header and the last bytes are read.
``verify="full"`` decodes every image completely with :func:`~cutlight.data.folder.load_image`. Both agree with
the loader: an image is accepted exactly when ``load_image`` takes it (the header check decodes the few modes whose
pixel values can make the loader refuse, :data:`~cutlight.data.folder.VALUE_CHECKED_MODES`: float images with NaN).

:func:`check_images` runs the check over many files (threads: the work is file I/O) and returns the problems;
:class:`ImageCheckError` lists all of them in one message. :func:`mixed_sizes` finds two files of different sizes
from their headers (images that must share one size to be batched).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from cutlight.checks import check_choice
from cutlight.data.folder import (
    MAX_IMAGE_PIXELS,
    SUPPORTED_MODES,
    VALUE_CHECKED_MODES,
    bomb_reason,
    load_image,
    too_many_pixels,
    unsupported_mode,
)

VERIFY_CHOICES = ("header", "full", "none")
_PNG_END = b"IEND\xaeB`\x82"
MAX_LISTED = 200  # problems spelled out in an ImageCheckError message (all are in .problems)

# (width, height) after EXIF orientation -> why it is too small, or None
SizeRule = Callable[[int, int], "str | None"]


class ImageCheckError(ValueError):
    """Some image files cannot be used; ``problems`` is a list of ``(path, reason)``."""

    def __init__(self, problems: Sequence[tuple[Path, str]], total: int, verify: str) -> None:
        self.problems = list(problems)
        lines = [f"{len(self.problems)} of {total} image files cannot be used (data.verify={verify}); "
                 "fix or remove them:"]
        lines += [f"  {path}: {reason}" for path, reason in self.problems[:MAX_LISTED]]
        if len(self.problems) > MAX_LISTED:
            lines.append(f"  ... and {len(self.problems) - MAX_LISTED} more")
        super().__init__("\n".join(lines))


def _ends_properly(path: Path, fmt: str | None, size: int) -> bool:
    """Whether the file ends where its format says (True when the format has no such rule)."""
    with open(path, "rb") as f:
        if fmt == "BMP":
            f.seek(2)
            (declared,) = struct.unpack("<I", f.read(4))
            return size >= declared
        if fmt == "WEBP":
            f.seek(4)
            (declared,) = struct.unpack("<I", f.read(4))
            return size >= declared + 8
        if fmt not in ("PNG", "JPEG", "MPO"):
            return True
        f.seek(max(0, size - 64))
        tail = f.read()
    if fmt == "PNG":
        return tail.endswith(_PNG_END)
    return tail.rstrip(b"\x00").endswith(b"\xff\xd9")


def _rotated(image: Image.Image) -> bool:
    """Whether the EXIF orientation of an opened image turns it by 90 degrees, read where it sits in the header (a
    PNG's getexif() would decode the image)."""
    return image.format in ("JPEG", "MPO", "TIFF", "WEBP") and image.getexif().get(0x0112, 1) in (5, 6, 7, 8)


def header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of an image file as loaded (EXIF orientation applied), from its header alone; None when
    Pillow cannot read the header (:func:`check_image` says why)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            return (height, width) if _rotated(image) else (width, height)
    except Exception:  # noqa: BLE001 - Pillow raises many types for malformed files
        return None


def mixed_sizes(
    paths: Sequence[str | os.PathLike],
    resized: Callable[[int, int], tuple[int, int]] | None = None,
    workers: int = 8,
) -> tuple[tuple[Path, tuple[int, int]], tuple[Path, tuple[int, int]]] | None:
    """Two files of ``paths`` of different sizes, ``((first file, (w, h)), (the first that differs, (w, h)))``,
    or None when they all share one size. Sizes are read from the headers (:func:`header_size`) and compared after
    ``resized(width, height)`` (e.g. a preprocess's resize step); unreadable files are skipped (the file check
    reports them)."""
    if workers > 1 and len(paths) > 16:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            sizes = list(pool.map(header_size, paths, chunksize=32))
    else:
        sizes = [header_size(p) for p in paths]
    known = [(Path(p), resized(*size) if resized else size) for p, size in zip(paths, sizes) if size is not None]
    return next(((known[0], other) for other in known[1:] if other[1] != known[0][1]), None)


def _decode_reason(path: Path, max_pixels: int | None, min_size: SizeRule | None) -> str | None:
    """Why :func:`~cutlight.data.folder.load_image` refuses ``path`` (without the file name), or ``min_size``'s
    verdict on the decoded size."""
    try:
        image = load_image(path, 3, max_pixels)
    except (OSError, ValueError) as err:
        text = str(err)
        for named in (f" image file '{path}'", f"image file '{path}' ", f"image file '{path}': "):
            text = text.replace(named, "")
        return text
    return min_size(*image.size) if min_size is not None else None


def check_image(
    path: str | os.PathLike,
    verify: str = "header",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    min_size: SizeRule | None = None,
) -> str | None:
    """Why ``path`` cannot be used as an image, or None when it can (see the module docstring)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        return f"cannot read the file ({type(err).__name__}: {err.strerror or err})"
    if size == 0:
        return "empty file (0 bytes)"
    if verify == "full":
        return _decode_reason(path, max_pixels, min_size)
    try:
        with Image.open(path) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
            if mode not in SUPPORTED_MODES:
                return unsupported_mode(mode)
            if mode in VALUE_CHECKED_MODES:  # the loader looks at the values: so does the check
                return _decode_reason(path, max_pixels, min_size)
            if max_pixels is not None and width * height > max_pixels:
                return too_many_pixels(width, height, max_pixels)
            rotated = _rotated(image)
            if rotated:  # by 90 degrees
                width, height = height, width
        ended = _ends_properly(path, fmt, size)
    except Image.DecompressionBombError as err:
        return f"too large: {bomb_reason(err, max_pixels)}"
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for malformed files
        return f"not an image Pillow can read ({type(err).__name__}: {err})"
    if not ended:  # confirm by decoding: some writers append data after the end marker
        try:
            with Image.open(path) as image:
                image.load()
                ImageOps.exif_transpose(image)
        except Exception as err:  # noqa: BLE001
            return f"truncated or corrupt {fmt} data ({type(err).__name__}: {err}; file size {size} bytes)"
    small = min_size(width, height) if min_size is not None else None
    return f"{small} (EXIF orientation applied)" if small and rotated else small


def check_images(
    paths: Sequence[str | os.PathLike],
    verify: str = "header",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    min_size: SizeRule | None = None,
    workers: int = 8,
) -> list[tuple[Path, str]]:
    """``(path, reason)`` for each file of ``paths`` that :func:`check_image` refuses, in the order given."""
    check_choice("verify", verify, VERIFY_CHOICES)
    if verify == "none" or not paths:
        return []

    def one(p):
        return check_image(p, verify, max_pixels, min_size)

    if workers > 1 and len(paths) > 16:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            reasons = list(pool.map(one, paths, chunksize=32))
    else:
        reasons = [one(p) for p in paths]
    return [(Path(p), r) for p, r in zip(paths, reasons) if r is not None]
