"""DistanceGAN and SelfDistance (Benaim & Wolf: "One-Sided Unsupervised Domain Mapping", NIPS 2017) on CUT's
networks.

DistanceGAN keeps the translation's pairwise distances: for images x_i, x_j of a batch (i < j), the normalised
distance between G(x_i) and G(x_j) should equal that between x_i and x_j (``distance_loss``). SelfDistance does the
same between the two halves of each image (``self_distance_loss``; works at batch size 1). G loss:

    lambda_gan * GAN(G(x)) + lambda_distance * L_distance

The distances are normalised by each domain's distance statistics (mean mu and std sigma). As in the authors'
code, they can be estimated before training from a sample of each domain (``cutlight.losses.distance_stats``, the
code uses up to ``max_items`` images) and passed as ``stats_a`` / ``stats_b``. Left as None, they are estimated
online: every iteration adds the distances of its real A (resp. real B) batch to running mean / variance buffers
(Welford), which are part of the state dict, so they travel with checkpoints; until two distances have been seen the
std is taken as 1, then floored at 1e-3. Early online estimates rest on few distances (one pair per iteration at
batch size 2), so the first iterations' normalisation is noisy: for runs meant to match the paper, pass the stats.
``normalize_distances=False`` uses raw distances (the code's ``--unnormalized_distances``).

The per-image self distance follows the paper (an expectation over images); the code compares batch-averaged half
distances, which is the same at batch size 1.

The distance is the mean absolute difference over all elements (the code's ``torch.mean(torch.abs(a - b))``).
The defaults lambda_gan = lambda_distance = 1 are a choice (the code's per-dataset settings vary); pool size 50
is the CycleGAN code's default, which DistanceGAN inherits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..losses import (
    HALVES,
    distance_loss,
    generator_loss,
    half_distances,
    pairwise_distances,
    self_distance_loss,
)
from .cyclegan import ImagePool
from .onesided import DiscriminatorPairs, OneSidedObjective

Stats = tuple[float | torch.Tensor, float | torch.Tensor]


def _check_stats(name: str, stats: Sequence[float] | None) -> tuple[float, float] | None:
    if stats is None:
        return None
    if len(stats) != 2 or not float(stats[1]) > 0:
        raise ValueError(f"{name} must be (mean, std) with std > 0, got {tuple(stats)}")
    return float(stats[0]), float(stats[1])


@torch.no_grad()
def _update_running(running: torch.Tensor, d: torch.Tensor) -> None:
    """Merge distances ``d`` (N,) into ``running`` = (count, mean, M2) in place (Chan et al.'s parallel Welford)."""
    d = d.detach().to(running)
    count, mean, m2 = running.unbind()
    n, batch_mean = d.numel(), d.mean()
    total = count + n
    delta = batch_mean - mean
    running.copy_(torch.stack([total, mean + delta * n / total,
                               m2 + ((d - batch_mean) ** 2).sum() + delta**2 * count * n / total]))


# Floor of the online std estimate: distances of images in [-1, 1] are O(0.1-1), their std typically O(0.05-0.2).
# Early estimates from a handful of distances can be tiny, and they divide the loss.
_MIN_STD = 1e-3


def _running_stats(running: torch.Tensor) -> Stats:
    """(mean, population std) from (count, mean, M2); std 1 until two distances have been seen, then at least
    ``_MIN_STD``."""
    count, mean, m2 = running.unbind()
    std = torch.where(count >= 2, (m2 / count.clamp_min(1)).sqrt(), torch.ones_like(m2))  # no host sync
    return mean, std.clamp_min(_MIN_STD)


class DistanceGANObjective(OneSidedObjective):
    """DistanceGAN's losses on the roles ``generator`` and ``discriminator`` (``OneSidedObjective``).
    Needs batches of at least 2 images (the distances are between the images of a batch).

    Args:
        lambda_gan: weight of the adversarial term.
        lambda_distance: weight of the distance term (the code's lambda_distance_A).
        stats_a: (mean, std) of distances between real A images (``distance_stats``); None = estimate online.
        stats_b: (mean, std) of distances between real B images; None = estimate online.
        normalize_distances: normalise by the stats (else raw distances; the stats are then unused).
        gan_mode: ``lsgan``, ``vanilla``, ``nonsaturating`` or ``hinge``.
        pool_size: image pool of generated B images shown to D; 0 = no pool.

    Loss keys: ``loss_g``, ``loss_g_gan``, ``loss_distance``, ``loss_d``.
    """

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_distance: float = 1.0,
        stats_a: Sequence[float] | None = None,
        stats_b: Sequence[float] | None = None,
        normalize_distances: bool = True,
        gan_mode: str = "lsgan",
        pool_size: int = 50,
    ):
        super().__init__(gan_mode)
        self.lambda_gan = float(lambda_gan)
        self.lambda_distance = float(lambda_distance)
        self.stats_a = _check_stats("stats_a", stats_a)
        self.stats_b = _check_stats("stats_b", stats_b)
        self.normalize_distances = bool(normalize_distances)
        self.pool_b = ImagePool(pool_size)
        self.register_buffer("running_a", torch.zeros(3))  # (count, mean, M2) of real A distances (online stats)
        self.register_buffer("running_b", torch.zeros(3))  # the same for real B

    def check_batch(self, real_a: torch.Tensor) -> None:
        if real_a.shape[0] < 2:
            raise ValueError(f"DistanceGANObjective needs batches of at least 2 images (it preserves distances "
                             f"between the images of a batch); got batch size {real_a.shape[0]}. At batch size 1 "
                             f"use SelfDistanceObjective")

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """The distances this method preserves: between the images of the batch, (B, C, H, W) -> (B(B-1)/2,)."""
        return pairwise_distances(x)

    def distance_term(self, real: torch.Tensor, fake: torch.Tensor, stats_real: Stats, stats_fake: Stats):
        return distance_loss(real, fake, stats_real, stats_fake)

    def current_stats(self, real_a: torch.Tensor, real_b: torch.Tensor) -> tuple[Stats, Stats]:
        """(mu_A, sigma_A), (mu_B, sigma_B) to normalise with; online estimates are updated with these batches."""
        if not self.normalize_distances:
            return (0.0, 1.0), (0.0, 1.0)
        out = []
        for given, running, real in ((self.stats_a, self.running_a, real_a), (self.stats_b, self.running_b, real_b)):
            if given is None:
                _update_running(running, self.distances(real))
                given = _running_stats(running)
            out.append(given)
        return out[0], out[1]

    def generator_losses(
        self, generator: nn.Module, discriminator: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], DiscriminatorPairs]:
        self.check_batch(real_a)
        stats_a, stats_b = self.current_stats(real_a, real_b)
        fake_b = generator(real_a)  # (B, C, H, W)
        terms = {
            "loss_g_gan": generator_loss(discriminator(fake_b), self.gan_mode) * self.lambda_gan,
            "loss_distance": self.distance_term(real_a, fake_b, stats_a, stats_b) * self.lambda_distance,
        }
        terms["loss_g"] = terms["loss_g_gan"] + terms["loss_distance"]
        return terms, {"loss_d": (real_b, fake_b, self.pool_b)}


