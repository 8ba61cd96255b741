"""Standalone FID / KID between two image folders: ``python -m cutlight.cli.evaluate`` (``cutlight-evaluate``).

    python -m cutlight.cli.evaluate --fake DIR --real DIR [--json] [--batch-size N] [--kid-subset-size N]
                                    [--no-antialias] [--device cpu|cuda]
    python -m cutlight.cli.evaluate --translate CKPT --input DIR [--output DIR] [--trust-code] --real DIR ...

How images are read and batched: ``cutlight.inference.evaluation``. ``--no-antialias`` selects the original FID
resize, which is what matches published numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from ..inference import evaluate_folders, translate_folder
from ..inference.evaluation import scores_line
from ..specs import trusting_code
from .args import add_trust_code


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cutlight.cli.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--real", required=True, help="folder of real target-domain images")
    p.add_argument("--fake", help="folder of generated images")
    p.add_argument(
        "--translate", metavar="CKPT", help="translate --input with this checkpoint, then evaluate"
    )
    p.add_argument("--input", help="source-domain folder to translate (with --translate)")
    p.add_argument("--output", help="where translated images go (default: a temporary folder, removed after)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--kid-subset-size", type=int, default=None, help="default: min(1000, n_fake, n_real)")
    p.add_argument("--antialias", action=argparse.BooleanOptionalAction, default=True,
                   help="antialiased resize (torchmetrics default); --no-antialias = original FID resize, matches papers")  # fmt: skip
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_trust_code(p)
    args = p.parse_args(argv)
    if (args.fake is None) == (args.translate is None):
        p.error("give exactly one of --fake DIR or --translate CKPT --input DIR")
    if args.translate is not None and args.input is None:
        p.error("--translate needs --input DIR (the images to translate)")
    if args.translate is None and (args.input or args.output):
        p.error("--input/--output only apply with --translate CKPT")
    return args


def _run(args: argparse.Namespace) -> dict:
    kwargs = dict(batch_size=args.batch_size, antialias=args.antialias,
                  kid_subset_size=args.kid_subset_size, device=args.device)  # fmt: skip
    if args.translate is None:
        return evaluate_folders(args.fake, args.real, **kwargs)
    with tempfile.TemporaryDirectory(prefix="cutlight-fake-") as tmp:
        out = translate_folder(args.translate, args.input, args.output or tmp,
                               device=args.device, batch_size=args.batch_size)  # fmt: skip
        return evaluate_folders(out, args.real, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``cutlight-evaluate``); returns the exit code."""
    args = _parse(argv)
    try:
        with trusting_code(True if args.trust_code else None):
            result = _run(args)
    except (OSError, ValueError, RuntimeError) as err:  # bad folders/files/weights: message, no traceback
        print(f"cutlight-evaluate: error: {err}", file=sys.stderr)
        return 1
    for note in result["warnings"]:
        print(f"cutlight-evaluate: warning: {note}", file=sys.stderr)
    print(json.dumps(result) if args.json else scores_line(result, args.antialias))
    return 0


if __name__ == "__main__":
    sys.exit(main())
