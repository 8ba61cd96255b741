"""The iteration shared by the one-sided baselines (GcGAN, DistanceGAN, SelfDistance) on CUT's networks.

Their authors built them on the CycleGAN code, so they keep its order and its image pool: the G step comes first
(D frozen), then the D step on this iteration's fakes exchanged through an ``ImagePool``. Their roles are CUT's
without the MLP heads: ``generator`` and ``discriminator`` (``OneSidedObjective.roles``).
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import GAN_MODES
from ..networks import PatchDiscriminator, ResnetGenerator
from .contract import Backward, Batch, Nets, OptimizerGroup, Optimizers, Role
from .cyclegan import ImagePool, PooledObjective, pooled_discriminator_losses

# name -> (real, fake, pool): what the D step scores
DiscriminatorPairs = dict[str, tuple[torch.Tensor, torch.Tensor, ImagePool]]


class OneSidedObjective(PooledObjective):
    """Base class: subclasses implement ``generator_losses(generator, discriminator, real_a, real_b)`` returning
    (terms with ``loss_g``, the pairs the D step scores: ``{key: (real, fake, pool)}``)."""

    def __init__(self, gan_mode: str = "lsgan"):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r}; expected one of {', '.join(GAN_MODES)}")
        self.gan_mode = gan_mode

    def roles(self) -> dict[str, Role]:
        """CUT's G (``ResnetGenerator``) and D (``PatchDiscriminator``); no heads."""
        return {"generator": Role("generator", ResnetGenerator, translates="AtoB"),
                "discriminator": Role("discriminator", PatchDiscriminator)}

    def optimizers(self) -> dict[str, OptimizerGroup]:
        return {"generator": OptimizerGroup(("generator",)), "discriminator": OptimizerGroup(("discriminator",))}

    def generator_losses(
        self, generator: nn.Module, discriminator: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], DiscriminatorPairs]:
        raise NotImplementedError

    def discriminator_losses(self, discriminator: nn.Module, pairs: DiscriminatorPairs) -> dict[str, torch.Tensor]:
        """One D loss 0.5 * (real + fake) per pair (pools queried in the pairs' order) and their sum ``loss_d``."""
        losses = dict(zip(pairs, pooled_discriminator_losses(discriminator, list(pairs.values()), self.gan_mode)))
        return {**losses, "loss_d": sum(losses.values())}

    def iteration(
        self, nets: Nets, batch: Batch, optimizers: Optimizers, backward: Backward | None = None
    ) -> dict[str, torch.Tensor]:
        """One training iteration: G step (D frozen), then D step on the pooled fakes of this iteration.

        ``nets``: ``generator``, ``discriminator``; ``batch``: ``{"A": (B, C, H, W), "B": (B, C', H, W)}`` in
        [-1, 1]; ``optimizers``: ``generator``, ``discriminator``. ``backward(loss)`` defaults to ``loss.backward()``
        (Lightning passes ``manual_backward``). Returns the detached loss terms (``loss_g``, ``loss_d`` and the
        method's own terms).
        """
        backward = backward or torch.Tensor.backward
        generator, discriminator = nets["generator"], nets["discriminator"]
        opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
        discriminator.requires_grad_(False)  # the G step must not produce D gradients
        terms, pairs = self.generator_losses(generator, discriminator, batch["A"], batch["B"])
        opt_g.zero_grad(set_to_none=True)
        backward(terms["loss_g"])
        opt_g.step()
        discriminator.requires_grad_(True)
        d_terms = self.discriminator_losses(discriminator, pairs)
        opt_d.zero_grad(set_to_none=True)
        backward(d_terms["loss_d"])
        opt_d.step()
        return {k: v.detach() for k, v in {**terms, **d_terms}.items()}