class SelfDistanceObjective(DistanceGANObjective):
    """SelfDistance: DistanceGAN's loss between the two halves of each image (any batch size). Arguments as
    ``DistanceGANObjective``, the stats being those of half distances (``distance_stats(..., self_distance=True)``),
    plus ``halves``: ``left_right`` (the paper's L(x), R(x)) or ``top_bottom`` (what the authors' code splits).

    Loss keys: ``loss_g``, ``loss_g_gan``, ``loss_distance``, ``loss_d``.
    """

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_distance: float = 1.0,
        stats_a: Sequence[float] | None = None,
        stats_b: Sequence[float] | None = None,
        normalize_distances: bool = True,
        halves: str = "left_right",
        gan_mode: str = "lsgan",
        pool_size: int = 50,
    ):
        super().__init__(lambda_gan, lambda_distance, stats_a, stats_b, normalize_distances, gan_mode, pool_size)
        if halves not in HALVES:
            raise ValueError(f"unknown halves {halves!r}; expected one of {', '.join(HALVES)}")
        self.halves = halves

    def check_batch(self, real_a: torch.Tensor) -> None:
        pass  # any batch size

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """Distances between the two halves of each image, (B, C, H, W) -> (B,)."""
        return half_distances(x, self.halves)

    def distance_term(self, real: torch.Tensor, fake: torch.Tensor, stats_real: Stats, stats_fake: Stats):
        return self_distance_loss(real, fake, stats_real, stats_fake, self.halves)
