"""StyleGAN2-style generator and discriminator for SinCUT (single-image translation), in plain PyTorch.

The building blocks are those of StyleGAN2 (Karras et al. 2020) as used by the reference SinCUT networks:

* equalised learning rate: weights are stored N(0, 1) and multiplied by 1/sqrt(fan_in) at run time;
* fused leaky ReLU: ``leaky_relu(x + bias, 0.2) * sqrt(2)`` (the bias lives in the activation);
* FIR filtering ("upfirdn2d") with the binomial kernel [1, 3, 3, 1], written here as a zero-padded depthwise
  ``conv2d`` (blur) next to a strided ``conv2d`` (downsampling) or a stride-2 ``conv_transpose2d`` (upsampling);
  no custom CUDA ops, so everything runs on any device and supports double backward (R1 penalty);
* residual blocks ``(conv2(conv1(x)) + skip(x)) / sqrt(2)``;
* a demodulated "modulated" convolution whose style is a constant vector of ones (no mapping network), plus
  per-pixel noise injection.

State-dict keys and shapes match the reference checkpoints (``encoder.convs.N``, ``decoder.convs.N``, ``convs.N``,
``final_conv``, ``final_linear``; blur kernels are persistent buffers named ``kernel``). The networks are not
initialised by xavier: weights start N(0, 1), biases and noise strengths 0.

Sizes (one downsampling, kernel [1, 3, 3, 1]): the encoder maps H to floor(H / 2) and the upsampling block
maps h to exactly 2h, so the generator returns its input size for any even H and W (``size_multiple`` = 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .protocol import LayeredGenerator

# Channel widths of StyleGAN2 by resolution, before the ngf / ndf multiplier.
BASE_CHANNELS = {4: 4096, 8: 2048, 16: 1024, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
BLUR_KERNEL = (1, 3, 3, 1)
SQRT2 = math.sqrt(2.0)


def make_blur_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """Separable FIR kernel: outer product of ``taps`` with itself, normalised to sum ``gain``. (K, K)."""
    k = torch.tensor([float(t) for t in taps])
    k = k[None, :] * k[:, None]  # (K, K)
    return k / k.sum() * gain


def blur(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """upfirdn2d with up = down = 1: zero-pad ``x`` (B, C, H, W) by ``pad`` = (before, after) on both spatial
    axes, then convolve every channel with ``kernel`` (K, K) (a true convolution: the kernel is flipped).

    Returns (B, C, H + before + after - K + 1, W + before + after - K + 1).
    """
    c = x.shape[1]
    weight = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)  # (C, 1, K, K) depthwise
    before, after = pad
    if before == after:
        return F.conv2d(x, weight, padding=before, groups=c)
    return F.conv2d(F.pad(x, (before, after, before, after)), weight, groups=c)


class Blur(nn.Module):
    """FIR blur with a persistent ``kernel`` buffer (K, K); ``gain`` = upsampling factor ** 2 after an upsampling."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain))
        self.pad = (int(pad[0]), int(pad[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return blur(x, self.kernel, self.pad)

    def extra_repr(self) -> str:
        return f"pad={self.pad}"


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """``leaky_relu(x + bias, negative_slope) * scale``; ``bias`` broadcasts against ``x`` ((1, C, 1, 1) or (C,))."""
    if bias is not None:
        x = x + bias.to(x.dtype)
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) + gain sqrt(2); the bias parameter has shape (1, C, 1, 1) (none if ``bias=False``)."""

    def __init__(self, channels: int, bias: bool = True):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class EqualConv2d(nn.Module):
    """Conv2d with equalised learning rate: ``weight`` (out, in, k, k) ~ N(0, 1), used as weight / sqrt(in * k * k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        out, inp, k, _ = self.weight.shape
        return f"{inp}, {out}, kernel_size={k}, stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: ``weight`` (out, in) ~ N(0, 1), used as weight / sqrt(in);
    ``activate`` applies the fused leaky ReLU with the layer's own bias (out,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = 1.0 / math.sqrt(in_features)
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias)
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, activate={self.activate}"


class ConvLayer(nn.Sequential):
    """[Blur] + EqualConv2d + [FusedLeakyReLU] (the bias sits in the activation when there is one).

    ``downsample``: blur then a stride-2 conv without padding (H -> floor(H / 2) for H >= 2). Otherwise a
    stride-1 conv with ``kernel_size // 2`` zero padding (same size).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR_KERNEL, bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            p = (len(blur_kernel) - 2) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """``(conv2(conv1(x)) + skip(x)) / sqrt(2)``: two 3x3 conv layers (the second one downsamples when asked) and a
    1x1 bias-free skip conv when the width changes or the block downsamples (identity otherwise)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=downsample, blur_kernel=blur_kernel)
        if in_channels != out_channels or downsample:
            self.skip = ConvLayer(in_channels, out_channels, 1, downsample=downsample, blur_kernel=blur_kernel,
                                  bias=False, activate=False)
        else:
            self.skip = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2


class NoiseInjection(nn.Module):
    """``x + weight * noise``, noise (B, 1, H, W) ~ N(0, 1) drawn from torch's RNG on ``x``'s device (unless given);
    ``weight`` (1,) starts at 0."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            b, _, h, w = x.shape
            noise = x.new_empty(b, 1, h, w).normal_()
        return x + self.weight.to(x.dtype) * noise


class ModulatedConv2d(nn.Module):
    """StyleGAN2's weight-demodulated convolution with a constant style of ones (the reference SinCUT decoder has
    no mapping network), so every image of the batch uses the same demodulated weight and a plain (not grouped)
    convolution computes it.

    ``weight`` (1, out, in, k, k) ~ N(0, 1); effective weight w = weight / sqrt(in * k * k), demodulated per output
    channel: w / sqrt(sum_{in, k, k} w^2 + 1e-8).
    ``upsample``: stride-2 transposed conv (no padding, H -> 2H + 1) then a blur with gain 4 and padding 1 on both
    sides (-> 2H): the output is exactly twice the input size for any H. Otherwise same-size conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, demodulate: bool = True,
                 upsample: bool = False, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate, self.upsample = demodulate, upsample
        self.padding = kernel_size // 2
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor**2)

    def effective_weight(self) -> torch.Tensor:
        """(out, in, k, k) demodulated weight (style = 1 for every input channel)."""
        w = self.weight[0] * self.scale  # (out, in, k, k)
        if self.demodulate:
            w = w * torch.rsqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        return w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.effective_weight()
        if self.upsample:
            out = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)  # weight (in, out, k, k); (B, out, 2H+1, 2W+1)
            return self.blur(out)  # (B, out, 2H, 2W)
        return F.conv2d(x, w, padding=self.padding)

    def extra_repr(self) -> str:
        _, out, inp, k, _ = self.weight.shape
        return f"{inp}, {out}, kernel_size={k}, upsample={self.upsample}, demodulate={self.demodulate}"


