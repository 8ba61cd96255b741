"""The "shapes" world of the built-in dataset: layouts, rendering in either domain, and a translation score.

Domain A: 1-3 flat shapes (disc, square, triangle; rotated, any size from 12% to 24% of the side as radius) in
warm colours (red, orange, amber, crimson) on a light cream background. Domain B: the same kinds of shapes in
cool colours (blue, teal, green, indigo) filled with horizontal stripes (every other band of ``period / 2`` rows
at half brightness, ``period = max(4, size // 16)``) on a dark navy background. A and B images are drawn from
independent random layouts (unpaired). The ideal translation keeps every shape where it is and changes
background, colour and texture; :func:`render` with ``domain="B"`` on an A layout produces it (the "oracle").

Translation score (:func:`shapes_score`), on batches ``real_a``, ``fake_b`` of shape (N, 3, H, W) in [-1, 1].
Colours are compared in [0, 1] RGB with the Euclidean distance. All numbers are in [0, 1], higher is better:

* ``content_iou``: per image, IoU between the foreground of ``real_a`` and the foreground of ``fake_b``, then
  averaged. A pixel is *foreground* when its colour is farther than ``0.2`` from **both** backgrounds (A's cream
  and B's navy), so the rule does not depend on which domain the image looks like: the identity scores ~1, the
  oracle ~1, a B image with another layout scores low (chance overlap), a blank output scores 0.
* ``style_colour``: fraction of pixels whose nearest reference colour (A's background and palette vs. B's
  background, palette and dark stripe colours) belongs to B. Identity ~0, real B ~1.
* ``style_texture``: fraction of foreground pixels showing stripe contrast: the mean absolute difference
  over channels between the pixel and the one ``period / 2`` rows below (both foreground) exceeds ``0.08``.
  Phase-invariant. Flat shapes (identity) ~0, real B ~1 (less only at shape borders).
* ``style``: mean of ``style_colour`` and ``style_texture``.
* ``score``: per image ``content_iou * style``, averaged: high only when the layout is kept *and* the style is B's.

Reference numbers (64 px, the 64 built-in test images): identity (fake_b = real_a) content 1.00, style 0.01,
score 0.01; real B images with their own (unrelated) layouts content 0.09, style 1.00, score 0.09; the oracle
translation 1.00 / 1.00 / 1.00. :func:`cutlight.data.builtin.score_domains` gives the reference numbers on the built-in test split: ``identity`` (fake_b = real_a, the
"before training" number), ``real_b`` (unpaired real B images as fake_b) and ``oracle`` (the ideal translation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw

A_BACKGROUND = (236, 228, 212)
A_PALETTE = ((214, 46, 38), (242, 126, 22), (226, 170, 24), (172, 28, 76))
B_BACKGROUND = (16, 22, 36)
B_PALETTE = ((38, 108, 226), (18, 164, 160), (62, 184, 70), (104, 88, 222))
STRIPE_DARKNESS = 0.5  # dark bands are this fraction of the shape colour
SHAPE_KINDS = ("disc", "square", "triangle")
FOREGROUND_THRESHOLD = 0.2
TEXTURE_THRESHOLD = 0.08


@dataclass(frozen=True)
class Shape:
    """One shape, in pixels: centre (cx, cy), circumradius, rotation in radians, palette index, colour jitter."""

    kind: str
    cx: float
    cy: float
    radius: float
    angle: float
    colour: int
    jitter: tuple[int, int, int]


def stripe_period(size: int) -> int:
    """Stripe period in rows for images of height ``size`` (bands of ``period // 2`` rows)."""
    return max(4, size // 16)


def random_layout(generator: torch.Generator, size: int) -> list[Shape]:
    """1-3 random shapes for a ``size`` x ``size`` canvas, drawn with ``generator``."""

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    def integer(high: int) -> int:
        return int(torch.randint(high, (), generator=generator))

    shapes = []
    for _ in range(1 + integer(3)):
        radius = uniform(0.12, 0.24) * size
        shapes.append(
            Shape(
                kind=SHAPE_KINDS[integer(len(SHAPE_KINDS))],
                cx=uniform(0.6 * radius, size - 0.6 * radius),
                cy=uniform(0.6 * radius, size - 0.6 * radius),
                radius=radius,
                angle=uniform(0.0, 2 * math.pi),
                colour=integer(len(A_PALETTE)),
                jitter=tuple(integer(25) - 12 for _ in range(3)),
            )
        )
    return shapes


def _mask(shape: Shape, size: int) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    if shape.kind == "disc":
        r = shape.radius
        draw.ellipse((shape.cx - r, shape.cy - r, shape.cx + r, shape.cy + r), fill=255)
    else:
        corners = 4 if shape.kind == "square" else 3
        points = [
            (shape.cx + shape.radius * math.cos(shape.angle + 2 * math.pi * k / corners),
             shape.cy + shape.radius * math.sin(shape.angle + 2 * math.pi * k / corners))
            for k in range(corners)
        ]
        draw.polygon(points, fill=255)
    return mask


def _jittered(colour: tuple[int, int, int], jitter: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(min(255, max(0, c + j)) for c, j in zip(colour, jitter, strict=True))


def render(layout: list[Shape], domain: str, size: int) -> Image.Image:
    """Draw ``layout`` as a ``size`` x ``size`` RGB image in the style of ``domain`` ("A" or "B")."""
    if domain not in ("A", "B"):
        raise ValueError(f"unknown domain {domain!r}; expected 'A' or 'B'")
    image = Image.new("RGB", (size, size), A_BACKGROUND if domain == "A" else B_BACKGROUND)
    half = stripe_period(size) // 2
    for shape in layout:
        if domain == "A":
            fill = Image.new("RGB", (size, size), _jittered(A_PALETTE[shape.colour], shape.jitter))
        else:
            colour = _jittered(B_PALETTE[shape.colour], shape.jitter)
            fill = Image.new("RGB", (size, size), colour)
            dark = tuple(round(c * STRIPE_DARKNESS) for c in colour)
            draw = ImageDraw.Draw(fill)
            for top in range(half, size, 2 * half):
                draw.rectangle((0, top, size - 1, top + half - 1), fill=dark)
        image.paste(fill, mask=_mask(shape, size))
    return image


def _reference_colours(colours: list[tuple[int, int, int]]) -> torch.Tensor:
    return torch.tensor(colours, dtype=torch.float32) / 255.0  # (K, 3)


def foreground_mask(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) bool: colour farther than the threshold from both backgrounds."""
    rgb = (images.float() + 1) / 2  # (N, 3, H, W) in [0, 1]
    backgrounds = _reference_colours([A_BACKGROUND, B_BACKGROUND])  # (2, 3)
    dist = torch.linalg.vector_norm(rgb[:, None] - backgrounds[None, :, :, None, None], dim=2)  # (N, 2, H, W)
    return dist.amin(dim=1) > FOREGROUND_THRESHOLD


def shapes_score(real_a: torch.Tensor, fake_b: torch.Tensor) -> dict[str, float]:
    """Score a translation of built-in A images; see the module docstring for the definitions.

    Args:
        real_a: (N, 3, H, W) in [-1, 1], domain A images.
        fake_b: (N, 3, H, W) in [-1, 1], their translations.

    Returns: ``{"content_iou", "style_colour", "style_texture", "style", "score"}``, floats in [0, 1], higher
    is better, averaged over the N images.
    """
    if real_a.shape != fake_b.shape or real_a.ndim != 4 or real_a.shape[1] != 3:
        raise ValueError(
            f"expected real_a and fake_b of equal shape (N, 3, H, W); got {tuple(real_a.shape)} and {tuple(fake_b.shape)}"
        )
    fake_b = fake_b.detach().float().cpu()
    mask_a, mask_b = foreground_mask(real_a.detach().cpu()), foreground_mask(fake_b)  # (N, H, W)
    inter = (mask_a & mask_b).flatten(1).sum(1)  # (N,)
    union = (mask_a | mask_b).flatten(1).sum(1)  # (N,)
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float32))

    rgb = (fake_b + 1) / 2  # (N, 3, H, W)
    dark = [tuple(round(c * STRIPE_DARKNESS) for c in colour) for colour in B_PALETTE]
    refs_a = _reference_colours([A_BACKGROUND, *A_PALETTE])  # (Ka, 3)
    refs = torch.cat([refs_a, _reference_colours([B_BACKGROUND, *B_PALETTE, *dark])])  # (K, 3)
    dist = torch.linalg.vector_norm(rgb[:, None] - refs[None, :, :, None, None], dim=2)  # (N, K, H, W)
    colour = (dist.argmin(dim=1) >= len(refs_a)).float().flatten(1).mean(1)  # (N,)

    half = stripe_period(fake_b.shape[2]) // 2
    contrast = (rgb[:, :, half:] - rgb[:, :, :-half]).abs().mean(dim=1)  # (N, H - half, W)
    valid = mask_b[:, half:] & mask_b[:, :-half]  # (N, H - half, W)
    striped = ((contrast > TEXTURE_THRESHOLD) & valid).flatten(1).sum(1)  # (N,)
    texture = striped / valid.flatten(1).sum(1).clamp(min=1)  # (N,)

    style = 0.5 * (colour + texture)  # (N,)
    return {
        "content_iou": iou.mean().item(),
        "style_colour": colour.mean().item(),
        "style_texture": texture.mean().item(),
        "style": style.mean().item(),
        "score": (iou * style).mean().item(),
    }


def pil_to_batch(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> (N, 3, H, W) float32 in [-1, 1]."""
    data = [torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8) for im in images]
    width, height = images[0].size
    batch = torch.stack(data).view(len(images), height, width, 3).permute(0, 3, 1, 2)  # (N, 3, H, W)
    return batch.float() / 127.5 - 1
