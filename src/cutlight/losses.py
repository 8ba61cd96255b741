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


# ---- baselines (CycleGAN, GcGAN, DistanceGAN, SelfDistance)
# Pure functions used by ``cutlight.objectives`` (cyclegan.py, gcgan.py, distance.py). Images are (B, C, H, W).

GEOMETRIC_TRANSFORMS = ("rot90", "vflip")
HALVES = ("left_right", "top_bottom")


def cycle_loss(reconstructed: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (L1) between a reconstruction and the real image: CycleGAN's cycle term, and its
    identity term on (G(y), y). (B, C, H, W) x2 -> scalar."""
    return F.l1_loss(reconstructed, real)


def geometric_transform(x: torch.Tensor, transform: str = "rot90", inverse: bool = False) -> torch.Tensor:
    """GcGAN's predefined transform f (or f^-1 with ``inverse``), applied to (B, C, H, W) images.

    ``rot90``: rotation by 90 degrees clockwise (out[..., i, j] = x[..., H-1-j, i], as the GcGAN code's
    ``rot90(x, 0)``), output (B, C, W, H); its inverse rotates counter-clockwise. ``vflip``: upside-down flip
    (out[..., i, j] = x[..., H-1-i, j], its own inverse).
    """
    check_choice("transform", transform, GEOMETRIC_TRANSFORMS)
    if transform == "vflip":
        return x.flip(2)
    return torch.rot90(x, 1 if inverse else -1, dims=(2, 3))


def geometry_consistency_loss(
    fake: torch.Tensor, fake_gc: torch.Tensor, transform: str = "rot90"
) -> torch.Tensor:
    """GcGAN's geometry-consistency constraint (Fu et al., CVPR 2019, arXiv:1809.05852), for f and f^-1 of
    ``geometric_transform``:

        || G(x) - f^-1(G(f(x))) ||_1  +  || G(f(x)) - f(G(x)) ||_1

    with ``fake`` = G(x) (B, C, H, W) and ``fake_gc`` = G(f(x)) (B, C, H', W'); each L1 is a mean over elements.
    As in the authors' code, each side's target is a constant (detached): the gradient reaching ``fake`` comes from
    the first term only, the one reaching ``fake_gc`` from the second. Unweighted (the code multiplies by
    lambda_AB * lambda_gc). Returns a scalar.
    """
    target = geometric_transform(fake_gc.detach(), transform, inverse=True)  # f^-1(G(f(x))), (B, C, H, W)
    target_gc = geometric_transform(fake.detach(), transform)  # f(G(x)), (B, C, H', W')
    return F.l1_loss(fake, target) + F.l1_loss(fake_gc, target_gc)


def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """DistanceGAN's distance between every pair i < j of a batch: mean absolute difference over all elements
    (the L1 norm divided by C*H*W, as in the authors' code). (B, C, H, W) -> (B*(B-1)/2,), pairs in the order
    (0,1), (0,2), ..., (1,2), ... (``torch.triu_indices``)."""
    b = x.shape[0]
    i, j = torch.triu_indices(b, b, offset=1, device=x.device)  # (P,) each
    return (x[i] - x[j]).abs().flatten(1).mean(1)  # (P,)


def half_distances(x: torch.Tensor, halves: str = "left_right") -> torch.Tensor:
    """SelfDistance's distance between the two halves of each image (mean absolute difference).

    ``left_right`` splits the width (the paper's L(x), R(x)); ``top_bottom`` splits the height (what the DistanceGAN
    code's ``torch.chunk(x, 2, dim=2)`` does). The split size must be even. (B, C, H, W) -> (B,).
    """
    check_choice("halves", halves, HALVES)
    dim = 3 if halves == "left_right" else 2
    if x.shape[dim] % 2:
        raise ValueError(f"half_distances: the {'width' if dim == 3 else 'height'} must be even to split "
                         f"{halves.replace('_', '/')}; got shape {tuple(x.shape)}")
    first, second = x.chunk(2, dim=dim)  # (B, C, H, W/2) or (B, C, H/2, W)
    return (first - second).abs().flatten(1).mean(1)  # (B,)


def _normalised_distance_gap(d_real, d_fake, stats_real, stats_fake) -> torch.Tensor:
    (mu_r, sigma_r), (mu_f, sigma_f) = stats_real, stats_fake
    return ((d_real - mu_r) / sigma_r - (d_fake - mu_f) / sigma_f).abs().mean()


def distance_loss(
    real: torch.Tensor,
    fake: torch.Tensor,
    stats_real: tuple[float | torch.Tensor, float | torch.Tensor] = (0.0, 1.0),
    stats_fake: tuple[float | torch.Tensor, float | torch.Tensor] = (0.0, 1.0),
) -> torch.Tensor:
    """DistanceGAN's pairwise distance-preservation loss (Benaim & Wolf, NIPS 2017), mean over pairs i < j:

        | (d(x_i, x_j) - mu_A) / sigma_A  -  (d(G(x_i), G(x_j)) - mu_B) / sigma_B |

    with d = ``pairwise_distances``. ``real`` (B, C, H, W) source images, ``fake`` = G(real) (B, C', H, W),
    B >= 2; ``stats_real`` = (mu_A, sigma_A) and ``stats_fake`` = (mu_B, sigma_B) are the mean and std of such
    distances over each domain's data (``distance_stats``); (0, 1) leaves distances unnormalised. Scalar.
    """
    if real.shape[0] != fake.shape[0] or real.shape[0] < 2:
        raise ValueError(f"distance_loss needs two batches of the same size >= 2 (pairs within the batch); got "
                         f"{real.shape[0]} and {fake.shape[0]} images")
    return _normalised_distance_gap(pairwise_distances(real), pairwise_distances(fake), stats_real, stats_fake)


def self_distance_loss(
    real: torch.Tensor,
    fake: torch.Tensor,
    stats_real: tuple[float | torch.Tensor, float | torch.Tensor] = (0.0, 1.0),
    stats_fake: tuple[float | torch.Tensor, float | torch.Tensor] = (0.0, 1.0),
    halves: str = "left_right",
) -> torch.Tensor:
    """SelfDistance loss: ``distance_loss`` between the two halves of each image instead of between images
    (works at batch size 1), mean over the batch:

        | (d(L(x), R(x)) - mu_A) / sigma_A  -  (d(L(G(x)), R(G(x))) - mu_B) / sigma_B |

    The stats are those of ``half_distances`` in each domain (``distance_stats(..., self_distance=True)``). Scalar.
    """
    if real.shape[0] != fake.shape[0]:
        raise ValueError(f"self_distance_loss needs batches of the same size; got {real.shape[0]} and {fake.shape[0]}")
    return _normalised_distance_gap(half_distances(real, halves), half_distances(fake, halves), stats_real, stats_fake)


@torch.no_grad()
def distance_stats(
    images: torch.Tensor, self_distance: bool = False, halves: str = "left_right", chunk: int = 64
) -> tuple[float, float]:
    """(mean, std) of one domain's distances from a sample of its images, (N, C, H, W) in [-1, 1].

    Pairwise (``self_distance=False``): over all N*(N-1)/2 pairs (N >= 2), computed ``chunk`` rows at a time;
    self-distance: over the N images' half distances. The std is the population std (divide by the count), as in
    the DistanceGAN code (which uses up to ``max_items`` images of the training set).
    """
    n = images.shape[0]
    if self_distance:
        d = half_distances(images, halves)  # (N,)
    else:
        if n < 2:
            raise ValueError(f"distance_stats needs at least 2 images for pairwise distances; got {n}")
        x = images.flatten(1)  # (N, D)
        rows = []
        for start in range(0, n - 1, chunk):
            block = x[start: start + chunk]  # (c, D)
            dist = torch.cdist(block[None], x[None], p=1)[0] / x.shape[1]  # (c, N): mean |x_i - x_j|
            i = torch.arange(start, start + block.shape[0], device=x.device)
            rows.append(dist[torch.arange(n, device=x.device)[None] > i[:, None]])  # pairs j > i
        d = torch.cat(rows)  # (N*(N-1)/2,)
    d = d.double()
    return float(d.mean()), float(d.std(unbiased=False))
