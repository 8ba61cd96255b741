"""``LayeredGenerator``: the generator protocol of cutlight, for generators whose numbered layer list doubles as
the PatchNCE encoder.

What ``CUTModule``, the objectives and inference ask of a generator (any class chosen by ``_target_`` may also
implement it directly): ``forward(x)``; ``forward_with_features(x, layers) -> (output, [feature maps])``;
``encode(x, layers) -> [feature maps]`` (stopping after the deepest layer asked for); ``feature_channels(layers)
-> [channels]``; attributes ``input_nc``, ``output_nc`` and ``size_multiple`` (input height and width must be
positive multiples of it).

A subclass sets ``input_nc``, ``output_nc``, ``size_multiple`` and ``layer_channels`` (output channels of each
layer) and implements ``numbered_layers()`` (the layers in order; their indices are the ``nce_layers``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LayeredGenerator(nn.Module):
    """Base class: forward with or without features, encode, channel bookkeeping and input checks."""

    input_nc: int
    output_nc: int
    size_multiple: int = 1
    layer_channels: list[int]

    def numbered_layers(self) -> Sequence[nn.Module]:
        """The layers in order (index i is ``nce_layers`` index i)."""
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.layer_channels)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError unless ``x`` is (B, input_nc, H, W) with H, W positive multiples of size_multiple."""
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise ValueError(f"generator expects input of shape (B, {self.input_nc}, H, W); got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m or h < m or w < m:
            raise ValueError(f"generator input height and width must be positive multiples of {m}; got {h}x{w}")

    def check_layers(self, layers: Sequence[int]) -> list[int]:
        layers = [int(i) for i in layers]
        if not layers:
            raise ValueError("layers must name at least one layer index")
        bad = [i for i in layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"layer index {bad[0]} out of range; expected indices in 0..{self.num_layers - 1} "
                             f"of the generator's layer list")
        return layers

    def forward(
        self, x: torch.Tensor, layers: Sequence[int] | None = None, encode_only: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """(B, C_in, H, W) -> (B, C_out, H, W). With ``layers``: (output, feature maps at ``layers``), or only the
        feature maps when ``encode_only`` (``forward_with_features`` and ``encode`` call this, so that
        ``module.compile()`` covers them too)."""
        self.check_input(x)
        all_layers = self.numbered_layers()
        if layers is None:
            for layer in all_layers:
                x = layer(x)
            return x
        layers = self.check_layers(layers)
        wanted, last = set(layers), max(layers)
        found: dict[int, torch.Tensor] = {}
        for idx, layer in enumerate(all_layers):
            x = layer(x)
            if idx in wanted:  # cloned when the next layer would overwrite it in place (ReLU(inplace=True))
                nxt = all_layers[idx + 1] if idx + 1 < len(all_layers) else None
                found[idx] = x.clone() if getattr(nxt, "inplace", False) else x
            if encode_only and idx == last:
                break
        feats = [found[i] for i in layers]
        return feats if encode_only else (x, feats)

    def forward_with_features(self, x: torch.Tensor, layers: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One full forward pass that also returns the feature maps at ``layers`` (in the order given)."""
        return self(x, tuple(layers))

    def encode(self, x: torch.Tensor, layers: Sequence[int]) -> list[torch.Tensor]:
        """Feature maps at ``layers`` (in the order given), each (B, C_l, H_l, W_l); stops after the deepest one."""
        return self(x, tuple(layers), encode_only=True)

    def feature_channels(self, layers: Sequence[int]) -> list[int]:
        """Channel counts of the feature maps at ``layers``, without running the network."""
        return [self.layer_channels[i] for i in self.check_layers(layers)]
