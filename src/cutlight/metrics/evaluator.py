"""``Evaluator``: FID and KID of translated images against real ones, with one feature pass per image.

A plain object (not an ``nn.Module``): the feature network never enters a model's state dict, checkpoint or DDP
buckets. It moves itself to the device of the images it is given. Under ``torch.distributed`` every rank feeds
its own shard and ``compute()`` (a collective: call it on every rank) combines them, so each image counts once.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from .features import build_extractor, to_uint8
from .kid import KID_SEED, kid_subset_size


class _Precomputed(nn.Module):
    """Identity 'feature network': the metrics receive features computed once by the evaluator. (B, F) -> (B, F)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return feats


class Evaluator:
    """FID (torchmetrics ``FrechetInceptionDistance``) and KID (``KernelInceptionDistance``) sharing one extractor.

    Args:
        fid / kid: which metrics to compute.
        kid_subset_size: KID's subset size is ``min(kid_subset_size, n_real, n_fake)`` over all ranks.
        extractor: ``"inception"`` (standard FID network from local weights), an ``nn.Module`` with
            ``num_features``, or ``{"_target_": "pkg.Class", **kwargs}`` (see ``build_extractor``).
        feature / antialias / weights_path: the Inception layer, resize mode and weights file.
        kid_seed: KID draws its subsets from this seed in a forked RNG (reproducible; the caller's random stream
            is not advanced).

    Use: ``update(images, real=...)`` with float images in [-1, 1] (B, C, H, W), C in {1, 3}, or uint8 (B, 3, H, W);
    ``compute()`` -> ``{"fid": ..., "kid": ..., "kid_std": ...}`` (0-dim float tensors); ``reset(reals=False)``
    forgets the translated images' statistics (and the reals' with ``reals=True``).
    """

    def __init__(
        self,
        fid: bool = True,
        kid: bool = True,
        kid_subset_size: int = 1000,
        extractor: str | dict | nn.Module | None = "inception",
        feature: int = 2048,
        antialias: bool = True,
        weights_path: str | os.PathLike | None = None,
        kid_seed: int = KID_SEED,
    ) -> None:
        if not (fid or kid):
            raise ValueError("Evaluator needs fid=True or kid=True")
        if not isinstance(kid_subset_size, int) or kid_subset_size < 2:
            raise ValueError(f"kid_subset_size must be an int >= 2; got {kid_subset_size!r}")
        self.extractor = build_extractor(extractor, feature, antialias, weights_path).eval()
        n = self.extractor.num_features
        self.fid = FrechetInceptionDistance(feature=_Precomputed(n), reset_real_features=False) if fid else None
        with warnings.catch_warnings():  # "will save all extracted features": that is what KID needs
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            self.kid = (KernelInceptionDistance(feature=_Precomputed(n), subset_size=kid_subset_size)
                        if kid else None)
        self.kid_subset_size, self.kid_seed = kid_subset_size, kid_seed
        self._kid_feats: dict[bool, list[torch.Tensor]] = {True: [], False: []}  # per side, this rank's
        self.counts = {True: 0, False: 0}  # images fed on this rank, per side (real=True)
        self.device = torch.device("cpu")

    @property
    def has_reals(self) -> bool:
        """Whether real images have been fed since the last ``reset(reals=True)`` (on this rank)."""
        return self.counts[True] > 0

    def to(self, device: torch.device | str) -> Evaluator:
        device = torch.device(device)
        if device != self.device:
            self.extractor.to(device)
            for metric in (self.fid, self.kid):
                if metric is not None:
                    metric.to(device)
            self._kid_feats = {k: [f.to(device) for f in v] for k, v in self._kid_feats.items()}
            self.device = device
        return self

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        """Add a batch of real (``real=True``) or translated images; the features are computed once."""
        images_u8 = images if images.dtype == torch.uint8 else to_uint8(images)  # (B, 3, H, W)
        self.to(images_u8.device)
        with torch.autocast(images_u8.device.type, enabled=False):
            feats = self.extractor(images_u8)  # (B, F)
        if self.fid is not None:
            self.fid.update(feats, real=real)
        if self.kid is not None:
            self._kid_feats[real].append(feats.double())
        self.counts[real] += images_u8.shape[0]

    def global_counts(self) -> tuple[int, int]:
        """(n_real, n_fake) over all ranks (a collective under ``torch.distributed``)."""
        counts = torch.tensor([self.counts[True], self.counts[False]], device=self.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        return int(counts[0]), int(counts[1])

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"fid", "kid", "kid_std"}`` (those enabled) over all ranks' images. Needs >= 2 images per side."""
        n_real, n_fake = self.global_counts()
        if n_real < 2 or n_fake < 2:
            raise RuntimeError(f"FID/KID need >= 2 images per side; got {n_fake} translated, {n_real} real")
        out = {}
        if self.fid is not None:
            # sum states, synced across ranks; FID is a distance: the round-off of the matrix square root can take
            # it a little below 0 (e.g. -0.0002 for one folder against itself), which is 0
            out["fid"] = self.fid.compute().clamp_min(0.0)
        if self.kid is not None:
            # one update per side and rank: torchmetrics gathers list states element by element, so every rank
            # must hold the same number of elements (ranks may have fed different numbers of batches)
            self.kid.reset()
            for real in (True, False):
                feats = self._kid_feats[real]
                packed = torch.cat(feats) if feats else torch.zeros(0, self.extractor.num_features,
                                                                     dtype=torch.float64, device=self.device)
                self.kid.update(packed, real=real)
            self.kid.subset_size = kid_subset_size(n_real, n_fake, self.kid_subset_size)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.kid_seed)
                out["kid"], out["kid_std"] = self.kid.compute()
            self.kid.reset()
        return out

    def reset(self, reals: bool = False) -> None:
        """Forget the translated images (and the real ones too with ``reals=True``)."""
        if self.fid is not None:
            self.fid.reset_real_features = reals
            self.fid.reset()
            self.fid.reset_real_features = False
        self._kid_feats[False] = []
        self.counts[False] = 0
        if reals:
            self._kid_feats[True] = []
            self.counts[True] = 0
