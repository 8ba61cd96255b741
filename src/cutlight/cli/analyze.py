"""The paper's learned-similarity and feature-PCA figures: ``python -m cutlight.cli.analyze`` (``cutlight-analyze``).

    cutlight-analyze --ckpt CKPT --input IMAGE [--output DIR] [--size N] [--layer L] [--query ROW,COL ...]
                     [--pca-layers L ...] [--device cpu|cuda] [--trust-code]

What the figures show: ``cutlight.inference.analysis``.
"""

from __future__ import annotations

import argparse
import sys

from ..inference import DIRECTIONS
from ..inference.analysis import analyze
from ..specs import trusting_code
from .args import add_trust_code


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
    parser.add_argument("--ckpt", required=True, help="training checkpoint (.ckpt); a generator .pth gives PCA only")
    parser.add_argument("--input", required=True, help="an image of the source domain")
    parser.add_argument("--output", default=None, help="folder for the figures (default: <run>/analysis/<image>)")
    parser.add_argument("--size", type=int, default=None, help="resize the image to size x size first")
    parser.add_argument("--layer", type=int, default=None, help="nce layer of the similarity maps (default: deepest)")
    parser.add_argument("--query", type=_query, action="append", default=None, metavar="ROW,COL",
                        help="query point in pixels (repeat for several; default: one per quadrant)")
    parser.add_argument("--pca-layers", type=int, nargs="+", default=None, help="encoder layers for pca.png")
    parser.add_argument("--device", default=None)
    parser.add_argument("--direction", choices=list(DIRECTIONS), default=None,
                        help="checkpoints with two generators (CycleGAN, DCLGAN): which one")
    add_trust_code(parser)
    args = parser.parse_args(argv)
    try:
        with trusting_code(True if args.trust_code else None):
            written = analyze(args.ckpt, args.input, args.output, args.size, args.layer, args.query, args.pca_layers,
                              args.device, args.direction)
    except (FileNotFoundError, ValueError) as e:
        print(f"cutlight-analyze: error: {e}", file=sys.stderr)
        return 2
    if "similarity" not in written:
        print(f"{args.ckpt} has no MLP heads for its generator: no similarity figure (it needs a checkpoint of a "
              "contrastive method: CUT, FastCUT, SinCUT, DCLGAN, ...)")
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
