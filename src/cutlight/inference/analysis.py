"""The paper's analysis figures for one image and a trained checkpoint.

``analyze(ckpt, image)`` (the command: ``python -m cutlight.cli.analyze --ckpt CKPT --input IMAGE [--output DIR]``,
or ``cutlight-analyze``) writes:

* ``similarity.png``: the learned similarity (paper, Fig. 6): query points on the output G(x); for each, the
  cosine similarity through the encoder and the MLP heads to every patch of the input x, as a heat map over x
  (red cross: the query's own position, the positive; cyan dot: the most similar input patch).
* ``pca.png``: the encoder's features of x and of G(x) at each layer, projected jointly onto their first three
  principal components and shown as RGB (what the contrastive loss keeps from input to output).

The generator and the MLP heads that project its features come from a checkpoint of any method, by role (CUT's
``generator`` and ``sampler``; a two-generator method's by ``direction``, e.g. DCLGAN's ``gen_a`` and
``head_a``), rebuilt from what the checkpoint says (no training config needed). A plain generator state dict (``latest_net_G.pth``) has no heads:
then only ``pca.png`` is written. Figures are drawn on ``matplotlib.figure.Figure`` objects and saved (no pyplot
state, no backend switch: a notebook calling this keeps its own).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ..viz import feature_pca, similarity_map
from .loading import load_generator, load_sampler


def load_image_tensor(path: str | os.PathLike, channels: int, size: int | None = None) -> torch.Tensor:
    """(1, C, H, W) in [-1, 1]: resized to ``size`` x ``size``, else kept at its size rounded down to a multiple
    of 4 (the generator downsamples twice)."""
    from ..data import load_image
    from ..data.transforms import resize, to_normalized_tensor

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {str(path)!r}" + (" (it is a folder)" if path.is_dir() else ""))
    image = load_image(path, channels)
    w, h = (size, size) if size else (max(4, image.size[0] // 4 * 4), max(4, image.size[1] // 4 * 4))
    return to_normalized_tensor(channels)(resize(image, w, h))[None]


def default_queries(height: int, width: int) -> list[tuple[int, int]]:
    """Four query points (row, col) in pixels, one in each quadrant's centre."""
    return [(int(height * fy), int(width * fx)) for fy, fx in ((0.3, 0.3), (0.3, 0.7), (0.7, 0.3), (0.7, 0.7))]


def _show(x: torch.Tensor):
    return ((x.detach().float().cpu().permute(1, 2, 0) + 1) / 2).clamp(0, 1).squeeze(-1)  # (H, W[, C])


