"""Loading network weights saved by cutlight or by the reference implementation."""

from __future__ import annotations

import os
import re

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


_BLOCK_KEY = re.compile(r"^model\.(\d+)\.conv_block\.(\d+)\.")
_FILT_KEY = re.compile(r"^model\.(\d+)\.filt$")
_WEIGHT_KEY = re.compile(r"^model\.(\d+)\.weight$")


def resnet_generator_kwargs(state_dict: dict[str, torch.Tensor]) -> dict:
    """``ResnetGenerator`` keyword arguments read from a state dict in the reference (CUT / CycleGAN) layout.

    Read from the keys and shapes (a ``module.`` prefix is accepted): ``input_nc`` and ``ngf`` from the first conv
    ``model.1.weight`` (ngf, input_nc, 7, 7); ``output_nc`` from the last conv; ``n_blocks`` from the
    ``model.N.conv_block.*`` entries; ``antialias`` / ``antialias_up`` from 3x3 / 4x4 ``filt`` buffers (without
    them the down-sampling is a strided conv and the up-sampling a transposed conv: CycleGAN); ``norm="batch"``
    when there are ``running_mean`` entries, else ``"instance"`` (instance norm and no norm have no entries: pass
    ``norm="none"`` yourself for the latter); ``dropout=0.5`` (the reference's value, inactive in eval mode) when the
    blocks' second conv sits at ``conv_block.6``.

    Raises:
        ValueError: the keys are not those of a ResNet generator (the message lists a few of them).
    """
    state = strip_prefix(state_dict)
    first = state.get("model.1.weight")
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    if first is None or first.dim() != 4 or not blocks:
        some = ", ".join(list(state)[:6]) or "none"
        raise ValueError(
            "not a ResNet generator state dict: expected 'model.1.weight' (ngf, input_nc, 7, 7) and "
            f"'model.N.conv_block.*' entries; found {len(state)} entries (first: {some})"
        )
    filt = [v.shape[-1] for k, v in state.items() if _FILT_KEY.match(k)]
    convs = {int(m.group(1)): v for k, v in state.items() if (m := _WEIGHT_KEY.match(k)) and v.dim() == 4}
    last = convs[max(convs)]  # (output_nc, ngf, 7, 7)
    kwargs = dict(
        input_nc=int(first.shape[1]),
        output_nc=int(last.shape[0]),
        ngf=int(first.shape[0]),
        n_blocks=len(blocks),
        norm="batch" if any(k.endswith(".running_mean") for k in state) else "instance",
        antialias=3 in filt,
        antialias_up=4 in filt,
    )
    if any(_BLOCK_KEY.match(k) and k.split(".")[3] == "6" for k in state):
        kwargs["dropout"] = 0.5
    return kwargs
