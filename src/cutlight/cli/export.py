"""Export a trained generator: ``python -m cutlight.cli.export`` (``cutlight-export``).

    cutlight-export --ckpt CKPT --format torchscript|onnx|safetensors --output FILE
                    [--direction AtoB|BtoA] [--generator KEY=VALUE ...] [--overwrite] [--no-verify] [--trust-code]

The formats and what each file holds: below (``cutlight.inference.export``).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys

from ..inference import DIRECTIONS, build_generator, read_generator
from ..inference import export as _export
from ..inference.export import FORMATS, VERIFY_SIZES, export_generator, verify_export
from ..specs import trusting_code
from .args import add_trust_code, parse_kwarg

logger = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cutlight-export", description=__doc__,
                                epilog=_export.__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="cutlight .ckpt, .safetensors export or generator state dict")
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--output", required=True, help="file to write")
    p.add_argument("--direction", choices=list(DIRECTIONS), help="checkpoints with two generators (CycleGAN, DCLGAN): which one")
    p.add_argument("--generator", type=parse_kwarg, action="append", default=[], metavar="KEY=VALUE",
                   help="generator constructor argument (overrides the checkpoint)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip the check against eager")
    add_trust_code(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``cutlight-export``); returns the exit status."""
    args = _parser().parse_args(argv)
    with trusting_code(True if args.trust_code else None):
        return _export_checkpoint(args)


def _export_checkpoint(args: argparse.Namespace) -> int:
    try:
        if args.format not in FORMATS:
            raise ValueError(f"unknown export format {args.format!r}; expected one of {', '.join(FORMATS)}")
        spec = read_generator(args.ckpt, args.direction, **dict(args.generator))
        print(f"generator: {spec.source}", file=sys.stderr)
        generator = build_generator(spec).eval()
        path = export_generator(generator, args.output, args.format, spec.config(), args.overwrite)
        print(f"wrote {args.format} export to {path}")
        if args.verify and not (args.format == "onnx" and _missing("onnxruntime")):
            diffs = verify_export(path, args.format, generator)
            sizes = ", ".join(f"{b}x{h}x{w}: {d:.2e}" for (b, h, w), d in zip(VERIFY_SIZES, diffs))
            print(f"max |export - eager| per input size (B x H x W): {sizes}")
            if max(diffs) > 1e-4:
                print("cutlight-export: error: the export differs from the eager generator by more than 1e-4",
                      file=sys.stderr)
                return 1
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        print(f"cutlight-export: error: {err}", file=sys.stderr)
        return 1
    return 0


def _missing(module: str) -> bool:
    if importlib.util.find_spec(module) is None:
        logger.warning("%s is not installed: export not verified", module)
        return True
    return False


if __name__ == "__main__":
    sys.exit(main())
