"""ResNet generator (the paper's G). Its layer list doubles as the encoder for PatchNCE (``encode``).

The generator protocol (what ``CUTModule`` and inference ask of any generator) is described and implemented by
``cutlight.networks.protocol.LayeredGenerator``.
"""

from __future__ import annotations

from torch import nn

from ..checks import check_int
from .init import init_weights
from .layers import BlurDownsample, BlurUpsample, ChannelsLastConv2d, ResnetBlock, conv_bias, make_norm
from .protocol import LayeredGenerator


class ResnetGenerator(LayeredGenerator):
    """Encoder (``num_downsampling`` downsamplings, 2 in the paper) + ``n_blocks`` residual blocks + decoder (as many
    upsamplings), as one ``nn.Sequential`` named ``model`` whose indices are the ``nce_layers`` indices of the paper.

    Args:
        input_nc / output_nc: image channels in / out.
        ngf: filters of the first conv layer (64 in the paper).
        n_blocks: residual blocks (9 at 256 px, 6 at 128 px; any >= 1).
        num_downsampling: stride-2 stages before the blocks (2 in the paper and its checkpoints). With ``antialias``
            each stage is 4 layers, so the blocks start at index ``4 + 4 * num_downsampling`` (12 for 2, 8 for 1).
            ``1`` keeps a twice finer bottleneck (32 x 32 at 64 px) for small images.
        norm: ``instance`` (no affine), ``batch`` or ``none``.
        dropout: dropout probability inside residual blocks (0 = off, the CUT default).
        antialias: blur-pool downsampling (else strided conv).
        antialias_up: blur upsampling + conv (else transposed conv).
        init_type / init_gain: weight initialisation (see ``init_weights``).

    Input (B, input_nc, H, W) with H and W divisible by ``2 ** num_downsampling``, values in [-1, 1]; output
    (B, output_nc, H, W) in [-1, 1].
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        num_downsampling: int = 2,
        norm: str = "instance",
        dropout: float = 0.0,
        antialias: bool = True,
        antialias_up: bool = True,
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ):
        super().__init__()
        for name, value in (("n_blocks", n_blocks), ("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf),
                            ("num_downsampling", num_downsampling)):
            check_int(name, value, low=1)
        self.input_nc, self.output_nc = input_nc, output_nc
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(num_downsampling):
            c_in, c_out = ngf * 2**i, ngf * 2 ** (i + 1)
            if antialias:
                layers += [
                    nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=bias),
                    make_norm(norm, c_out),
                    nn.ReLU(True),
                    BlurDownsample(c_out),
                ]
            else:
                layers += [
                    nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=bias),
                    make_norm(norm, c_out),
                    nn.ReLU(True),
                ]
        dim = ngf * 2**num_downsampling
        layers += [ResnetBlock(dim, norm=norm, dropout=dropout) for _ in range(n_blocks)]
        for i in range(num_downsampling):
            c_in = ngf * 2 ** (num_downsampling - i)
            c_out = c_in // 2
            if antialias_up:
                layers += [
                    BlurUpsample(c_in),
                    nn.Conv2d(c_in, c_out, kernel_size=3, stride=1, padding=1, bias=bias),
                    make_norm(norm, c_out),
                    nn.ReLU(True),
                ]
            else:
                layers += [
                    nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=bias),
                    make_norm(norm, c_out),
                    nn.ReLU(True),
                ]
        layers += [nn.ReflectionPad2d(3), ChannelsLastConv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.size_multiple = 2**num_downsampling
        self.layer_channels = _layer_channels(self.model, input_nc)
        init_weights(self, init_type, init_gain)

    def numbered_layers(self) -> nn.Sequential:
        return self.model


def _layer_channels(layers: nn.Sequential, channels: int) -> list[int]:
    """Output channels of each layer (convolutions set them; norms, activations, blur and blocks keep them)."""
    out = []
    for layer in layers:
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            channels = layer.out_channels
        out.append(channels)
    return out
