"""Argument types shared by the commands."""

from __future__ import annotations

import argparse
import ast


def parse_kwarg(text: str) -> tuple[str, object]:
    """``"KEY=VALUE"`` -> (key, Python literal or, failing that, the string): ``ngf=32`` -> ("ngf", 32)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain string, e.g. norm=none


def add_trust_code(parser: argparse.ArgumentParser) -> None:
    """``--trust-code``: let the checkpoint / export name classes outside cutlight's allowlist (``cutlight.specs``)."""
    parser.add_argument("--trust-code", action="store_true",
                        help="let the checkpoint's _target_ names import any class (runs code from outside "
                             "cutlight: only for files you trust; CUTLIGHT_TRUSTED_MODULES=mypkg.nets trusts "
                             "your own modules only)")
