"""FID / KID for cutlight: uint8 conversion, metric construction, offline Inception weights.

Plain torch + torchmetrics (no Lightning, no Hydra). The metrics are torchmetrics'
``FrechetInceptionDistance`` / ``KernelInceptionDistance`` fed uint8 (B, 3, H, W) images; the Inception
network resizes to 299x299 itself.

Resize mode (``antialias``): ``False`` reproduces the original FID resize (TF1 bilinear, as in the TF
reference, pytorch-fid and torch-fidelity) and is what matches published numbers; ``True`` (torchmetrics'
default) uses ``F.interpolate(..., antialias=True)``, which gives different (usually lower) FID when the input
is not already 299x299. Report which one you used.

Weights are never downloaded here: they must already be at ``default_weights_path()`` (run
``make fid-weights`` / ``python -m cutlight.metrics.inception_weights``) or be passed as ``weights_path``.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance, NoTrainInceptionV3
from torchmetrics.image.kid import KernelInceptionDistance

__all__ = [
    "KID",
    "KID_SEED",
    "SharedFeatures",
    "TinyFeatureExtractor",
    "build_fid",
    "build_kid",
    "build_metrics",
    "inception_extractor",
    "kid_subset_size",
    "to_uint8",
]

INCEPTION_FEATURES = (64, 192, 768, 2048)


def to_uint8(x: torch.Tensor, rgb: bool = True) -> torch.Tensor:
    """Map generator outputs in [-1, 1] to uint8 images, rounding to nearest (not truncating).

    Args:
        x: float (B, C, H, W) with C in {1, 3, 4} (L, RGB, RGBA); values outside [-1, 1] are clamped.
        rgb: True (what FID/KID take): 3 channels, grayscale repeated, RGBA alpha-composited on white (as
            ``cutlight.data.load_image`` does for files read with 1 or 3 channels). False: keep the C channels
            (to write image files).
    Returns:
        uint8 (B, 3, H, W) if ``rgb`` else (B, C, H, W), on the same device.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"to_uint8 expects a (B, C, H, W) tensor with C in (1, 3, 4); got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"to_uint8 expects a float tensor in [-1, 1]; got dtype {x.dtype}")
    x = x.float().clamp(-1, 1)  # bf16/fp16 cannot hold (x + 1) * 127.5 exactly enough to round correctly
    if rgb and x.shape[1] == 4:
        alpha = (x[:, 3:] + 1) / 2  # (B, 1, H, W) in [0, 1]
        x = x[:, :3] * alpha + (1 - alpha)  # (B, 3, H, W): over white (+1)
    out = ((x + 1) * 127.5).round().to(torch.uint8)  # (B, C, H, W)
    return out.expand(-1, 3, -1, -1).contiguous() if rgb and out.shape[1] == 1 else out


def kid_subset_size(n_real: int, n_fake: int, default: int = 1000) -> int:
    """KID subset size: ``min(default, n_real, n_fake)``; raises ValueError when that is below 2."""
    size = min(default, n_real, n_fake)
    if size < 2:
        raise ValueError(
            f"KID needs at least 2 images on each side; got n_real={n_real}, n_fake={n_fake}, default={default}"
        )
    return size


def _weights_file(weights_path: str | os.PathLike | None) -> str:
    from .inception_weights import default_weights_path  # lazy: keeps `python -m ...inception_weights` clean

    path = os.fspath(weights_path) if weights_path is not None else os.fspath(default_weights_path())
    if not os.path.isfile(path):
        hint = (
            "Build them offline with `make fid-weights` (or `python -m cutlight.metrics.inception_weights"
            + ("" if weights_path is None else f" --dest {path}")
            + "`), or pass feature_extractor=... (any nn.Module with `num_features`) for a non-standard metric."
        )
        raise RuntimeError(f"FID Inception weights not found at {path}; nothing will be downloaded. {hint}")
    return path


def inception_extractor(
    feature: int = 2048, antialias: bool = True, weights_path: str | os.PathLike | None = None
) -> nn.Module:
    """torchmetrics' standard FID Inception-v3 from local weights: uint8 (B, 3, H, W) -> (B, feature) float32.

    ``antialias=False`` = original FID resize (matches papers); ``True`` = torchmetrics' default.
    """
    if feature not in INCEPTION_FEATURES:
        raise ValueError(f"unknown Inception feature size {feature!r}; expected one of {INCEPTION_FEATURES}")
    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(feature)],
        feature_extractor_weights_path=_weights_file(weights_path),
        antialias=antialias,
    )
    net.num_features = feature
    return net


def build_fid(
    feature: int = 2048,
    antialias: bool = True,
    weights_path: str | os.PathLike | None = None,
    feature_extractor: nn.Module | None = None,
) -> FrechetInceptionDistance:
    """FID metric keeping real statistics across ``reset()`` (``reset_real_features=False``).

    ``update(imgs, real)`` takes uint8 (B, 3, H, W) (see ``to_uint8``). With ``feature_extractor`` (an
    ``nn.Module`` with ``num_features``) Inception is not built and ``feature``/``antialias``/``weights_path``
    are ignored. Raises RuntimeError if the Inception weights are not available locally.
    """
    net = (
        feature_extractor
        if feature_extractor is not None
        else inception_extractor(feature, antialias, weights_path)
    )
    return FrechetInceptionDistance(feature=net, reset_real_features=False)


