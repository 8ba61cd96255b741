"""ResNet generator (the paper's G). Its layer list doubles as the encoder for PatchNCE (``encode``).

The generator protocol (what ``CUTModule`` and inference ask of any generator class chosen by ``_target_``):
``forward(x)``; ``forward_with_features(x, layers) -> (output, [feature maps])``; ``encode(x, layers) -> [feature
maps]``; ``feature_channels(layers) -> [channels]``; attributes ``input_nc``, ``output_nc`` and ``size_multiple``
(input height and width must be multiples of it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_int
from .init import init_weights
from .layers import BlurDownsample, BlurUpsample, ChannelsLastConv2d, ResnetBlock, conv_bias, make_norm

N_DOWNSAMPLING = 2


class ResnetGenerator(nn.Module):
    """Encoder (2 downsamplings) + ``n_blocks`` residual blocks + decoder (2 upsamplings), as one ``nn.Sequential``
    named ``model`` whose indices are the ``nce_layers`` indices of the paper.

    Args:
        input_nc / output_nc: image channels in / out.
        ngf: filters of the first conv layer (64 in the paper).
        n_blocks: residual blocks (9 at 256 px, 6 at 128 px; any >= 1).
        norm: ``instance`` (no affine), ``batch`` or ``none``.
        dropout: dropout probability inside residual blocks (0 = off, the CUT default).
        antialias: blur-pool downsampling (else strided conv).
        antialias_up: blur upsampling + conv (else transposed conv).
        init_type / init_gain: weight initialisation (see ``init_weights``).

    Input (B, input_nc, H, W) with H and W divisible by 4, values in [-1, 1]; output (B, output_nc, H, W) in [-1, 1].
    """

    def __init__(
        self,
        input_nc: int = 3,
        output_nc: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        dropout: float = 0.0,
        antialias: bool = True,
        antialias_up: bool = True,
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ):
        super().__init__()
        for name, value in (("n_blocks", n_blocks), ("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf)):
            check_int(name, value, low=1)
        self.input_nc, self.output_nc = input_nc, output_nc
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(True),
        ]
        for i in range(N_DOWNSAMPLING):
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
        dim = ngf * 2**N_DOWNSAMPLING
        layers += [ResnetBlock(dim, norm=norm, dropout=dropout) for _ in range(n_blocks)]
        for i in range(N_DOWNSAMPLING):
            c_in = ngf * 2 ** (N_DOWNSAMPLING - i)
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
        init_weights(self, init_type, init_gain)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this (2 ** the number of downsamplings)."""
        return 2**N_DOWNSAMPLING

    @property
    def num_layers(self) -> int:
        return len(self.model)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is (B, input_nc, H, W) with H, W divisible by 4."""
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(
                f"generator expects input of shape (B, {self.input_nc}, H, W); got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"generator input height and width must be divisible by {m}; got {h}x{w}")

    def check_layers(self, layers: Sequence[int]) -> list[int]:
        layers = [int(i) for i in layers]
        if not layers:
            raise ValueError("layers must name at least one layer index")
        bad = [i for i in layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(
                f"layer index {bad[0]} out of range; expected indices in 0..{self.num_layers - 1} "
                f"of the generator's layer list"
            )
        return layers

    def forward(
        self, x: torch.Tensor, layers: Sequence[int] | None = None, encode_only: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """(B, C_in, H, W) -> (B, C_out, H, W). With ``layers``: (output, feature maps at ``layers``), or only the
        feature maps when ``encode_only`` (see ``forward_with_features`` and ``encode``, which call this, so that
        ``module.compile()`` covers them too)."""
        self.check_input(x)
        if layers is None:
            return self.model(x)
        layers = self.check_layers(layers)
        wanted, last = set(layers), max(layers)
        found: dict[int, torch.Tensor] = {}
        for idx, layer in enumerate(self.model):
            x = layer(x)
            if idx in wanted:
                found[idx] = self._keep(idx, x)
            if encode_only and idx == last:
                break
        feats = [found[i] for i in layers]
        return feats if encode_only else (x, feats)

    def forward_with_features(
        self, x: torch.Tensor, layers: Sequence[int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One full forward pass that also returns the feature maps at ``layers`` (in the order given)."""
        return self(x, tuple(layers))

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps at ``layers`` (list in the order given), each (B, C_l, H_l, W_l).

        Stops after the deepest requested layer: with the paper's layers 0,4,8,12,16 the decoder never runs.
        """
        return self(x, tuple(layers), encode_only=True)

    def _keep(self, idx: int, x: torch.Tensor) -> torch.Tensor:
        """A feature map to hand out: cloned when the next layer would overwrite it in place (ReLU(inplace))."""
        nxt = self.model[idx + 1] if idx + 1 < len(self.model) else None
        return x.clone() if getattr(nxt, "inplace", False) else x

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """Channel counts of the feature maps at ``layers``, without running the network."""
        layers = self.check_layers(layers)
        channels, out = self.input_nc, {}
        for idx, layer in enumerate(self.model):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                channels = layer.out_channels
            elif isinstance(layer, ResnetBlock):
                pass  # residual blocks keep their width
            out[idx] = channels
        return [out[i] for i in layers]
