"""The paper's analysis figures for one image and a trained checkpoint.

``python -m cutlight.analyze --ckpt CKPT --input IMAGE [--output DIR]`` (or ``cutlight-analyze``) writes:

* ``similarity.png``: the learned similarity (paper, Fig. 6): query points on the output G(x); for each, the
  cosine similarity through the encoder and the MLP heads to every patch of the input x, as a heat map over x
  (red cross: the query's own position, the positive; cyan dot: the most similar input patch).
* ``pca.png``: the encoder's features of x and of G(x) at each layer, projected jointly onto their first three
  principal components and shown as RGB (what the contrastive loss keeps from input to output).

The generator and the MLP heads (``sampler.*``) come from a ``CUTModule`` checkpoint, rebuilt from its
``hyper_parameters`` (no training config needed). A plain generator state dict (``latest_net_G.pth``) has no heads:
then only ``pca.png`` is written.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .inference import load_generator
from .networks import PatchSampler, ResnetGenerator, load_network_weights
from .objectives import CUTObjective
from .viz import feature_pca, similarity_map

PAPER_LAYERS = list(inspect.signature(CUTObjective).parameters["nce_layers"].default)


def load_sampler(path: str | os.PathLike, generator: ResnetGenerator) -> tuple[PatchSampler | None, list[int]]:
    """The MLP heads of a ``CUTModule`` checkpoint and their ``nce_layers``; ``(None, paper layers)`` for a
    checkpoint without heads (a generator state dict)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not (isinstance(ckpt, dict) and "state_dict" in ckpt):
        return None, PAPER_LAYERS
    hparams = ckpt.get("hyper_parameters", {})
    layers = [int(i) for i in (hparams.get("objective") or {}).get("nce_layers", PAPER_LAYERS)]
    state = {k[len("sampler."):].replace("_orig_mod.", ""): v for k, v in ckpt["state_dict"].items()
             if k.startswith("sampler.")}
    if not state:
        return None, layers
    sampler = PatchSampler(generator.feature_channels(layers), **(hparams.get("sampler") or {}))
    load_network_weights(sampler, state)
    return sampler.eval(), layers


def load_image_tensor(path: str | os.PathLike, channels: int, size: int | None = None) -> torch.Tensor:
    """(1, C, H, W) in [-1, 1]: resized to ``size`` x ``size``, else kept at its size rounded down to a multiple
    of 4 (the generator downsamples twice)."""
    from .data import load_image
    from .data.transforms import resize, to_normalized_tensor

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


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@torch.no_grad()
def plot_similarity(generator, sampler, layers, real_a, fake_b, layer, queries, path: Path) -> Path:
    """``similarity.png`` for pixel ``queries`` [(row, col)] on ``layer`` (one of ``layers``)."""
    plt = _pyplot()
    height, width = real_a.shape[-2:]
    fig, axes = plt.subplots(2, len(queries) + 1, figsize=(2.6 * (len(queries) + 1), 5.4), squeeze=False)
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
    plt.close(fig)
    return path


@torch.no_grad()
def plot_pca(generator, real_a, fake_b, layers, path: Path) -> Path:
    """``pca.png``: per layer, the features of x (top) and G(x) (bottom), jointly projected to RGB."""
    plt = _pyplot()
    feats_a, feats_b = generator.encode(real_a, layers), generator.encode(fake_b, layers)
    fig, axes = plt.subplots(2, len(layers) + 1, figsize=(2.4 * (len(layers) + 1), 5.0), squeeze=False)
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
    plt.close(fig)
    return path


def default_output(ckpt: Path, image: Path) -> Path:
    """``<run>/analysis/<image name>`` for ``<run>/checkpoints/*.ckpt``, else next to the checkpoint."""
    base = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return base / "analysis" / image.stem


def analyze(ckpt: str | os.PathLike, image: str | os.PathLike, output: str | os.PathLike | None = None,
            size: int | None = None, layer: int | None = None, queries: list[tuple[int, int]] | None = None,
            pca_layers: list[int] | None = None, device: str | None = None) -> dict[str, Path]:
    """Write ``similarity.png`` (when the checkpoint has MLP heads) and ``pca.png``; returns their paths.

    Args:
        layer: the ``nce_layers`` entry for the similarity maps (default: the deepest).
        queries: (row, col) pixel positions on the (resized) image (default: one per quadrant).
        pca_layers: encoder layers for the PCA figure (default: the ``nce_layers`` with more than 3 channels).
    """
    ckpt, image = Path(ckpt), Path(image)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = load_generator(ckpt, device)
    sampler, layers = load_sampler(ckpt, generator)
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


def _query(text: str) -> tuple[int, int]:
    try:
        row, col = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROW,COL in pixels, got {text!r}") from None
    return row, col


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cutlight-analyze",
        description="The paper's learned-similarity and feature-PCA figures for one image and a checkpoint.")
    parser.add_argument("--ckpt", required=True, help="CUTModule checkpoint (.ckpt); a generator .pth gives PCA only")
    parser.add_argument("--input", required=True, help="an image of the source domain")
    parser.add_argument("--output", default=None, help="folder for the figures (default: <run>/analysis/<image>)")
    parser.add_argument("--size", type=int, default=None, help="resize the image to size x size first")
    parser.add_argument("--layer", type=int, default=None, help="nce layer of the similarity maps (default: deepest)")
    parser.add_argument("--query", type=_query, action="append", default=None, metavar="ROW,COL",
                        help="query point in pixels (repeat for several; default: one per quadrant)")
    parser.add_argument("--pca-layers", type=int, nargs="+", default=None, help="encoder layers for pca.png")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        written = analyze(args.ckpt, args.input, args.output, args.size, args.layer, args.query, args.pca_layers,
                          args.device)
    except (FileNotFoundError, ValueError) as e:
        print(f"cutlight-analyze: error: {e}", file=sys.stderr)
        return 2
    if "similarity" not in written:
        print(f"{args.ckpt} has no MLP heads (sampler.*): no similarity figure (it needs a CUTModule checkpoint)")
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
