"""CUT losses in plain PyTorch: PatchNCE (multilayer, patchwise InfoNCE) and GAN objectives."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice
from .networks.sampler import upcast_half

NEGATIVES = ("image", "batch")
GAN_MODES = ("lsgan", "vanilla", "nonsaturating", "hinge")

# The reference masks a query's own positive among the negatives with this logit (before the temperature);
# exp(-10 / 0.07) is ~1e-62 of the other terms, i.e. the positive is excluded from the negatives.
_DIAGONAL_LOGIT = -10.0


def patch_nce_loss(
    feat_q: torch.Tensor, feat_k: torch.Tensor, temperature: float = 0.07, negatives: str = "image"
) -> torch.Tensor:
    """Patchwise InfoNCE loss of every query, no reduction.

    Args:
        feat_q: (B, S, C) projected patches of the translated image (queries; gradients flow through them).
        feat_k: (B, S, C) projected patches of the source image at the same positions (keys; treated as constants).
        temperature: tau; logits are dot products / tau.
        negatives: ``"image"``: each query's negatives are the other S-1 keys of its own image (internal, the
            paper's default); ``"batch"``: the other B*S-1 keys of the whole batch (external).

    Returns:
        (B, S) cross-entropy of [q.k+, q.k-_1, ...] / tau with target 0.
    """
    check_choice("negatives", negatives, NEGATIVES)
    if feat_q.dim() != 3 or feat_q.shape != feat_k.shape:
        raise ValueError(
            f"feat_q and feat_k must both be (B, S, C); got {tuple(feat_q.shape)} and {tuple(feat_k.shape)}"
        )
    with torch.autocast(feat_q.device.type, enabled=False):  # logits in fp32 under mixed precision too
        return _patch_nce_fp32(upcast_half(feat_q), upcast_half(feat_k.detach()), temperature, negatives)


def _patch_nce_fp32(feat_q: torch.Tensor, feat_k: torch.Tensor, temperature: float, negatives: str) -> torch.Tensor:
    b, s, c = feat_q.shape
    l_pos = (feat_q * feat_k).sum(-1, keepdim=True)  # (B, S, 1)
    if negatives == "batch":
        q, k = feat_q.reshape(1, b * s, c), feat_k.reshape(1, b * s, c)  # one group of B*S patches
    else:
        q, k = feat_q, feat_k  # B groups of S patches
    n = q.shape[1]
    l_neg = torch.bmm(q, k.transpose(1, 2))  # (G, n, n): every query against every key of its group
    diagonal = torch.eye(n, dtype=torch.bool, device=q.device)
    l_neg = l_neg.masked_fill(diagonal, _DIAGONAL_LOGIT).reshape(b, s, n)  # (B, S, n)
    logits = torch.cat([l_pos, l_neg], dim=-1) / temperature  # (B, S, 1 + n)
    target = torch.zeros(b * s, dtype=torch.long, device=q.device)
    logits = logits.reshape(b * s, n + 1)
    return F.cross_entropy(logits, target, reduction="none").reshape(b, s)


def multilayer_patch_nce(
    feats_q: Sequence[torch.Tensor],
    feats_k: Sequence[torch.Tensor],
    temperature: float = 0.07,
    negatives: str = "image",
    parts: int = 1,
) -> torch.Tensor:
    """Multilayer PatchNCE (the paper's Eq. 5): mean over the queries of each layer, then mean over layers.

    The one implementation used by training (``CUTObjective``) and by ``PatchNCELoss``.

    Args:
        feats_q, feats_k: per layer (N, S_l, C_l) projected patches (queries, and keys treated as constants).
        parts: the batch holds ``parts`` equal slices scored separately, e.g. [(G(x), x) | (G(y), y)] for the
            identity term; with ``negatives="batch"`` a slice's negatives come from that slice only.

    Returns:
        (parts,) losses.
    """
    check_choice("negatives", negatives, NEGATIVES)
    if len(feats_q) != len(feats_k) or not feats_q:
        raise ValueError(f"need the same non-zero number of layers; got {len(feats_q)} and {len(feats_k)}")
    if feats_q[0].shape[0] % parts:
        raise ValueError(f"batch of {feats_q[0].shape[0]} does not split into parts={parts} equal slices")
    per_layer = []  # (parts,) per layer
    for q, k in zip(feats_q, feats_k):
        if negatives == "image":  # each image's own patches: one call for all parts
            loss = patch_nce_loss(q, k, temperature, "image").reshape(parts, -1).mean(1)
        else:  # the negatives of a part are the patches of that part's images only
            loss = torch.stack([patch_nce_loss(qp, kp, temperature, "batch").mean()
                                for qp, kp in zip(q.chunk(parts), k.chunk(parts))])
        per_layer.append(loss)
    return torch.stack(per_layer).mean(0)


class PatchNCELoss(nn.Module):
    """Multilayer PatchNCE as a module: ``forward(feats_q, feats_k)`` takes lists of (B, S_l, C) tensors (one per
    layer) and returns a scalar (see ``multilayer_patch_nce``)."""

    def __init__(self, temperature: float = 0.07, negatives: str = "image"):
        super().__init__()
        check_choice("negatives", negatives, NEGATIVES)
        self.temperature = temperature
        self.negatives = negatives

    def forward(self, feats_q: Sequence[torch.Tensor], feats_k: Sequence[torch.Tensor]) -> torch.Tensor:
        return multilayer_patch_nce(feats_q, feats_k, self.temperature, self.negatives)[0]


def _gan_term(pred: torch.Tensor, real: bool, gan_mode: str) -> torch.Tensor:
    if gan_mode == "lsgan":
        return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))
    if gan_mode in ("vanilla", "nonsaturating"):
        # BCE with logits; for the generator's "real" target this is the non-saturating -log D(G(x)).
        return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, 1.0 if real else 0.0))
    return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()  # hinge (discriminator side)


def discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor, gan_mode: str = "lsgan") -> torch.Tensor:
    """0.5 * (loss(real -> real) + loss(fake -> fake)); predictions are D's raw outputs (logits)."""
    check_choice("gan_mode", gan_mode, GAN_MODES)
    return 0.5 * (_gan_term(pred_real, True, gan_mode) + _gan_term(pred_fake, False, gan_mode))


def generator_loss(pred_fake: torch.Tensor, gan_mode: str = "lsgan") -> torch.Tensor:
    """Adversarial loss of the generator on D's outputs for translated images."""
    check_choice("gan_mode", gan_mode, GAN_MODES)
    if gan_mode == "hinge":
        return -pred_fake.mean()
    return _gan_term(pred_fake, True, gan_mode)


# ---- regularisers (R1)


def _r1_dtype(discriminator: nn.Module, real: torch.Tensor) -> torch.dtype:
    """fp32 (or fp64) for the R1 pass; a discriminator whose weights are themselves fp16/bf16 runs in that dtype."""
    param = next(discriminator.parameters(), None)
    if param is not None and param.is_floating_point():
        return param.dtype
    return upcast_half(real).dtype


def r1_penalty(
    discriminator: nn.Module, real: torch.Tensor, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """R1 gradient penalty on real images (Mescheder et al. 2018), as in StyleGAN2 and the reference SinCUT:
    ``gamma / 2 * mean_i ||d sum(D(x_i)) / d x_i||^2`` at x = ``real``.

    Args:
        discriminator: D; its outputs are summed per image (one logit per image, or a patch map).
        real: (B, C, H, W) real images (any graph on them is cut: the penalty is a function of D only).
        gamma: the penalty weight (SinCUT's ``lambda_r1``).

    Returns:
        (penalty, pred_real): the scalar penalty, with a graph through the input gradient (``create_graph``), so
        its backward reaches D's parameters by double backward; and D(real), which the caller can reuse for the
        GAN loss of the same step (reals then go through D once).

    Precision: computed with autocast off, in fp32 (fp64 stays fp64): under bf16 autocast the squared input
    gradients would otherwise carry bf16's 8-bit mantissa. A D whose parameters are fp16/bf16 (true half
    precision) runs in that dtype and only the squared norm is summed in fp32. Under ``torch.no_grad()`` the
    value is computed without a graph (e.g. for logging).
    """
    track = torch.is_grad_enabled()
    with torch.enable_grad(), torch.autocast(real.device.type, enabled=False):
        x = real.detach().to(_r1_dtype(discriminator, real)).requires_grad_(True)
        pred = discriminator(x)
        (grad,) = torch.autograd.grad(pred.sum(), x, create_graph=track)  # (B, C, H, W)
        penalty = upcast_half(grad).pow(2).flatten(1).sum(1).mean() * (0.5 * gamma)  # mean over B of ||grad||^2
    if not track:
        penalty, pred = penalty.detach(), pred.detach()
    return penalty, pred