KID_SEED = 0  # KID draws random subsets; a fixed seed makes its value reproducible


class KID(KernelInceptionDistance):
    """torchmetrics' KID, made safe for DDP with uneven per-rank update counts, and reproducible.

    - Before syncing, each rank packs its feature lists into exactly one (N_rank, F) float64 tensor (empty
      allowed): torchmetrics all-gathers list states element by element (``dist_reduce_fx=None``), so ranks with
      different numbers of ``update`` calls (the unpadded validation sampler) would issue mismatched collectives.
    - ``compute`` draws its subsets from ``seed`` inside a forked RNG: the same subsets on every rank and every
      call, and the caller's random stream (e.g. training patch positions) is not advanced.
    - With ``clamp_subset``, ``subset_size`` is a maximum: ``compute`` uses min(subset_size, n_fake, n_real)
      over all ranks instead of raising when a side has fewer images.
    """

    def __init__(self, feature: nn.Module, subset_size: int, clamp_subset: bool = False, seed: int = KID_SEED):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer.*")
            super().__init__(feature=feature, subset_size=subset_size, reset_real_features=False)
        self.max_subset_size, self.clamp_subset, self.seed = subset_size, clamp_subset, seed

    def _pack(self) -> None:
        for name in ("real_features", "fake_features"):
            feats = getattr(self, name)
            if len(feats) != 1:
                empty = torch.zeros(0, self.inception.num_features, dtype=torch.float64, device=self.device)
                setattr(self, name, [torch.cat([f.double() for f in feats]) if feats else empty])

    def sync(self, *args, **kwargs) -> None:
        self._pack()
        super().sync(*args, **kwargs)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(kid_mean, kid_std)`` over all ranks' features."""
        if self.clamp_subset:
            n_real, n_fake = (sum(len(f) for f in getattr(self, n)) for n in ("real_features", "fake_features"))
            self.subset_size = min(self.max_subset_size, n_real, n_fake)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return super().compute()


def build_kid(
    subset_size: int,
    feature: int = 2048,
    antialias: bool = True,
    weights_path: str | os.PathLike | None = None,
    feature_extractor: nn.Module | None = None,
    clamp_subset: bool = False,
) -> KID:
    """KID metric (``reset_real_features=False``); ``compute()`` returns ``(kid_mean, kid_std)``.

    Each side needs at least ``subset_size`` images at ``compute()`` (see ``kid_subset_size``) unless
    ``clamp_subset`` (then ``subset_size`` is a maximum; see ``KID``). Other arguments as in ``build_fid``;
    unlike torchmetrics' own KID, ``antialias`` and ``weights_path`` apply.
    """
    if not isinstance(subset_size, int) or subset_size < 2:
        raise ValueError(f"KID subset_size must be an int >= 2; got {subset_size!r}")
    net = (
        feature_extractor
        if feature_extractor is not None
        else inception_extractor(feature, antialias, weights_path)
    )
    return KID(net, subset_size, clamp_subset=clamp_subset)


class TinyFeatureExtractor(nn.Module):
    """Small fixed random feature net for fast tests: uint8 (B, 3, H, W), any H, W -> float64 (B, num_features).

    Deterministic (weights from a seeded generator, float64 math); not a perceptual metric.
    """

    def __init__(self, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        g = torch.Generator().manual_seed(seed)
        self.register_buffer(
            "weight", torch.randn(num_features, 3, 4, 4, generator=g, dtype=torch.float64) / 4
        )

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W); got {imgs.dtype} {tuple(imgs.shape)}")
        x = imgs.to(torch.float64) / 127.5 - 1  # (B, 3, H, W) in [-1, 1]
        x = F.adaptive_avg_pool2d(x, 16)  # (B, 3, 16, 16)
        x = F.conv2d(x, self.weight, stride=4)  # (B, F, 4, 4)
        return torch.tanh(x).mean(dim=(2, 3))  # (B, F)


class SharedFeatures(nn.Module):
    """Wraps a feature extractor so that FID and KID updated with the same uint8 batch (the same tensor object)
    run the network once: the features of the last input are reused."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.num_features
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if self._last is not None and self._last[0] is imgs:
            return self._last[1]
        feats = self.net(imgs)
        self._last = (imgs, feats)
        return feats

    def clear(self) -> None:
        self._last = None


def build_metrics(
    fid: bool = True,
    kid: bool = True,
    kid_subset_size: int = 1000,
    feature: int = 2048,
    antialias: bool = True,
    weights_path: str | os.PathLike | None = None,
    feature_extractor: nn.Module | None = None,
) -> dict[str, FrechetInceptionDistance | KernelInceptionDistance]:
    """``{"fid": ..., "kid": ...}`` (those requested) sharing one feature network: update both with the same
    uint8 tensor and Inception runs once per batch. Arguments as in ``build_fid`` / ``build_kid``;
    ``kid_subset_size`` is a maximum (KID uses min(kid_subset_size, n_fake, n_real) at compute)."""
    if not (fid or kid):
        return {}
    net = feature_extractor if feature_extractor is not None else inception_extractor(feature, antialias, weights_path)
    shared = SharedFeatures(net)
    metrics: dict = {}
    if fid:
        metrics["fid"] = build_fid(feature_extractor=shared)
    if kid:
        metrics["kid"] = build_kid(kid_subset_size, feature_extractor=shared, clamp_subset=True)
    return metrics
