"""Standalone FID / KID between two image folders.

    python -m cutlight.evaluate --fake DIR --real DIR [--json] [--batch-size N] [--kid-subset-size N]
                                [--no-antialias] [--device cpu|cuda]
    python -m cutlight.evaluate --translate CKPT --input DIR [--output DIR] --real DIR ...

Images (searched recursively, like ``translate_folder`` writes them; png, jpg, jpeg, bmp, webp, tif, tiff) are
decoded by the package's one loader as RGB uint8 at their own size and fed in batches of consecutive same-size
images; the Inception network resizes them to 299x299 itself.
Inception runs once per image; FID and KID are computed by torchmetrics from the same features.
``--no-antialias`` selects the original FID resize, which is what matches published numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm import tqdm

from cutlight.data.folder import list_images, load_image
from cutlight.metrics import Evaluator
from cutlight.metrics import kid_subset_size as default_kid_subset_size


def read_image(path: Path) -> torch.Tensor:
    """One image file as RGB uint8 (3, H, W), decoded by the package's one loader (EXIF orientation, alpha on
    white, palette, 16-bit, grayscale repeated); raises naming the file."""
    return pil_to_tensor(load_image(path, 3))  # (3, H, W)


def iter_batches(files: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    """Yield uint8 (B, 3, H, W) batches of consecutive same-size images, B <= batch_size."""
    batch: list[torch.Tensor] = []
    for path in files:
        img = read_image(path)
        if batch and (len(batch) == batch_size or img.shape != batch[0].shape):
            yield torch.stack(batch)
            batch = []
        batch.append(img)
    if batch:
        yield torch.stack(batch)


@torch.no_grad()
def evaluate_folders(
    fake_dir: str | os.PathLike,
    real_dir: str | os.PathLike,
    batch_size: int = 32,
    antialias: bool = True,
    kid_subset_size: int | None = None,
    feature_extractor: nn.Module | dict | None = None,
    device: str | torch.device | None = None,
) -> dict:
    """FID and KID of the images in ``fake_dir`` against those in ``real_dir`` (``cutlight.metrics.Evaluator``).

    Args:
        batch_size: images per forward pass (at most; a size change starts a new batch).
        antialias: Inception resize mode; False = original FID resize (matches papers).
        kid_subset_size: default ``min(1000, n_fake, n_real)``.
        feature_extractor: replaces Inception (an ``nn.Module`` with ``num_features`` or a ``_target_`` spec).
        device: default "cuda" when available, else "cpu".
    Returns:
        ``dict(fid, kid_mean, kid_std, n_fake, n_real)`` (floats and ints).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    fake_files, real_files = list_images(fake_dir), list_images(real_dir)
    n_fake, n_real = len(fake_files), len(real_files)
    subset = kid_subset_size if kid_subset_size is not None else default_kid_subset_size(n_real, n_fake)
    if not 2 <= subset <= min(n_fake, n_real):
        raise ValueError(f"kid_subset_size={subset} must be in [2, min(n_fake={n_fake}, n_real={n_real})]")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    evaluator = Evaluator(kid_subset_size=subset, extractor=feature_extractor, antialias=antialias).to(device)
    for name, files, real in (("real", real_files, True), ("fake", fake_files, False)):
        with tqdm(total=len(files), desc=f"{name} images", unit="img", file=sys.stderr) as bar:
            for imgs in iter_batches(files, batch_size):
                evaluator.update(imgs.to(device), real=real)
                bar.update(len(imgs))
    values = evaluator.compute()  # KID subsets drawn from cutlight.metrics.KID_SEED
    return dict(fid=float(values["fid"]), kid_mean=float(values["kid"]), kid_std=float(values["kid_std"]),
                n_fake=n_fake, n_real=n_real)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m cutlight.evaluate", description=__doc__.split("\n\n")[0])
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
    from cutlight.inference import translate_folder  # lazy: inference pulls in the model code

    with tempfile.TemporaryDirectory(prefix="cutlight-fake-") as tmp:
        out = translate_folder(args.translate, args.input, args.output or tmp,
                               device=args.device, batch_size=args.batch_size)  # fmt: skip
        return evaluate_folders(out, args.real, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (``cutlight-evaluate``); returns the exit code."""
    args = _parse(argv)
    try:
        result = _run(args)
    except (OSError, ValueError, RuntimeError) as err:  # bad folders/files/weights: message, no traceback
        print(f"cutlight.evaluate: error: {err}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"FID {result['fid']:.4f}  KID {result['kid_mean']:.6f} +- {result['kid_std']:.6f}  "
              f"(n_fake={result['n_fake']}, n_real={result['n_real']}, antialias={args.antialias})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
