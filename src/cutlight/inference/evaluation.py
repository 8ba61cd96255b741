"""FID / KID between two image folders (``cutlight-evaluate``, ``python -m cutlight.cli.evaluate``).

Images (searched recursively, like ``translate_folder`` writes them; png, jpg, jpeg, bmp, webp, tif, tiff) are
decoded by the package's one loader as RGB uint8 at their own size and fed in batches of consecutive same-size
images; the Inception network resizes them to 299x299 itself.
Inception runs once per image; FID and KID are computed by torchmetrics from the same features.
``--no-antialias`` selects the original FID resize, which is what matches published numbers.

Caveats that come with the numbers (``result["warnings"]``, printed by the commands): fewer than
:data:`MIN_IMAGES` images on a side (FID and KID are then mostly sampling noise, and FID is biased upwards, the
more the fewer the images); and a KID whose subsets are all the same images (as many images on both sides as the
subset size), whose spread is then not measured: printed ``n/a (one subset)``, not ``+- 0``. FID is a distance and
is clamped at 0 (round-off); KID is an unbiased estimate and may be slightly negative on small samples.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.v2.functional import pil_to_tensor
from tqdm import tqdm

from ..data.folder import list_images, load_image
from ..metrics import Evaluator
from ..metrics import kid_subset_size as default_kid_subset_size
from .tensors import batches_by_size

MIN_IMAGES = 50
"""Fewest images per side for FID / KID without a warning (below 2 they are refused). FID's bias grows like 1/N
and the 2048-d covariance of N < 2048 images is rank deficient, so small samples give large and noisy numbers; 50
warns about handfuls of images (the issue's 3 against 8) while the standard test splits (horse2zebra, the
smallest of the paper's, has 120 / 140) pass. Numbers from different N are not comparable either way."""


def caveats(n_fake: int, n_real: int, single_subset: bool) -> list[str]:
    """What a reader of FID / KID over ``n_fake`` / ``n_real`` images should know (empty when nothing)."""
    notes = []
    if min(n_fake, n_real) < MIN_IMAGES:
        notes.append(f"FID/KID from {n_fake} translated and {n_real} real images: fewer than {MIN_IMAGES} on a side, "
                     "the numbers are mostly sampling noise (FID is biased upwards for small samples, KID may be "
                     "negative); compare only numbers computed on the same, larger image sets")
    if single_subset:
        notes.append(f"KID has no spread: its subsets hold all {n_fake} images of each side (one subset); more images "
                     "than the subset size (--kid-subset-size) give one")
    return notes


def kid_text(result: dict) -> str:
    """``"0.012345 +- 0.001234"``, or ``"0.012345 +- n/a (one subset)"`` when every KID subset held every image."""
    spread = "n/a (one subset)" if result.get("kid_single_subset") else f"{result['kid_std']:.6f}"
    return f"{result['kid_mean']:.6f} +- {spread}"


def scores_line(result: dict, antialias: bool) -> str:
    """The one line the commands print: ``FID 12.3456  KID 0.012345 +- 0.001234  (n_fake=..., ...)``."""
    return (f"FID {result['fid']:.4f}  KID {kid_text(result)}  (n_fake={result['n_fake']}, n_real={result['n_real']}, "
            f"antialias={antialias})")


def read_image(path: Path) -> torch.Tensor:
    """One image file as RGB uint8 (3, H, W), decoded by the package's one loader (EXIF orientation, alpha on
    white, palette, 16-bit, grayscale repeated); raises naming the file."""
    return pil_to_tensor(load_image(path, 3))  # (3, H, W)


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
        ``dict(fid, kid_mean, kid_std, n_fake, n_real, kid_subset_size, kid_single_subset, warnings)``: FID
        clamped at 0; ``kid_single_subset`` True when every KID subset is all the images (``kid_std`` is then 0 and
        means nothing); ``warnings``: :func:`caveats` (e.g. fewer than :data:`MIN_IMAGES` images on a side).
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
            # consecutive images of one size together, in file order (KID's subsets are drawn by position)
            for batch in batches_by_size(((p, read_image(p)) for p in files), batch_size, max_waiting=0):
                evaluator.update(torch.stack([img for _, img in batch]).to(device), real=real)  # (B, 3, H, W)
                bar.update(len(batch))
    values = evaluator.compute()  # KID subsets drawn from cutlight.metrics.KID_SEED
    single = subset == n_fake == n_real  # every subset is every image of both sides: one subset, no spread
    return dict(fid=float(values["fid"]), kid_mean=float(values["kid"]), kid_std=float(values["kid_std"]),
                n_fake=n_fake, n_real=n_real, kid_subset_size=subset, kid_single_subset=single,
                warnings=caveats(n_fake, n_real, single))
