"""PatchGAN discriminator (the paper's D): a 70x70-receptive-field classifier of overlapping patches."""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_int
from .init import init_weights
from .layers import BlurDownsample, conv_bias, make_norm


class PatchDiscriminator(nn.Module):
    """``n_layers``-layer PatchGAN. (B, input_nc, H, W) -> (B, 1, H', W') real/fake logits per patch
    (1x30x30 for a 256x256 input with the defaults).

    Args:
        input_nc: image channels. ndf: filters of the first layer. n_layers: downsampling conv layers (3 = 70x70).
        norm: ``instance`` / ``batch`` / ``none``. antialias: blur-pool downsampling (else strided convs).
    """

    def __init__(
        self,
        input_nc: int = 3,
        ndf: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
        antialias: bool = True,
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ):
        super().__init__()
        for name, value in (("n_layers", n_layers), ("input_nc", input_nc), ("ndf", ndf)):
            check_int(name, value, low=1)
        self.input_nc = input_nc
        bias = conv_bias(norm)
        kw, padw = 4, 1
        if antialias:
            layers: list[nn.Module] = [
                nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=1, padding=padw),
                nn.LeakyReLU(0.2, True),
                BlurDownsample(ndf),
            ]
        else:
            layers = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            if antialias:
                layers += [
                    nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw, bias=bias),
                    make_norm(norm, ndf * mult),
                    nn.LeakyReLU(0.2, True),
                    BlurDownsample(ndf * mult),
                ]
            else:
                layers += [
                    nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=2, padding=padw, bias=bias),
                    make_norm(norm, ndf * mult),
                    nn.LeakyReLU(0.2, True),
                ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=kw, stride=1, padding=padw, bias=bias),
            make_norm(norm, ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=kw, stride=1, padding=padw),
        ]
        self.model = nn.Sequential(*layers)
        init_weights(self, init_type, init_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(
                f"discriminator expects input of shape (B, {self.input_nc}, H, W); got {tuple(x.shape)}"
            )
        return self.model(x)
