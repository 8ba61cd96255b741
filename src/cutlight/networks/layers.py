"""Building blocks of the CUT networks: norm factory, blur-pool down/up-sampling, residual block.

Everything here is plain PyTorch. The blur filters are persistent buffers named ``filt`` so that state dicts
match the reference implementation's layout (see ``docs``/reference-checkpoints).

Some layers compute the reference's function with a faster formulation (equal up to fp32 round-off; see
``benchmarks/bench.py`` and ``tests/test_same_math.py``): instance norm as a group norm with one group per channel,
blur downsampling without a padded copy, blur upsampling as bilinear interpolation, the last generator conv in
channels-last on CPU, and (on CPU) the residual blocks' reflect-pad + 3x3 conv as a zero-padded conv plus the
padding ring's contribution (``reflect_conv3x3``).
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

    ``forward`` computes the same sums without a padded copy of the input (see ``_blur_down``) and back-propagates
    through the exact adjoint; about 2x faster than pad + conv on CPU, forward and backward. H, W >= 2.

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
        return _BlurDownFunction.apply(x, self.filt)


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


def _windows(strips: torch.Tensor) -> torch.Tensor:
    """(B, C, K, L + 2) -> (B, K, C * 3, L): the three taps of every position along the last dim."""
    b, c, k, n = strips.shape
    return strips.unfold(-1, 3, 1).permute(0, 2, 1, 4, 3).reshape(b, k, c * 3, n - 2)


def _windows_adjoint(g: torch.Tensor, c: int) -> torch.Tensor:
    """Adjoint of ``_windows``: (B, K, C * 3, L) -> (B, C, K, L + 2)."""
    b, k, _, n = g.shape
    g = g.reshape(b, k, c, 3, n).permute(0, 2, 1, 3, 4)  # (B, C, K, 3, L)
    out = g.new_zeros(b, c, k, n + 2)
    for t in range(3):
        out[..., t:t + n] += g[..., t, :]
    return out


def _ring_inputs(x: torch.Tensor):
    """The ring of x's 1-pixel reflect padding as strips: rows (B, C, 2, W + 2) = reflected rows 1 and H-2 (they
    carry the corners), and columns (B, C, 2, H + 2) = columns 1 and W-2, zero-padded along H."""
    h, w = x.shape[-2:]
    rows = F.pad(torch.stack([x[:, :, 1], x[:, :, h - 2]], dim=2), (1, 1, 0, 0), mode="reflect")
    cols = F.pad(torch.stack([x[:, :, :, 1], x[:, :, :, w - 2]], dim=2), (1, 1))
    return rows, cols


def _ring_kernels(weight: torch.Tensor):
    """(C_out, C_in, 3, 3) -> kernel rows 0 and 2 as (2, C_out, C_in * 3), kernel columns 0 and 2 likewise."""
    co, ci = weight.shape[:2]
    rows = torch.stack([weight[:, :, 0], weight[:, :, 2]]).reshape(2, co, ci * 3)
    cols = torch.stack([weight[..., 0], weight[..., 2]]).reshape(2, co, ci * 3)
    return rows, cols


class _ReflectConv3x3(torch.autograd.Function):
    """3x3 stride-1 conv of the 1-pixel reflect-padded input, computed as a zero-padded conv plus the ring's
    contribution (two batched matmuls over the ring's rows and columns), with a hand-written backward: no padded
    copy of the input and no full-size zero gradient is built."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        h, w = x.shape[-2:]
        y = F.conv2d(x, weight, bias, padding=1)  # (B, C_out, H, W), zero padding
        (s_rows, s_cols), (k_rows, k_cols) = _ring_inputs(x), _ring_kernels(weight)
        u_rows, u_cols = _windows(s_rows), _windows(s_cols)  # (B, 2, C_in*3, W), (B, 2, C_in*3, H)
        r = torch.matmul(k_rows, u_rows)  # (B, 2, C_out, W): output rows 0 and H-1
        c = torch.matmul(k_cols, u_cols)  # (B, 2, C_out, H): output columns 0 and W-1
        y[:, :, 0] += r[:, 0]
        y[:, :, h - 1] += r[:, 1]
        y[:, :, :, 0] += c[:, 0]
        y[:, :, :, w - 1] += c[:, 1]
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad
        h, w = x.shape[-2:]
        co, ci = weight.shape[:2]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            gy, x, weight, [co] if ctx.has_bias else None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
            [need_x, need_w, need_b and ctx.has_bias])
        g_r = torch.stack([gy[:, :, 0], gy[:, :, h - 1]], dim=1)  # (B, 2, C_out, W)
        g_c = torch.stack([gy[:, :, :, 0], gy[:, :, :, w - 1]], dim=1)  # (B, 2, C_out, H)
        if need_w:
            u_rows, u_cols = (_windows(s) for s in _ring_inputs(x))
            gk_rows = torch.matmul(g_r, u_rows.transpose(-1, -2)).sum(0)  # (2, C_out, C_in*3)
            gk_cols = torch.matmul(g_c, u_cols.transpose(-1, -2)).sum(0)
            gk_rows, gk_cols = gk_rows.reshape(2, co, ci, 3), gk_cols.reshape(2, co, ci, 3)
            gw[:, :, 0] += gk_rows[0]
            gw[:, :, 2] += gk_rows[1]
            gw[..., 0] += gk_cols[0]
            gw[..., 2] += gk_cols[1]
        if need_x:
            k_rows, k_cols = _ring_kernels(weight)
            gs_rows = _windows_adjoint(torch.matmul(k_rows.transpose(-1, -2), g_r), ci)  # (B, C_in, 2, W + 2)
            gs_cols = _windows_adjoint(torch.matmul(k_cols.transpose(-1, -2), g_c), ci)  # (B, C_in, 2, H + 2)
            gs_rows = _reflect_w_adjoint(gs_rows)  # (B, C_in, 2, W)
            gx[:, :, 1] += gs_rows[:, :, 0]
            gx[:, :, h - 2] += gs_rows[:, :, 1]
            gs_cols = gs_cols[..., 1:-1]  # zero padding along H: its adjoint drops the ends
            gx[:, :, :, 1] += gs_cols[:, :, 0]
            gx[:, :, :, w - 2] += gs_cols[:, :, 1]
        return gx, gw, gb


def reflect_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), weight, bias)`` for 3x3 kernels, without the padded copy
    (see ``_ReflectConv3x3``); equal up to fp round-off. Under autocast it computes in the autocast dtype, as
    ``F.conv2d`` would. (B, C_in, H, W) -> (B, C_out, H, W); H, W >= 2."""
    if tuple(weight.shape[-2:]) != (3, 3) or min(x.shape[-2:]) < 2:
        raise ValueError(f"reflect_conv3x3 needs a 3x3 kernel and H, W >= 2; got kernel "
                         f"{tuple(weight.shape[-2:])}, input {tuple(x.shape[-2:])}")
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(device, enabled=False):
        return _ReflectConv3x3.apply(x, weight, bias)


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
        layers, h, i = self.conv_block, x, 0
        fuse = x.device.type == "cpu" and not torch.compiler.is_compiling()  # measured on CPU only
        while i < len(layers):
            if fuse and isinstance(layers[i], nn.ReflectionPad2d):  # pad + 3x3 conv without the padded copy
                conv = layers[i + 1]
                h = reflect_conv3x3(h, conv.weight, conv.bias)
                i += 2
            else:
                h = layers[i](h)
                i += 1
        return x + h
