"""Built-in synthetic dataset "shapes": warm flat shapes on cream (A) -> cool rimmed shapes on navy (B), optionally
framed (``frame=True``, version 4).

The images (see :mod:`cutlight.data.shapes` for what they look like and for the translation score
:func:`shapes_score`) are generated deterministically from fixed seeds (torch + PIL only) on first use, as PNGs in
the standard layout ``trainA/ trainB/ testA/ testB/`` (and ``valA/ valB/`` with ``num_val > 0``: a validation split of
its own, for choosing a checkpoint on other images than the test ones) under
``<cache>/shapes-<size>px-<num_train>train[-<num_val>val]-<num_test>test-v<VERSION>`` (``v4``: the framed
variant) where ``<cache>`` is ``cache_dir``, else ``$CUTLIGHT_CACHE``, else ``~/.cache/cutlight/builtin``. Generation writes
to a temporary folder next to the target and renames it into place, so a folder that exists is complete; a
present folder is reused. Each image has its own seed, so the same (split, domain, index) is the same image for
any ``num_train`` / ``num_val`` / ``num_test``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image

from cutlight.data.shapes import pil_to_batch, random_layout, render, shapes_score

__all__ = ["builtin_root", "ensure_builtin_dataset", "generate_image", "score_domains",
           "shapes_score"]

logger = logging.getLogger(__name__)

NAME = "shapes"
VERSION = 3  # 2: non-overlapping larger shapes, B with a rim instead of stripes; 3: shapes larger still
FRAME_VERSION = 4  # version 3 with a frame around every image (``frame=True``; make train)
_SPLITS = {"train": 0, "test": 1, "val": 2}
_DOMAINS = {"A": 0, "B": 1}


def _seed(split: str, domain: str, index: int) -> int:
    return 7919 * 1_000_003 * (1 + 2 * _SPLITS[split] + _DOMAINS[domain]) + index


def generate_image(split: str, domain: str, index: int, size: int = 64, frame: bool = False) -> Image.Image:
    """The ``index``-th image of ``split`` ("train"/"val"/"test") and ``domain`` ("A"/"B"): an RGB ``size`` x ``size``
    (with the domain's frame when ``frame``)."""
    if split not in _SPLITS or domain not in _DOMAINS:
        raise ValueError(f"unknown split/domain {split!r}/{domain!r}; expected train|val|test and A|B")
    generator = torch.Generator().manual_seed(_seed(split, domain, index))
    return render(random_layout(generator, size, frame=frame), domain, size, frame=frame)


def builtin_root(size: int = 64, num_train: int = 400, num_test: int = 64, cache_dir: str | None = None,
                 num_val: int = 0, frame: bool = False) -> Path:
    """Folder that holds (or will hold) the dataset with these parameters."""
    base = cache_dir or os.environ.get("CUTLIGHT_CACHE") or Path.home() / ".cache" / "cutlight" / "builtin"
    val = f"-{num_val}val" if num_val else ""
    return Path(base).expanduser() / f"{NAME}-{size}px-{num_train}train{val}-{num_test}test-v{FRAME_VERSION if frame else VERSION}"


def ensure_builtin_dataset(
    size: int = 64, num_train: int = 400, num_test: int = 64, cache_dir: str | None = None, num_val: int = 0,
    frame: bool = False,
) -> Path:
    """Generate the dataset unless it is already there; returns its root (``trainA``, ``trainB``, ``testA``, ``testB``,
    and ``valA``, ``valB`` when ``num_val > 0``)."""
    for name, value, low in (("size", size, 16), ("num_train", num_train, 1), ("num_test", num_test, 0),
                             ("num_val", num_val, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    root = builtin_root(size, num_train, num_test, cache_dir, num_val, frame)
    if root.is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
            if count == 0:
                continue
            for domain in _DOMAINS:
                folder = tmp / f"{split}{domain}"
                folder.mkdir()
                for index in range(count):
                    generate_image(split, domain, index, size, frame).save(folder / f"{index:05d}.png", format="PNG")
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():  # not a concurrent writer that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generated built-in dataset '%s'", root)
    return root


def score_domains(size: int = 64, num: int = 64, frame: bool = False) -> dict[str, dict[str, float]]:
    """Reference :func:`shapes_score` numbers on the first ``num`` built-in test images (framed ones with ``frame``).

    Returns ``{"identity": ..., "real_b": ..., "oracle": ...}``: fake_b = real_a (the "before" number), fake_b =
    the unpaired real B test images, fake_b = the ideal translation (each A layout rendered in B's style).
    """
    layouts = [random_layout(torch.Generator().manual_seed(_seed("test", "A", i)), size, frame=frame)
               for i in range(num)]
    real_a = pil_to_batch([render(layout, "A", size, frame) for layout in layouts])  # (num, 3, size, size)
    oracle = pil_to_batch([render(layout, "B", size, frame) for layout in layouts])  # (num, 3, size, size)
    real_b = pil_to_batch([generate_image("test", "B", i, size, frame) for i in range(num)])  # (num, 3, size, size)
    return {
        "identity": shapes_score(real_a, real_a, frame),
        "real_b": shapes_score(real_a, real_b, frame),
        "oracle": shapes_score(real_a, oracle, frame),
    }
