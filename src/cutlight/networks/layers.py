"""Building blocks of the CUT networks: norm factory, blur-pool down/up-sampling, residual block.

Everything here is plain PyTorch. The blur filters are persistent buffers named ``filt`` so that state dicts
match the reference implementation's layout (see ``docs``/reference-checkpoints).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("instance", "batch", "none")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise raise a ValueError naming both."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(choices)}")
    return value


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``instance`` (no affine, no running stats), ``batch`` or ``none``."""
    check_choice("norm", norm, NORMS)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    """Convolutions followed by batch norm carry no bias (the norm's shift replaces it)."""
    return norm != "batch"


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 1, depthwise 3x3 binomial blur [1,2,1]^T[1,2,1]/16, stride 2.

    (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)).
    """

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = a[:, None] * a[None, :]
        filt = filt / filt.sum()
        self.channels = channels
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))  # (C, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=self.channels)


class BlurUpsample(nn.Module):
    """Anti-aliased x2 upsampling: replicate-pad 1, depthwise transposed conv (stride 2) with the 4x4 filter
    [1,3,3,1]^T[1,3,3,1] normalised to sum 4, cropped by one pixel on each side.

    (B, C, H, W) -> (B, C, 2H, 2W).
    """

    def __init__(self, channels: int):
        super().__init__()
        a = torch.tensor([1.0, 3.0, 3.0, 1.0])
        filt = a[:, None] * a[None, :]
        filt = filt / filt.sum() * 4.0
        self.channels = channels
        self.register_buffer("filt", filt[None, None].repeat(channels, 1, 1, 1))  # (C, 1, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")  # (B, C, H+2, W+2)
        y = F.conv_transpose2d(x, self.filt, stride=2, padding=2, groups=self.channels)  # (B, C, 2H+2, 2W+2)
        return y[:, :, 1:-1, 1:-1]


class ResnetBlock(nn.Module):
    """x + [pad, conv3x3, norm, ReLU, (dropout), pad, conv3x3, norm](x); keys ``conv_block.{1,5}`` by default."""

    def __init__(self, dim: int, norm: str = "instance", dropout: float = 0.0):
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            make_norm(norm, dim),
            nn.ReLU(True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=bias),
            make_norm(norm, dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)
