"""Loading network weights saved by cutlight or by the reference implementation."""

from __future__ import annotations

import os

import torch
from torch import nn


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key that has it (DataParallel / DDP checkpoints)."""
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def load_network_weights(
    net: nn.Module, source: str | os.PathLike | dict[str, torch.Tensor], strict: bool = True
) -> nn.Module:
    """Load a plain state dict (a path or a dict) into ``net``, accepting a ``module.`` prefix. Returns ``net``."""
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"no weights file at {os.fspath(source)!r}")
        state = torch.load(source, map_location="cpu", weights_only=True)
    else:
        state = source
    if not isinstance(state, dict):
        raise ValueError(f"expected a state dict (dict of tensors), got {type(state).__name__}")
    state = dict(state)
    state.pop("_metadata", None)
    net.load_state_dict(strip_prefix(state), strict=strict)
    return net
