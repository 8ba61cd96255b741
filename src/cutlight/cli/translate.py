"""Translate image files with a trained generator: ``python -m cutlight.cli.translate`` (``cutlight-translate``).

    cutlight-translate --ckpt CKPT --input PATH [PATH ...] --output DIR [--direction AtoB|BtoA]
                       [--size N | --short-side N] [--ext png] [--overwrite] [--keep-suffix]
                       [--batch-size 8] [--device cuda] [--precision fp32|bf16|fp16]
                       [--num-test N] [--html] [--real DIR] [--generator KEY=VALUE ...] [--trust-code]

Exit status: 0 when every image was written or skipped, 1 when any failed or on an error.
``--num-test N`` translates the first N inputs (sorted), as the reference implementation's ``--num_test``.
``--html`` writes ``index.html`` (and ``page2.html``, ...) into DIR: input | translation per row, linking to the
full images (inputs shown by thumbnails embedded in the page: moving DIR keeps them); with ``--real DIR`` a real
image column and FID/KID of DIR's images against the real ones (``cutlight-evaluate``) at the top.
How inputs are found, resized and named: below (``cutlight.inference.files``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from ..inference import (
    DIRECTIONS,
    FORMATS,
    PRECISIONS,
    build_generator,
    evaluate_folders,
    read_generator,
    translate_folder,
)
from ..inference import files as _files
from ..inference.evaluation import scores_line
from ..inference.gallery import write_gallery
from ..specs import trusting_code
from .args import add_trust_code, parse_kwarg


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cutlight-translate", description=__doc__,
                                epilog=_files.__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="cutlight .ckpt, .safetensors export, or generator state dict "
                                                 "(e.g. the reference latest_net_G.pth)")
    p.add_argument("--input", required=True, nargs="+", metavar="PATH", help="image file(s), folder(s) or quoted glob pattern(s)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--direction", choices=list(DIRECTIONS), help="checkpoints with two generators (CycleGAN, DCLGAN): which one")
    sizes = p.add_mutually_exclusive_group()
    sizes.add_argument("--size", type=int, metavar="N", help="resize so that the longer side is N (aspect kept)")
    sizes.add_argument("--short-side", type=int, metavar="N", help="resize so that the shorter side is N (aspect kept)")
    p.add_argument("--ext", default="png", choices=sorted(FORMATS), help="output format (default png)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--keep-suffix", action="store_true", help="name outputs x.jpg.png (never collide)")
    p.add_argument("--num-test", type=int, metavar="N", help="translate only the first N inputs (sorted; the "
                                                              "reference implementation's --num_test)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="fp32")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads (0: none)")
    p.add_argument("--generator", type=parse_kwarg, action="append", default=[], metavar="KEY=VALUE",
                   help="generator constructor argument (overrides the checkpoint; e.g. norm=none)")
    p.add_argument("--html", action="store_true", help="write index.html (+ page2.html, ...) into --output")
    p.add_argument("--per-page", type=int, default=50, help="rows per HTML page")
    p.add_argument("--real", metavar="DIR", help="folder of real target images: FID/KID of the outputs (on the HTML page)")
    p.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=True,
                   help="FID/KID Inception resize: antialiased (default) or --no-antialias, the original FID resize "
                        "that published numbers use")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trust_code(p)
    return p


def _metrics(output: Path, real: str, device: str, antialias: bool) -> tuple[dict | None, str | None]:
    try:
        return {**evaluate_folders(output, real, antialias=antialias, device=device), "antialias": antialias}, None
    except (OSError, ValueError, RuntimeError) as err:
        return None, str(err)


def _real_images(real: str | None) -> list[Path] | None:
    """The real target images of ``--real`` for the page's third column (None without it, or when unreadable)."""
    if not real:
        return None
    from ..data.folder import list_images

    try:
        return list_images(real)
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``cutlight-translate``); returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    overrides = dict(args.generator)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        with trusting_code(True if args.trust_code else None):
            spec = read_generator(args.ckpt, args.direction, **overrides)
            print(f"generator: {spec.source}", file=sys.stderr)
            generator = build_generator(spec).to(device).eval()
        report = translate_folder(
            generator, args.input, args.output, batch_size=args.batch_size, size=args.size,
            short_side=args.short_side, ext=args.ext, overwrite=args.overwrite, keep_suffix=args.keep_suffix,
            precision=args.precision, workers=args.workers, progress=not args.quiet, max_images=args.num_test,
        )
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        print(f"cutlight-translate: error: {err}", file=sys.stderr)
        return 1
    print(report.summary())
    status = 1 if report.failed else 0
    metrics, metrics_error = None, None
    if args.real:
        metrics, metrics_error = _metrics(report.output_dir, args.real, device, args.antialias)
        if metrics is not None:
            for note in metrics["warnings"]:
                print(f"cutlight-translate: warning: {note}", file=sys.stderr)
            print(scores_line(metrics, args.antialias))
        else:
            print(f"cutlight-translate: FID/KID not computed: {metrics_error}", file=sys.stderr)
            status = 1
    if args.html:
        info = {"checkpoint": spec.source, "inputs": " ".join(args.input),
                "size": f"longer side {args.size}" if args.size else
                f"shorter side {args.short_side}" if args.short_side else "input size kept",
                "failed": str(len(report.failed))}
        if metrics_error:
            info["FID/KID"] = f"not computed: {metrics_error}"
        reals = _real_images(args.real)
        pages = write_gallery(report.output_dir, report.pairs, title=f"{Path(args.ckpt).name}: translations",
                              info=info, metrics=metrics, real_dir=args.real, per_page=args.per_page, reals=reals)
        print(f"HTML: {pages[0]} ({len(pages)} page(s))")
    return status


if __name__ == "__main__":
    sys.exit(main())
