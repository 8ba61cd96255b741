"""Building blocks of the CUT networks: norm factory, blur-pool down/up-sampling, residual block.

Everything here is plain PyTorch. The blur filters are persistent buffers named ``filt`` so that state dicts
match the reference implementation's layout (see ``docs``/reference-checkpoints).

Some layers compute the reference's function with a faster formulation (equal up to fp32 round-off; see
``cutlight.bench`` and ``tests/test_same_math.py``): instance norm as a group norm with one group per channel,
the blur upsampling as bilinear interpolation.
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


class InstanceNorm(nn.InstanceNorm2d):
    """Instance norm without affine parameters or running statistics, (B, C, H, W) -> same shape.

    Computed as ``group_norm`` with one group per channel: the same normalisation (biased variance, ``eps``
    inside the square root), about twice as fast on CPU as ``instance_norm``, whose output is a view (an
    in-place ReLU on it makes autograd copy the whole base tensor). It also keeps the gradient right for
    channels-last tensors, where torch 2.14's CPU ``instance_norm`` backward is wrong at batch size 1.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__(num_features, eps=eps, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_features, eps=self.eps)


def make_norm(norm: str, channels: int) -> nn.Module:
    """Normalisation layer by name: ``instance`` (no affine, no running stats), ``batch`` or ``none``."""
    check_choice("norm", norm, NORMS)
    if norm == "instance":
        return InstanceNorm(channels)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    """Convolutions followed by batch norm carry no bias (the norm's shift replaces it)."""
    return norm != "batch"


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 1, depthwise 3x3 binomial blur [1,2,1]^T[1,2,1]/16, stride 2.

    ``forward`` runs the blur with zero padding and adds the reflected border's contribution from thin row and
    column convolutions: the same sums without materialising (and back-propagating through) a padded copy of
    the input, about 1.7x faster on CPU. H, W >= 2 (as reflect padding requires).

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
        h, w = x.shape[-2:]
        if h < 2 or w < 2:
            raise ValueError(f"BlurDownsample needs H, W >= 2 (reflect padding); got {h}x{w}")
        f, c = self.filt, self.channels
        y = F.conv2d(x, f, stride=2, padding=1, groups=c)  # (B, C, Ho, Wo) with zero padding
        # The padding ring differs from zero at row -1 (= row 1), column -1 (= column 1) and, for odd sizes, at
        # row H (= row H-2) and column W (= column W-2). Rows carry their reflected corners; columns do not.
        y[:, :, :1] += F.conv2d(F.pad(x[:, :, 1:2], (1, 1, 0, 0), mode="reflect"), f[:, :, :1], stride=(1, 2),
                                groups=c)  # (B, C, 1, Wo)
        if h % 2:
            y[:, :, -1:] += F.conv2d(F.pad(x[:, :, h - 2: h - 1], (1, 1, 0, 0), mode="reflect"), f[:, :, 2:],
                                     stride=(1, 2), groups=c)
        y[:, :, :, :1] += F.conv2d(x[..., 1:2], f[..., :1], stride=(2, 1), padding=(1, 0), groups=c)  # (B, C, Ho, 1)
        if w % 2:
            y[:, :, :, -1:] += F.conv2d(x[..., w - 2: w - 1], f[..., 2:], stride=(2, 1), padding=(1, 0), groups=c)
        return y


class BlurUpsample(nn.Module):
    """Anti-aliased x2 upsampling: replicate-pad 1, depthwise transposed conv (stride 2) with the 4x4 filter
    [1,3,3,1]^T[1,3,3,1] normalised to sum 4, cropped by one pixel on each side.

    Per axis that gives out[2i] = (x[i-1] + 3 x[i]) / 4 and out[2i+1] = (3 x[i] + x[i+1]) / 4 with edge
    replication, which is exactly bilinear interpolation (align_corners=False), so ``forward`` calls
    ``F.interpolate`` (2-3x faster on CPU, less memory). ``filt`` stays as a buffer for the state-dict layout.

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
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)



class ChannelsLastConv2d(nn.Conv2d):
    """``nn.Conv2d`` that computes in channels-last layout on CPU and returns a contiguous (NCHW) output.

    For convolutions with few output channels (the generator's last 7x7 conv, ngf -> 3) oneDNN is about 1.7x
    faster in channels-last (forward + backward) on CPU. Elsewhere it is a plain ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            return super().forward(x)
        return super().forward(x.contiguous(memory_format=torch.channels_last)).contiguous()


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
