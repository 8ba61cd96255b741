"""Building blocks of the CUT networks: norm factory, blur-pool down/up-sampling, residual block.

Everything here is plain PyTorch. The blur filters are persistent buffers named ``filt`` so that state dicts
match the reference implementation's layout (see ``docs``/reference-checkpoints).

Some layers compute the reference's function with a faster formulation (equal up to fp32 round-off; see
``benchmarks/bench.py`` and ``tests/test_same_math.py``): instance norm as a group norm with one group per channel,
blur downsampling without a padded copy, blur upsampling as bilinear interpolation, and the last generator conv in
channels-last on CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_choice

NORMS = ("instance", "batch", "none")


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


def cpu_fast_path(x: torch.Tensor) -> bool:
    """Whether a CPU-only hand-written formulation may run on ``x``: eager CPU execution, not under
    ``torch.compile``, TorchScript tracing or ONNX export (those see the standard ops)."""
    return (x.device.type == "cpu" and not torch.compiler.is_compiling() and not torch.compiler.is_exporting()
            and not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export())


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


def _reflect_w_adjoint(g: torch.Tensor) -> torch.Tensor:
    """Adjoint of reflect-padding the last dim by 1 on both sides: (..., W + 2) -> (..., W)."""
    out = g[..., 1:-1].clone()
    out[..., 1:2] += g[..., :1]
    out[..., -2:-1] += g[..., -1:]
    return out


def _blur_down(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Depthwise stride-2 conv of reflect-padded ``x`` (B, C, H, W) with ``f`` (C, 1, 3, 3), without the padded
    copy: a zero-padded conv, plus the contributions of the reflected padding ring (row -1 = row 1, column -1 =
    column 1 and, for odd sizes, row H = row H-2, column W = column W-2; rows carry the reflected corners)."""
    c, (h, w) = x.shape[1], x.shape[-2:]
    y = F.conv2d(x, f, stride=2, padding=1, groups=c)  # (B, C, Ho, Wo)
    rows = [(0, 1, 0)] + ([(-1, h - 2, 2)] if h % 2 else [])  # (output row, input row, filter row)
    cols = [(0, 1, 0)] + ([(-1, w - 2, 2)] if w % 2 else [])
    for out, src, k in rows:
        r = F.pad(x[:, :, src: src + 1], (1, 1, 0, 0), mode="reflect")  # (B, C, 1, W + 2)
        y[:, :, out:][:, :, :1] += F.conv2d(r, f[:, :, k: k + 1], stride=(1, 2), groups=c)  # (B, C, 1, Wo)
    for out, src, k in cols:
        col = F.conv2d(x[..., src: src + 1], f[..., k: k + 1], stride=(2, 1), padding=(1, 0), groups=c)
        y[..., out:][..., :1] += col  # (B, C, Ho, 1)
    return y


def _conv_t(g: torch.Tensor, f: torch.Tensor, stride, padding, size) -> torch.Tensor:
    """Adjoint of the depthwise ``F.conv2d(., f, stride, padding)`` whose input had spatial ``size`` (H, W)."""
    extra = [n - ((m - 1) * s - 2 * p + k) for n, m, s, p, k in zip(size, g.shape[-2:], stride, padding, f.shape[-2:])]
    return F.conv_transpose2d(g, f, stride=stride, padding=padding, output_padding=extra, groups=g.shape[1])


def _blur_down_adjoint(gy: torch.Tensor, f: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Gradient of ``_blur_down`` with respect to its input: (B, C, Ho, Wo) -> ``shape`` (B, C, H, W)."""
    h, w = shape[-2:]
    gx = _conv_t(gy, f, (2, 2), (1, 1), (h, w))
    rows = [(0, 1, 0)] + ([(-1, h - 2, 2)] if h % 2 else [])
    cols = [(0, 1, 0)] + ([(-1, w - 2, 2)] if w % 2 else [])
    for out, src, k in rows:
        g = _conv_t(gy[:, :, out:][:, :, :1], f[:, :, k: k + 1], (1, 2), (0, 0), (1, w + 2))  # (B, C, 1, W + 2)
        gx[:, :, src: src + 1] += _reflect_w_adjoint(g)
    for out, src, k in cols:
        gx[..., src: src + 1] += _conv_t(gy[..., out:][..., :1], f[..., k: k + 1], (2, 1), (1, 0), (h, 1))
    return gx


class _BlurDownFunction(torch.autograd.Function):
    """``_blur_down`` with its exact adjoint as backward. The backward is built from differentiable ops, so double
    backward (e.g. an R1 penalty through a discriminator) works; checked with gradcheck and gradgradcheck."""

    @staticmethod
    def forward(ctx, x, f):
        f = f.to(x.dtype)
        ctx.save_for_backward(f)
        ctx.shape = x.shape
        with torch.autocast(x.device.type, enabled=False):  # in x's dtype, so backward sees matching dtypes
            return _blur_down(x, f)

    @staticmethod
    def backward(ctx, gy):
        (f,) = ctx.saved_tensors
        return _blur_down_adjoint(gy, f, ctx.shape), None


class BlurDownsample(nn.Module):
    """Anti-aliased stride-2 downsampling: reflect-pad 1, depthwise 3x3 binomial blur [1,2,1]^T[1,2,1]/16, stride 2.

    On CPU ``forward`` computes the same sums without a padded copy of the input (see ``_blur_down``) and
    back-propagates through the exact adjoint (about 2x faster than pad + conv there, forward and backward); on
    other devices, where it was not measured faster, and under ``torch.compile``, tracing and ONNX export it is
    pad + conv (see ``cpu_fast_path``). H, W >= 2.

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
        if not torch.jit.is_tracing() and (h < 2 or w < 2):  # (a traced check would freeze: exports bound H, W)
            raise ValueError(f"BlurDownsample needs H, W >= 2 (reflect padding); got {h}x{w}")
        if cpu_fast_path(x):
            return _BlurDownFunction.apply(x, self.filt)
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt.to(x.dtype), stride=2, groups=x.shape[1])


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
        if not cpu_fast_path(x):
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
