"""The paper's analysis pictures: learned patch similarity maps and PCA of encoder features (plain PyTorch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .networks import PatchSampler, ResnetGenerator


@torch.no_grad()
def similarity_map(
    generator: ResnetGenerator,
    sampler: PatchSampler,
    real_a: torch.Tensor,
    fake_b: torch.Tensor,
    layers: list[int],
    layer: int,
    query: tuple[int, int],
) -> torch.Tensor:
    """Cosine similarity, through the encoder and MLP head, between one output patch and every input patch.

    Args:
        real_a, fake_b: (1, C, H, W) source image and its translation.
        layers: the ``nce_layers`` the sampler's heads were built for; ``layer`` is one of them.
        query: (row, col) of the query patch on that layer's feature grid.

    Returns:
        (H_l, W_l) similarities in [-1, 1] (the positive is at ``query`` when the contrastive loss did its job).
    """
    if layer not in layers:
        raise ValueError(f"layer {layer} is not one of the sampler's layers {layers}")
    i = layers.index(layer)
    feat_k = generator.encode(real_a, layers)
    feat_q = generator.encode(fake_b, layers)
    h, w = feat_k[i].shape[-2:]
    keys, _ = sampler(feat_k, num_patches=None)  # every position, row-major: (1, H_l*W_l, D)
    row, col = query
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"query {query} outside the {h}x{w} feature grid of layer {layer}")
    ids = [torch.tensor([row * w + col]) if j == i else torch.zeros(1, dtype=torch.long) for j in range(len(layers))]
    q, _ = sampler(feat_q, patch_ids=ids)  # (1, 1, D) per layer
    sim = F.cosine_similarity(keys[i][0], q[i][0], dim=-1)  # (H_l*W_l,)
    return sim.view(h, w)


@torch.no_grad()
def feature_pca(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Project feature maps onto the 3 principal components of their pooled pixels, shown as RGB.

    Args:
        features: maps (C, H_i, W_i) of one layer (e.g. input's and output's), fitted jointly so colours compare.

    Returns:
        (3, H_i, W_i) images in [0, 1], one per input map.
    """
    flat = [f.flatten(1).T for f in features]  # (H_i*W_i, C)
    x = torch.cat(flat)
    mean = x.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(x - mean, q=3, center=False)  # v: (C, 3)
    proj = [(f - mean) @ v for f in flat]  # (H_i*W_i, 3)
    allp = torch.cat(proj)
    lo, hi = allp.amin(0), allp.amax(0)
    return [((p - lo) / (hi - lo).clamp(min=1e-8)).T.reshape(3, *f.shape[-2:]) for p, f in zip(proj, features)]
