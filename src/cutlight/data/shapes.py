"""The "shapes" world of the built-in dataset: layouts, rendering in either domain, and a translation score.

Domain A: 1-3 flat shapes (disc, square, triangle; rotated, circumradius 18% to 28% of the side, apart from each
other; see :func:`random_layout`) in warm colours (red, orange, amber, crimson) on a light cream background.
Domain B: the same kinds of shapes in cool colours (blue, teal, green, indigo), each with a light rim (a tint of
its colour, ``rim_width(size)`` pixels wide along the inside of its outline: 3 px at 64 px) on a dark navy
background. A and B images are drawn from independent random layouts (unpaired). The ideal translation keeps
every shape where it is and changes background, colour and texture (fill + rim); :func:`render` with
``domain="B"`` on an A layout produces it (the "oracle").

The framed variant (``frame=True`` throughout this module; the built-in dataset's version 4, ``make train``'s data)
adds a frame along the border of every image: brown in A, light blue in B, ``frame_width(size)`` pixels wide (2 at
64 px); the shapes keep ``rim_width`` pixels away from it, so they are mostly one per image, sometimes two.

Why a rim and not, say, stripes at fixed rows: a rim is a function of the shape's outline, which a convolutional
generator sees within a few pixels, so the target style can be produced from the input image alone. Stripes at
fixed image rows (this dataset's version 1) cannot: inside a flat shape nothing tells a convolution which row it
is on, so the generator had to derive the stripes' phase from distant edges; on 64 px images the small CUT
networks learned that only after ~2000 iterations and lost the shapes' outlines while doing so (see
``benchmarks/README.md``).

Why a frame: without it, many short runs drew the whole layout of G(A) moved by 1-3 px, in a random
direction per run. Nothing in CUT's objective holds the layout in place on flat shapes: PatchNCE's layer 0 (the
pixels) barely changes when flat areas move, and the encoder's deeper layers learn to describe B-looking images
at the same offset. The discriminator cannot see a moved layout either, as long as nothing in B sits at a fixed
place. The frame does: every B image has it exactly along the border, where the discriminator's zero padding
shows where the border is, so a translation whose frame is moved looks fake; and since G moves everything it
draws by the same offset, keeping the frame in place keeps the shapes in place (measured in
``benchmarks/README.md``, "make train"). Photographs have no such need: their texture anchors PatchNCE.

Translation score (:func:`shapes_score`), on batches ``real_a``, ``fake_b`` of shape (N, 3, H, W) in [-1, 1]; with
``frame=True`` on the picture inside the frame (:func:`inside_frame`; the frame is neither content nor scored
style). Colours are compared in [0, 1] RGB with the Euclidean distance. All numbers are in [0, 1], higher is
better:

* ``content_iou``: per image, IoU between the foreground of ``real_a`` and the foreground of ``fake_b``, then
  averaged. A pixel is *foreground* when its colour is farther than ``0.2`` from **both** backgrounds (A's cream
  and B's navy), so the rule does not depend on which domain the image looks like: the identity scores 1, the
  oracle 1, a B image with another layout scores low (chance overlap), a blank output scores 0.
* ``style_colour``: fraction of pixels whose nearest reference colour (A's background and palette vs. B's
  background, palette and rim colours) belongs to B. Identity 0, real B 1.
* ``style_texture``: B's fill-and-rim pattern on ``fake_b``'s own foreground: the *band* is the foreground
  within ``rim_width`` pixels of the background, the *interior* the rest; ``sqrt(rim * fill)`` where ``rim`` is
  the fraction of band pixels nearest to a rim colour and ``fill`` the fraction of interior pixels nearest to a
  B palette colour (1 when there is no interior). Flat shapes of any palette score 0 (no rim), so do solid
  rim-coloured shapes (no fill); real B 1.
* ``style``: mean of ``style_colour`` and ``style_texture``.
* ``score``: per image ``content_iou * style``, averaged: high only when the layout is kept *and* the style is B's.

Reference numbers (64 px, the 64 built-in test images, :func:`cutlight.data.builtin.score_domains`): identity
(fake_b = real_a, "no translation") content 1.000, style 0.000, score 0.000; real B images with their own
(unrelated) layouts content 0.184, style 1.000, score 0.184 (framed: 0.271, the shapes are bigger for the space
and overlap more by chance); the oracle translation 1.000 / 1.000 / 1.000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

A_BACKGROUND = (236, 228, 212)
A_PALETTE = ((214, 46, 38), (242, 126, 22), (226, 170, 24), (172, 28, 76))
B_BACKGROUND = (16, 22, 36)
B_PALETTE = ((38, 108, 226), (18, 164, 160), (62, 184, 70), (104, 88, 222))
RIM_TINT = 0.5  # rim colour: the shape's colour mixed halfway to white
SHAPE_KINDS = ("disc", "square", "triangle")
RADIUS_RANGE = (0.18, 0.28)  # circumradius as a fraction of the side
FOREGROUND_THRESHOLD = 0.2
A_FRAME = (120, 84, 52)  # A's frame: brown
B_FRAME = (150, 176, 222)  # B's frame: light blue


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


def rim_width(size: int) -> int:
    """Width in pixels of domain B's rim on ``size`` x ``size`` images (3 at 64 px)."""
    return max(2, size // 20)


def frame_width(size: int) -> int:
    """Width in pixels of the frame along the border of every ``size`` x ``size`` image (2 at 64 px)."""
    return max(2, size // 32)


def inside_frame(images: torch.Tensor) -> torch.Tensor:
    """(..., H, W) -> (..., H - 2f, W - 2f): the picture inside the frame (f = ``frame_width(W)``)."""
    f = frame_width(images.shape[-1])
    return images[..., f:-f, f:-f]


def random_layout(generator: torch.Generator, size: int, tries: int = 200, frame: bool = False) -> list[Shape]:
    """1-3 random shapes for a ``size`` x ``size`` canvas, drawn with ``generator``.

    Each shape's circumscribed circle keeps a gap of ``rim_width`` pixels to the other shapes' circles, so shapes
    never touch; it lies inside the canvas with 1 px to spare, or, with ``frame``, keeps the same ``rim_width`` gap
    to the frame. A shape that finds no free place in ``tries`` draws is left out (fewer shapes in that image). At
    64 px about 44% of the layouts have one shape, 43% two and 13% three; with the frame, where the shapes are large
    for the space inside it, about 82% one, 17% two and 0.1-0.5% three.
    """

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=generator))

    def integer(high: int) -> int:
        return int(torch.randint(high, (), generator=generator))

    gap = rim_width(size)
    margin = frame_width(size) + gap if frame else 1  # with a frame: the same gap to it
    shapes: list[Shape] = []
    for _ in range(1 + integer(3)):
        kind, angle = SHAPE_KINDS[integer(len(SHAPE_KINDS))], uniform(0.0, 2 * math.pi)
        colour, jitter = integer(len(A_PALETTE)), tuple(integer(25) - 12 for _ in range(3))
        for _ in range(tries):
            radius = uniform(*RADIUS_RANGE) * size
            low, high = radius + margin, size - margin - radius
            cx, cy = uniform(low, high), uniform(low, high)
            if all(math.hypot(cx - o.cx, cy - o.cy) >= radius + o.radius + gap for o in shapes):
                shapes.append(Shape(kind, cx, cy, radius, angle, colour, jitter))
                break
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


