"""Patch sampler with per-layer MLP heads (the paper's H; the reference implementation's netF)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..checks import check_int
from .init import init_weights


def upcast_half(x: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 -> fp32; other dtypes unchanged (fp64 stays fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Divide each row (last dim) by its L2 norm + eps, as the reference does.

    The same values as ``x / (x.pow(2).sum(-1, keepdim=True).sqrt() + eps)``; but an all-zero row (an MLP head
    whose ReLU switched every unit off, leaving a zero bias) gets a zero gradient through its norm instead of NaN
    (``sqrt``'s derivative is infinite at 0, and inf * 0 = NaN would spread to every weight).
    """
    sq = x.pow(2).sum(-1, keepdim=True)  # (..., 1)
    nonzero = sq > 0
    norm = torch.where(nonzero, torch.where(nonzero, sq, 1.0).sqrt(), 0.0)  # sqrt only sees positive values
    return x / (norm + eps)


def sample_columns(feat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Columns of ``feat`` (B, C, H, W) at row-major positions ``ids`` ((S,) or (B, S)) -> (B, C, S); only the
    sampled columns are gathered (no (B, H*W, C) copy of the map)."""
    flat = feat.flatten(2)  # (B, C, H*W)
    if ids.dim() == 1:
        return flat.index_select(2, ids)  # (B, C, S)
    return flat.gather(2, ids[:, None, :].expand(-1, flat.shape[1], -1))  # (B, C, S), per image


class PatchSampler(nn.Module):
    """Samples the same S spatial positions from a list of feature maps and projects each with its own
    2-layer MLP (Linear(C_l, mlp_dim), ReLU, Linear(mlp_dim, mlp_dim)); rows are L2-normalised.

    The heads are built here from ``in_channels`` (use ``ResnetGenerator.feature_channels(nce_layers)``),
    so the sampler owns all its parameters from construction on.
    State-dict keys: ``mlp_{i}.0.*`` and ``mlp_{i}.2.*`` for i = 0..len(in_channels)-1.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        mlp_dim: int = 256,
        use_mlp: bool = True,
        init_type: str = "xavier",
        init_gain: float = 0.02,
    ):
        super().__init__()
        check_int("mlp_dim", mlp_dim, low=1)
        self.in_channels = [int(c) for c in in_channels]
        if not self.in_channels:
            raise ValueError("in_channels must list the channel count of at least one feature layer")
        self.use_mlp = use_mlp
        self.mlp_dim = mlp_dim
        if use_mlp:
            for i, c in enumerate(self.in_channels):
                mlp = nn.Sequential(nn.Linear(c, mlp_dim), nn.ReLU(inplace=True), nn.Linear(mlp_dim, mlp_dim))
                setattr(self, f"mlp_{i}", mlp)
            init_weights(self, init_type, init_gain)

    @property
    def out_channels(self) -> list[int]:
        return [self.mlp_dim] * len(self.in_channels) if self.use_mlp else list(self.in_channels)

    @staticmethod
    def draw_patch_ids(feat: torch.Tensor, num_patches: int | None) -> torch.Tensor:
        """Random positions into the row-major H*W grid of ``feat`` (torch RNG, on ``feat``'s device).

        ``num_patches`` None -> every position in order; larger than H*W -> every position, shuffled.
        """
        hw = feat.shape[-2] * feat.shape[-1]
        if num_patches is None:
            return torch.arange(hw, device=feat.device)
        return torch.randperm(hw, device=feat.device)[: min(int(num_patches), hw)]

    def forward(
        self,
        feats: Sequence[torch.Tensor],
        num_patches: int | None = 256,
        patch_ids: Sequence[torch.Tensor] | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Sample and project.

        Args:
            feats: one (B, C_l, H_l, W_l) map per layer.
            num_patches: S, positions per layer (ignored when ``patch_ids`` is given).
            patch_ids: positions to reuse (e.g. the ones returned for the source image), one LongTensor per layer:
                (S_l,) for every image of the batch, or (B, S_l) with positions per image.

        Returns:
            (samples, patch_ids): samples[l] is (B, S_l, D) with unit-norm rows; patch_ids[l] is (S_l,) when drawn
            here, else as given.
        """
        if len(feats) != len(self.in_channels):
            raise ValueError(f"expected {len(self.in_channels)} feature maps, got {len(feats)}")
        if patch_ids is not None and len(patch_ids) != len(feats):
            raise ValueError(f"expected {len(feats)} patch_ids tensors, got {len(patch_ids)}")
        samples, ids_out = [], []
        for i, feat in enumerate(feats):
            if feat.shape[1] != self.in_channels[i]:
                raise ValueError(
                    f"feature map {i} has {feat.shape[1]} channels; the head was built for {self.in_channels[i]}"
                )
            ids = self.draw_patch_ids(feat, num_patches) if patch_ids is None else patch_ids[i].to(feat.device)
            x = sample_columns(feat, ids).transpose(1, 2)  # (B, S, C_l)
            # Heads and normalisation in fp32, also under autocast: their outputs start around 1e-4, so in fp16
            # the squared norm underflows and the normalisation's gradient (~1/norm) overflows.
            with torch.autocast(x.device.type, enabled=False):
                x = upcast_half(x)
                if self.use_mlp:
                    x = getattr(self, f"mlp_{i}")(x)  # (B, S, D)
                x = l2_normalize(x)
            samples.append(x)
            ids_out.append(ids)
        return samples, ids_out
