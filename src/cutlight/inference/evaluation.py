"""FID / KID between two image folders (``cutlight-evaluate``, ``python -m cutlight.cli.evaluate``).

Images (searched recursively, like ``translate_folder`` writes them; png, jpg, jpeg, bmp, webp, tif, tiff) are
decoded by the package's one loader as RGB uint8 at their own size and fed in batches of consecutive same-size
images; the Inception network resizes them to 299x299 itself.
Inception runs once per image; FID and KID are computed by torchmetrics from the same features.
``--no-antialias`` selects the original FID resize, which is what matches published numbers.
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
            # consecutive images of one size together, in file order (KID's subsets are drawn by position)
            for batch in batches_by_size(((p, read_image(p)) for p in files), batch_size, max_waiting=0):
                evaluator.update(torch.stack([img for _, img in batch]).to(device), real=real)  # (B, 3, H, W)
                bar.update(len(batch))
    values = evaluator.compute()  # KID subsets drawn from cutlight.metrics.KID_SEED
    return dict(fid=float(values["fid"]), kid_mean=float(values["kid"]), kid_std=float(values["kid_std"]),
                n_fake=n_fake, n_real=n_real)
