"""Built-in single-image pair for SinCUT: a rendered landscape "photo" (A) and a landscape "painting" (B).

Both are drawn procedurally (torch RNG + PIL, no download), 512 x 384 px:

* A: a daylight scene: blue sky gradient, pale sun, soft clouds, three mountain ranges (hazy blue-grey far, green
  near), a lake with light horizontal ripples, dark green conifers; flat colours, no texture.
* B: another scene from another seed (different ridge lines, sun, trees; the pair is unpaired, as in SinCUT)
  in a sunset palette (deep blue to orange sky, purple and rust hills, golden sun), covered in short oriented
  brush strokes whose colours are jittered samples of the underlying picture.

The translation A -> B should keep A's layout (ridges, lake, trees where they are) and take B's palette and
brush texture. Files are generated deterministically on first use under ``<cache>/sincut-pair-v1/`` with
``<cache>`` = ``cache_dir``, else ``$CUTLIGHT_CACHE``, else ``~/.cache/cutlight/builtin``, as
``trainA/landscape.png`` and ``trainB/painting.png``; generation writes to a temporary folder next to the target
and renames it into place, so a folder that exists is complete.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from PIL import Image, ImageDraw

__all__ = ["PAINTING", "PHOTO", "ensure_builtin_pair", "pair_root", "render_landscape", "render_pair"]

logger = logging.getLogger(__name__)

NAME, VERSION = "sincut-pair", 1
WIDTH, HEIGHT = 512, 384
SEED_A, SEED_B = 20_200_730, 20_200_731

# Colours of each scene element (RGB): sky top / horizon, sun, clouds, ranges far -> near, water, trees.
PHOTO = {"sky": ((62, 124, 198), (196, 220, 238)), "sun": (255, 246, 214), "cloud": (246, 247, 250),
         "ranges": ((128, 148, 172), (86, 122, 96), (52, 92, 48)), "water": (64, 108, 150), "tree": (28, 66, 34)}
PAINTING = {"sky": ((22, 28, 92), (236, 146, 64)), "sun": (255, 212, 64), "cloud": (250, 196, 120),
            "ranges": ((128, 72, 128), (186, 88, 52), (92, 46, 40)), "water": (38, 58, 122), "tree": (24, 36, 30)}


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen, dtype=torch.float64))


def _ridge(gen: torch.Generator, base: float, amplitude: float, width: int) -> list[float]:
    """Heights (one per column) of a ridge line: ``base`` plus a sum of 4 random sines of rising frequency."""
    waves = [(amplitude / 2**k, _uniform(gen, 1.0, 2.0) * 2**k, _uniform(gen, 0, 2 * math.pi)) for k in range(4)]
    return [base - sum(a * math.sin(2 * math.pi * f * x / width + p) for a, f, p in waves) for x in range(width)]


def _mix(c0: tuple[int, ...], c1: tuple[int, ...], t: float) -> tuple[int, ...]:
    return tuple(round(a + (b - a) * t) for a, b in zip(c0, c1))


def render_landscape(gen: torch.Generator, palette: dict, width: int = WIDTH, height: int = HEIGHT) -> Image.Image:
    """One landscape layout drawn from ``gen`` in ``palette`` (see :data:`PHOTO`, :data:`PAINTING`). RGB image."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    horizon = round(height * _uniform(gen, 0.55, 0.68))  # lake starts here
    for y in range(horizon):  # sky gradient
        draw.line([(0, y), (width, y)], fill=_mix(*palette["sky"], y / horizon))
    sx, sy, sr = _uniform(gen, 0.1, 0.9) * width, _uniform(gen, 0.12, 0.3) * height, _uniform(gen, 18, 34)
    draw.ellipse([sx - sr, sy - sr, sx + sr, sy + sr], fill=palette["sun"])
    for _ in range(3):  # clouds: clusters of overlapping ellipses
        cx, cy = _uniform(gen, 0, width), _uniform(gen, 0.08, 0.35) * height
        for _ in range(5):
            dx, dy, rx = _uniform(gen, -40, 40), _uniform(gen, -6, 6), _uniform(gen, 18, 36)
            draw.ellipse([cx + dx - rx, cy + dy - rx / 3, cx + dx + rx, cy + dy + rx / 3], fill=palette["cloud"])
    for i, colour in enumerate(palette["ranges"]):  # far to near, each lower on the picture
        base = horizon - (2 - i) * height * 0.09
        heights = _ridge(gen, base, height * (0.1 - 0.02 * i), width)
        draw.polygon([(0, horizon), *[(x, y) for x, y in enumerate(heights)], (width - 1, horizon)], fill=colour)
    draw.rectangle([0, horizon, width, height], fill=palette["water"])
    ripple = _mix(palette["water"], palette["sky"][1], 0.45)
    for _ in range(40):  # ripples on the lake
        y, x, length = _uniform(gen, horizon + 3, height), _uniform(gen, 0, width), _uniform(gen, 10, 60)
        draw.line([(x, y), (x + length, y)], fill=ripple, width=1)
    for _ in range(round(_uniform(gen, 4, 9))):  # conifers standing on the shore
        tx, th = _uniform(gen, 0, width), _uniform(gen, 30, 70)
        draw.polygon([(tx, horizon - th), (tx - th / 4, horizon + 2), (tx + th / 4, horizon + 2)], fill=palette["tree"])
    return image


def brush_strokes(image: Image.Image, gen: torch.Generator, count: int = 9000) -> Image.Image:
    """Paint ``count`` short strokes over ``image``: each takes the colour under its centre, jittered, and follows a
    smooth swirling direction field (a "painting" texture)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = image.size
    xy = torch.rand(count, 2, generator=gen, dtype=torch.float64) * torch.tensor([w - 1, h - 1])  # (count, 2)
    jitter = torch.randint(-22, 23, (count, 3), generator=gen)  # (count, 3)
    lengths = 4 + 8 * torch.rand(count, generator=gen, dtype=torch.float64)  # (count,)
    for (x, y), dc, length in zip(xy.tolist(), jitter.tolist(), lengths.tolist()):
        angle = math.sin(x / 47.0) + math.cos(y / 31.0) + 0.6 * math.sin((x + y) / 83.0)
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        colour = tuple(min(255, max(0, c + d)) for c, d in zip(image.getpixel((int(x), int(y))), dc))
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour, width=3)
    return out


def render_pair() -> tuple[Image.Image, Image.Image]:
    """(A, B): the landscape photo and the painting of another landscape (deterministic)."""
    image_a = render_landscape(torch.Generator().manual_seed(SEED_A), PHOTO)
    gen_b = torch.Generator().manual_seed(SEED_B)
    return image_a, brush_strokes(render_landscape(gen_b, PAINTING), gen_b)


def pair_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Folder that holds (or will hold) ``trainA/landscape.png`` and ``trainB/painting.png``."""
    base = cache_dir or os.environ.get("CUTLIGHT_CACHE") or Path.home() / ".cache" / "cutlight" / "builtin"
    return Path(base).expanduser() / f"{NAME}-v{VERSION}"


def ensure_builtin_pair(cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Generate the pair unless present; returns (path of A, path of B)."""
    root = pair_root(cache_dir)
    paths = root / "trainA" / "landscape.png", root / "trainB" / "painting.png"
    if root.is_dir():
        return paths
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for image, path in zip(render_pair(), paths):
            target = tmp / path.relative_to(root)
            target.parent.mkdir()
            image.save(target, format="PNG")
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():  # not a concurrent writer that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("generated built-in SinCUT pair '%s'", root)
    return paths