@torch.no_grad()
def plot_similarity(generator, sampler, layers, real_a, fake_b, layer, queries, path: Path) -> Path:
    """``similarity.png`` for pixel ``queries`` [(row, col)] on ``layer`` (one of ``layers``)."""
    height, width = real_a.shape[-2:]
    fig = Figure(figsize=(2.6 * (len(queries) + 1), 5.4))
    axes = fig.subplots(2, len(queries) + 1, squeeze=False)
    axes[0, 0].imshow(_show(real_a[0]), cmap="gray")
    axes[0, 0].set_title("input x", fontsize=9)
    axes[1, 0].imshow(_show(fake_b[0]), cmap="gray")
    axes[1, 0].set_title("output G(x)", fontsize=9)
    grid_h, grid_w = generator.encode(real_a, [layer])[0].shape[-2:]
    for col, (row_px, col_px) in enumerate(queries, start=1):
        q = (min(grid_h - 1, row_px * grid_h // height), min(grid_w - 1, col_px * grid_w // width))
        sim = similarity_map(generator, sampler, real_a, fake_b, layers, layer, q)  # (grid_h, grid_w)
        up = F.interpolate(sim[None, None], size=(height, width), mode="nearest")[0, 0]  # (H, W)
        best = divmod(int(sim.argmax()), grid_w)
        to_px = (height / grid_h, width / grid_w)
        axes[0, col].imshow(_show(fake_b[0]), cmap="gray")
        axes[0, col].plot(col_px, row_px, "r+", ms=14, mew=2)
        axes[0, col].set_title(f"query {col} on G(x)", fontsize=9)
        axes[1, col].imshow(_show(real_a[0]).mean(-1) if real_a.shape[1] == 3 else _show(real_a[0]), cmap="gray")
        shown = axes[1, col].imshow(up, cmap="magma", alpha=0.75)
        axes[1, col].plot(col_px, row_px, "r+", ms=14, mew=2)
        axes[1, col].plot((best[1] + 0.5) * to_px[1] - 0.5, (best[0] + 0.5) * to_px[0] - 0.5, "o", ms=6,
                          mfc="none", mec="cyan", mew=1.5)
        axes[1, col].set_title(f"similarity over x ({sim.min():.2f}..{sim.max():.2f})", fontsize=8)
        fig.colorbar(shown, ax=axes[1, col], fraction=0.046, pad=0.02)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(f"learned similarity, layer {layer} (encoder + MLP head): red + query / positive, "
                 "cyan o most similar input patch", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


@torch.no_grad()
def plot_pca(generator, real_a, fake_b, layers, path: Path) -> Path:
    """``pca.png``: per layer, the features of x (top) and G(x) (bottom), jointly projected to RGB."""
    feats_a, feats_b = generator.encode(real_a, layers), generator.encode(fake_b, layers)
    fig = Figure(figsize=(2.4 * (len(layers) + 1), 5.0))
    axes = fig.subplots(2, len(layers) + 1, squeeze=False)
    axes[0, 0].imshow(_show(real_a[0]), cmap="gray")
    axes[0, 0].set_title("input x", fontsize=9)
    axes[1, 0].imshow(_show(fake_b[0]), cmap="gray")
    axes[1, 0].set_title("output G(x)", fontsize=9)
    for col, (layer, fa, fb) in enumerate(zip(layers, feats_a, feats_b), start=1):
        pa, pb = feature_pca([fa[0].float(), fb[0].float()])  # (3, H_l, W_l) each, in [0, 1]
        axes[0, col].imshow(pa.permute(1, 2, 0).cpu())
        axes[1, col].imshow(pb.permute(1, 2, 0).cpu())
        axes[0, col].set_title(f"layer {layer} ({fa.shape[1]} ch, {fa.shape[-2]}x{fa.shape[-1]})", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle("PCA of encoder features (3 components as RGB, fitted on x and G(x) together)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def default_output(ckpt: Path, image: Path) -> Path:
    """``<run>/analysis/<image name>`` for ``<run>/checkpoints/*.ckpt``, else next to the checkpoint."""
    base = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return base / "analysis" / image.stem


def analyze(ckpt: str | os.PathLike, image: str | os.PathLike, output: str | os.PathLike | None = None,
            size: int | None = None, layer: int | None = None, queries: list[tuple[int, int]] | None = None,
            pca_layers: list[int] | None = None, device: str | None = None,
            direction: str | None = None) -> dict[str, Path]:
    """Write ``similarity.png`` (when the checkpoint has MLP heads) and ``pca.png``; returns their paths.

    Args:
        layer: the ``nce_layers`` entry for the similarity maps (default: the deepest).
        queries: (row, col) pixel positions on the (resized) image (default: one per quadrant).
        pca_layers: encoder layers for the PCA figure (default: the ``nce_layers`` with more than 3 channels).
        direction: ``AtoB`` or ``BtoA``, for checkpoints with two generators.
    """
    ckpt, image = Path(ckpt), Path(image)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = load_generator(ckpt, device, direction=direction)
    sampler, layers = load_sampler(ckpt, generator, direction or "AtoB")
    real_a = load_image_tensor(image, generator.input_nc, size).to(device)
    with torch.no_grad():
        fake_b = generator(real_a)
    out = Path(output) if output else default_output(ckpt, image)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    if sampler is not None:
        layer = max(layers) if layer is None else layer
        if layer not in layers:
            raise ValueError(f"layer {layer} has no MLP head; the checkpoint's nce_layers are {layers}")
        queries = queries or default_queries(*real_a.shape[-2:])
        for r, c in queries:
            if not (0 <= r < real_a.shape[-2] and 0 <= c < real_a.shape[-1]):
                raise ValueError(f"query ({r}, {c}) outside the {real_a.shape[-2]}x{real_a.shape[-1]} image")
        written["similarity"] = plot_similarity(generator, sampler.to(device), layers, real_a, fake_b, layer,
                                                queries, out / "similarity.png")
    pca_layers = pca_layers or [i for i, c in zip(layers, generator.feature_channels(layers)) if c > 3]
    written["pca"] = plot_pca(generator, real_a, fake_b, pca_layers or layers, out / "pca.png")
    return written