def erode(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(N, H, W) bool -> (N, H, W) bool: the pixels of ``mask`` farther than ``width`` from every pixel outside it
    (disc-shaped structuring element; outside the image counts as inside the mask)."""
    r = torch.arange(-width, width + 1, dtype=torch.float32)
    disc = ((r[:, None] ** 2 + r[None, :] ** 2) <= width**2 + 0.5).float()[None, None]  # (1, 1, 2w+1, 2w+1)
    outside = (~mask).float()[:, None]  # (N, 1, H, W)
    return F.conv2d(outside, disc, padding=width)[:, 0] < 0.5


def _tint(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(round(c + RIM_TINT * (255 - c)) for c in colour)


def render(layout: list[Shape], domain: str, size: int, frame: bool = False) -> Image.Image:
    """Draw ``layout`` as a ``size`` x ``size`` RGB image in the style of ``domain`` ("A" or "B"), with the
    domain's frame along the border when ``frame``."""
    if domain not in ("A", "B"):
        raise ValueError(f"unknown domain {domain!r}; expected 'A' or 'B'")
    background = A_BACKGROUND if domain == "A" else B_BACKGROUND
    image = Image.new("RGB", (size, size), background)
    if frame:
        f = frame_width(size)
        ImageDraw.Draw(image).rectangle((0, 0, size - 1, size - 1), outline=A_FRAME if domain == "A" else B_FRAME,
                                        width=f)
    for shape in layout:
        mask = _mask(shape, size)
        if domain == "A":
            image.paste(_jittered(A_PALETTE[shape.colour], shape.jitter), mask=mask)
        else:
            colour = _jittered(B_PALETTE[shape.colour], shape.jitter)
            image.paste(_tint(colour), mask=mask)  # the rim: whole shape, then the fill over its interior
            inside = erode(torch.frombuffer(bytearray(mask.tobytes()), dtype=torch.uint8).view(1, size, size) > 0,
                           rim_width(size))  # (1, size, size)
            image.paste(colour, mask=Image.frombytes("L", (size, size), (inside[0].to(torch.uint8) * 255).numpy().tobytes()))
    return image


def _reference_colours(colours: list[tuple[int, int, int]]) -> torch.Tensor:
    return torch.tensor(colours, dtype=torch.float32) / 255.0  # (K, 3)


def foreground_mask(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) bool: colour farther than the threshold from both backgrounds."""
    rgb = (images.float() + 1) / 2  # (N, 3, H, W) in [0, 1]
    backgrounds = _reference_colours([A_BACKGROUND, B_BACKGROUND])  # (2, 3)
    dist = torch.linalg.vector_norm(rgb[:, None] - backgrounds[None, :, :, None, None], dim=2)  # (N, 2, H, W)
    return dist.amin(dim=1) > FOREGROUND_THRESHOLD


def shapes_score(real_a: torch.Tensor, fake_b: torch.Tensor, frame: bool = False) -> dict[str, float]:
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
    if frame:  # the picture inside the frame
        real_a, fake_b = inside_frame(real_a), inside_frame(fake_b)
    mask_a, mask_b = foreground_mask(real_a.detach().cpu()), foreground_mask(fake_b)  # (N, H, W)
    inter = (mask_a & mask_b).flatten(1).sum(1)  # (N,)
    union = (mask_a | mask_b).flatten(1).sum(1)  # (N,)
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float32))

    rgb = (fake_b + 1) / 2  # (N, 3, H, W)
    groups = {"a": [A_BACKGROUND, *A_PALETTE], "b_bg": [B_BACKGROUND], "fill": list(B_PALETTE),
              "rim": [_tint(c) for c in B_PALETTE]}
    refs = _reference_colours([c for colours in groups.values() for c in colours])  # (K, 3)
    group_of = torch.cat([torch.full((len(c),), g) for g, c in enumerate(groups.values())])  # (K,)
    dist = torch.linalg.vector_norm(rgb[:, None] - refs[None, :, :, None, None], dim=2)  # (N, K, H, W)
    nearest = group_of[dist.argmin(dim=1)]  # (N, H, W): 0 A, 1 B background, 2 B fill, 3 B rim
    colour = (nearest > 0).float().flatten(1).mean(1)  # (N,)

    inner = erode(mask_b, rim_width(fake_b.shape[-1]))  # (N, H, W)
    band = mask_b & ~inner

    def share(region: torch.Tensor, group: int, empty: float) -> torch.Tensor:
        total = region.flatten(1).sum(1)  # (N,)
        hits = (region & (nearest == group)).flatten(1).sum(1)  # (N,)
        return torch.where(total > 0, hits / total.clamp(min=1), torch.full_like(total, empty, dtype=torch.float32))

    texture = (share(band, 3, 0.0) * share(inner, 2, 1.0)).sqrt()  # (N,)
    style = 0.5 * (colour + texture)  # (N,)
    return {
        "content_iou": iou.mean().item(),
        "style_colour": colour.mean().item(),
        "style_texture": texture.mean().item(),
        "style": style.mean().item(),
        "score": (iou * style).mean().item(),
    }


def layout_displacement(real_a: torch.Tensor, fake_b: torch.Tensor, frame: bool = False) -> torch.Tensor:
    """Per image, how far the translation's shapes moved as a whole: a diagnostic for a low ``content_iou``.

    Args:
        real_a: (N, 3, H, W) in [-1, 1]; fake_b: (N, 3, H, W) in [-1, 1], their translations.

    Returns: (N, 2) float, (x, y) offset in pixels of the centroid of ``fake_b``'s foreground from ``real_a``'s
    (:func:`foreground_mask` inside the frame); NaN for an image where either has no foreground. Shapes drawn in place give ~0; a
    generator that draws every shape, all moved by the same few pixels, gives that offset (and loses IoU along
    every outline).
    """
    crop = inside_frame if frame else (lambda t: t)
    masks = [foreground_mask(crop(t.detach().float().cpu())).float() for t in (real_a, fake_b)]  # (N, h, w)
    h, w = masks[0].shape[1:]
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    area = [m.flatten(1).sum(1) for m in masks]  # (N,)
    centroids = [torch.stack([(m * c).flatten(1).sum(1) for c in (xs, ys)], 1) / a.clamp(min=1)[:, None]
                 for m, a in zip(masks, area)]  # (N, 2) each
    offset = centroids[1] - centroids[0]  # (N, 2)
    return torch.where(((area[0] > 0) & (area[1] > 0))[:, None], offset, torch.full_like(offset, float("nan")))


def pil_to_batch(images: list[Image.Image]) -> torch.Tensor:
    """RGB PIL images of one size -> (N, 3, H, W) float32 in [-1, 1]."""
    data = [torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8) for im in images]
    width, height = images[0].size
    batch = torch.stack(data).view(len(images), height, width, 3).permute(0, 3, 1, 2)  # (N, 3, H, W)
    return batch.float() / 127.5 - 1