class StyledConv(nn.Module):
    """ModulatedConv2d + NoiseInjection + FusedLeakyReLU (keys ``conv.*``, ``noise.weight``, ``activate.bias``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, upsample: bool = False,
                 blur_kernel: Sequence[float] = BLUR_KERNEL, demodulate: bool = True, inject_noise: bool = True):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.inject_noise = inject_noise
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        if self.inject_noise:
            out = self.noise(out)
        return self.activate(out)


def _pow2_resolution(size: int) -> int:
    return 2 ** round(math.log2(size))


class StyleGAN2Generator(LayeredGenerator):
    """SinCUT's generator: a fully convolutional StyleGAN2-style encoder-decoder (the reference's "stylegan2" netG).

    Layers (indices are the ``nce_layers`` / ``layers`` indices; the encoder's come first):
        encoder.convs: 0 identity (the input image), 1 1x1 conv layer from ``input_nc``, then ``num_downsampling``
            downsampling residual blocks, then ``n_blocks // 2`` residual blocks;
        decoder.convs (index continues after the encoder): ``n_blocks // 2`` residual blocks, ``num_downsampling``
            upsampling styled convs (3x3, demodulated, noise), then a 1x1 conv layer to ``output_nc`` with its fused
            leaky ReLU (the output is not squashed to [-1, 1]).

    Widths: the working resolution r = 2 ** round(log2(min(load_size, crop_size))) sets
    ``channels[res] = min(512, round(BASE_CHANNELS[res] * ngf / 32))``; the encoder starts at ``channels[r]`` and
    each downsampling moves to the next lower resolution's width. At the SinCUT defaults (ngf 10, crop 64, one
    downsampling, 6 blocks): 80 -> 160 channels, 3,068,404 parameters, 39 state-dict entries.

    Input (B, input_nc, H, W) with H and W divisible by ``size_multiple`` = 2 ** num_downsampling, any size;
    output (B, output_nc, H, W). The noise is drawn from torch's RNG at every call (train and eval).
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 10,
        n_blocks: int = 6,
        load_size: int = 1024,
        crop_size: int = 64,
        num_downsampling: int = 1,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        inject_noise: bool = True,
    ):
        super().__init__()
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf),
                            ("load_size", load_size), ("crop_size", crop_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if n_blocks < 0 or num_downsampling < 0:
            raise ValueError(f"n_blocks and num_downsampling must be >= 0, got {n_blocks} and {num_downsampling}")
        res = _pow2_resolution(min(load_size, crop_size))
        low = res // 2**num_downsampling
        if res > 1024 or low < 4:
            raise ValueError(
                f"working resolution {res} (from load_size {load_size}, crop_size {crop_size}) with "
                f"{num_downsampling} downsampling(s) needs resolutions in 4..1024; got {low}..{res}"
            )
        channels = {r: min(512, round(c * ngf / 32)) for r, c in BASE_CHANNELS.items()}
        if min(channels[r] for r in channels if low <= r <= res) < 1:
            raise ValueError(f"ngf {ngf} gives zero channels at some resolution in {low}..{res}; increase ngf")
        self.input_nc, self.output_nc, self.ngf = input_nc, output_nc, ngf
        self.size_multiple = 2**num_downsampling
        self.channels = {r: channels[r] for r in channels if low <= r <= res}

        enc: list[nn.Module] = [nn.Identity(), ConvLayer(input_nc, channels[res], 1)]
        r = res
        for _ in range(num_downsampling):
            enc.append(ResBlock(channels[r], channels[r // 2], downsample=True, blur_kernel=blur_kernel))
            r //= 2
        enc += [ResBlock(channels[r], channels[r], blur_kernel=blur_kernel) for _ in range(n_blocks // 2)]
        dec: list[nn.Module] = [ResBlock(channels[r], channels[r], blur_kernel=blur_kernel)
                                for _ in range(n_blocks // 2)]
        for _ in range(num_downsampling):
            dec.append(StyledConv(channels[r], channels[r * 2], 3, upsample=True, blur_kernel=blur_kernel,
                                  inject_noise=inject_noise))
            r *= 2
        dec.append(ConvLayer(channels[r], output_nc, 1))
        self.encoder = nn.Module()
        self.encoder.convs = nn.Sequential(*enc)
        self.decoder = nn.Module()
        self.decoder.convs = nn.Sequential(*dec)
        self.layer_channels = [input_nc] + [_out_channels(layer) for layer in [*enc, *dec][1:]]  # per layer

    def numbered_layers(self) -> list[nn.Module]:
        """All layers in order: encoder then decoder (indices as in ``nce_layers``)."""
        return [*self.encoder.convs, *self.decoder.convs]

    @property
    def num_encoder_layers(self) -> int:
        return len(self.encoder.convs)


def _out_channels(layer: nn.Module) -> int:
    """Output width of a generator layer (ConvLayer, ResBlock or StyledConv)."""
    if isinstance(layer, ResBlock):
        layer = layer.conv2
    if isinstance(layer, StyledConv):
        return layer.conv.weight.shape[1]
    return next(m for m in layer.modules() if isinstance(m, EqualConv2d)).weight.shape[0]


class StyleGAN2Discriminator(nn.Module):
    """SinCUT's discriminator (the reference's "stylegan2" netD): one real/fake logit per ``size`` x ``size`` image.

    A 1x1 conv layer from ``input_nc`` at ``size``, downsampling residual blocks down to 4x4, a 3x3 conv layer, then
    equalised linear layers (16 * channels[4] -> channels[4] with fused leaky ReLU, -> 1). No minibatch-stddev
    layer and no normalisation, so every image is scored on its own (batching fakes and reals is exact).
    Widths: ``channels[res] = min(384, int(BASE_CHANNELS[res] * ndf / 64))``; at ndf 8, size 64: 32, 64, 128,
    256, 384; 5,885,473 parameters, 36 state-dict entries.

    Input (B, input_nc, size, size); output (B, 1) logits.
    """

    def __init__(self, input_nc: int = 3, ndf: int = 8, size: int = 64, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        if size < 4 or size > 1024 or size & (size - 1):
            raise ValueError(f"size must be a power of two in 4..1024, got {size}")
        channels = {r: min(384, int(c * ndf / 64)) for r, c in BASE_CHANNELS.items()}
        if min(channels[r] for r in channels if r <= size) < 1:
            raise ValueError(f"ndf {ndf} gives zero channels at some resolution up to {size}; increase ndf")
        self.input_nc, self.size = input_nc, size
        convs: list[nn.Module] = [ConvLayer(input_nc, channels[size], 1)]
        r = size
        while r > 4:
            convs.append(ResBlock(channels[r], channels[r // 2], downsample=True, blur_kernel=blur_kernel))
            r //= 2
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(channels[4], channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activate=True),
            EqualLinear(channels[4], 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.input_nc, self.size, self.size):
            raise ValueError(
                f"discriminator expects input of shape (B, {self.input_nc}, {self.size}, {self.size}); "
                f"got {tuple(x.shape)}"
            )
        out = self.final_conv(self.convs(x))  # (B, C4, 4, 4)
        return self.final_linear(out.flatten(1))  # (B, 1)
