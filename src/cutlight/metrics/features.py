"""Image features for FID / KID: the one float -> uint8 conversion, and feature extractors.

The standard extractor is torchmetrics' FID Inception-v3 loaded from local weights (never downloaded here; see
``cutlight.metrics.inception_weights``). Resize mode (``antialias``): ``False`` reproduces the original FID resize
(TF1 bilinear, as in the TF reference, pytorch-fid and torch-fidelity) and matches published numbers; ``True``
(torchmetrics' default) gives different (usually lower) FID when inputs are not already 299x299.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..checkpoint import read_checkpoint
from ..specs import locate

INCEPTION_FEATURES = (64, 192, 768, 2048)


def to_uint8(x: torch.Tensor, rgb: bool = True) -> torch.Tensor:
    """Map generator outputs in [-1, 1] to uint8 images, rounding to nearest (not truncating). The one float ->
    uint8 conversion of the package (metrics, image grids, translation).

    Args:
        x: float (B, C, H, W) with C in {1, 3, 4} (L, RGB, RGBA); values outside [-1, 1] are clamped.
        rgb: True (what FID/KID take): 3 channels, grayscale repeated, RGBA alpha-composited on white (as
            ``cutlight.data.load_image`` does for files read with 1 or 3 channels). False: keep the C channels
            (to write image files).
    Returns:
        uint8 (B, 3, H, W) if ``rgb`` else (B, C, H, W), on the same device.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3, 4):
        raise ValueError(f"to_uint8 expects a (B, C, H, W) tensor with C in (1, 3, 4); got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"to_uint8 expects a float tensor in [-1, 1]; got dtype {x.dtype}")
    x = x.float().clamp(-1, 1)  # bf16/fp16 cannot hold (x + 1) * 127.5 exactly enough to round correctly
    if rgb and x.shape[1] == 4:
        alpha = (x[:, 3:] + 1) / 2  # (B, 1, H, W) in [0, 1]
        x = x[:, :3] * alpha + (1 - alpha)  # (B, 3, H, W): over white (+1)
    out = ((x + 1) * 127.5).round().to(torch.uint8)  # (B, C, H, W)
    return out.expand(-1, 3, -1, -1).contiguous() if rgb and out.shape[1] == 1 else out


def _weights_file(weights_path: str | os.PathLike | None) -> str:
    from .inception_weights import default_weights_path  # lazy: keeps `python -m ...inception_weights` clean

    path = os.fspath(weights_path) if weights_path is not None else os.fspath(default_weights_path())
    if not os.path.isfile(path):
        hint = (
            "Build them offline with `make fid-weights` (or `python -m cutlight.metrics.inception_weights"
            + ("" if weights_path is None else f" --dest {path}")
            + "`), or select another feature extractor (val_metrics.extractor: {_target_: ...})."
        )
        raise RuntimeError(f"FID Inception weights not found at {path}; nothing will be downloaded. {hint}")
    return path


def inception_extractor(
    feature: int = 2048, antialias: bool = True, weights_path: str | os.PathLike | None = None
) -> nn.Module:
    """torchmetrics' standard FID Inception-v3 from local weights: uint8 (B, 3, H, W) -> (B, feature) float32.

    ``feature`` picks the layer (64, 192, 768 or 2048; the smaller ones stop the network early).
    Raises RuntimeError if the weights are not available locally.
    """
    from torchmetrics.image.fid import NoTrainInceptionV3

    if feature not in INCEPTION_FEATURES:
        raise ValueError(f"unknown Inception feature size {feature!r}; expected one of {INCEPTION_FEATURES}")
    path = _weights_file(weights_path)
    read_checkpoint(path)  # torch-fidelity loads it with weights_only=False: a pickle of more than tensors is refused
    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[str(feature)],
        feature_extractor_weights_path=path,
        antialias=antialias,
    )
    net.num_features = feature
    return net


def build_extractor(
    spec: str | dict | nn.Module | None = "inception",
    feature: int = 2048,
    antialias: bool = True,
    weights_path: str | os.PathLike | None = None,
) -> nn.Module:
    """A feature extractor (uint8 (B, 3, H, W) -> (B, num_features)) from a spec.

    ``spec``: ``"inception"`` / ``None`` (the standard FID network, with ``feature``, ``antialias``,
    ``weights_path``); an ``nn.Module`` with a ``num_features`` attribute; or a dict ``{"_target_": "pkg.Class",
    **kwargs}`` naming such a module class (resolved with importlib, no Hydra needed).
    """
    if spec is None or spec == "inception":
        return inception_extractor(feature, antialias, weights_path)
    if isinstance(spec, nn.Module):
        net = spec
    elif isinstance(spec, dict) and "_target_" in spec:
        kwargs = {k: v for k, v in spec.items() if k != "_target_"}
        net = locate(spec["_target_"])(**kwargs)
    else:
        raise ValueError(f"unknown feature extractor {spec!r}; expected 'inception', an nn.Module or "
                         "a dict with a '_target_' class path")
    if not isinstance(getattr(net, "num_features", None), int):
        raise ValueError(f"feature extractor {type(net).__name__} needs an int attribute 'num_features'")
    return net
