"""One SinCUT training iteration (single-image translation) as plain PyTorch: CUT plus R1 and an L1 identity term.

SinCUT (Park et al. 2020, section 4.3) trains CUT on patches of one source and one target image with
StyleGAN2-style networks (``StyleGAN2Generator`` / ``StyleGAN2Discriminator``). Relative to ``CUTObjective`` the
losses add:

* D step: the R1 gradient penalty on real B images, ``lambda_r1 / 2 * mean_i ||dD(real_b_i)/d real_b_i||^2``
  (``losses.r1_penalty``), every iteration. The reals go through D once, in fp32 with their input gradient kept,
  and that prediction also gives the GAN loss's real term; the fakes go through D in a separate call (batching
  them with the reals would make the penalty's backward and double backward run over the fakes too).
  ``loss_d`` is the GAN term plus the penalty.
* G step: ``lambda_identity * mean |G(real_b) - real_b|`` (``G(real_b)`` comes from the joint forward when
  ``nce_idt`` is on, from an extra forward otherwise).

Everything else (the joint generator forward, the PatchNCE path with external negatives, the step order) is
``CUTObjective``'s. The defaults are the reference's SinCUT settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..losses import discriminator_loss, r1_penalty
from ..networks.sampler import upcast_half
from .contract import Backward, Batch, Nets, Optimizers
from .cut import CUTObjective, Translation


@dataclass
class SinCUTTranslation(Translation):
    """``Translation`` plus the target-domain batch, needed by the identity term."""

    real_b: torch.Tensor | None = None  # (B, C, H, W)


class SinCUTObjective(CUTObjective):
    """SinCUT's losses: CUT (PatchNCE with identity NCE, external negatives) + R1 on real B + L1 identity.

    Args: those of ``CUTObjective`` (defaults: lambda_nce 4, nce_layers 0, 2, 4 of the StyleGAN2 generator,
    num_patches 1 per layer and image, negatives from the whole minibatch, non-saturating GAN loss), plus
        lambda_r1: R1 weight gamma (the penalty is gamma / 2 * E||grad||^2); 0 turns it off.
        lambda_identity: weight of the L1 identity term; 0 turns it off.

    ``iteration`` returns, besides CUT's terms, ``loss_r1`` (already weighted, part of ``loss_d``) and
    ``loss_idt`` (weighted, part of ``loss_g``).
    """

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_nce: float = 4.0,
        nce_idt: bool = True,
        nce_layers: Sequence[int] = (0, 2, 4),
        num_patches: int = 1,
        nce_temperature: float = 0.07,
        negatives: str = "batch",
        flip_equivariance: bool = False,
        gan_mode: str = "nonsaturating",
        lambda_r1: float = 1.0,
        lambda_identity: float = 1.0,
    ):
        super().__init__(lambda_gan=lambda_gan, lambda_nce=lambda_nce, nce_idt=nce_idt, nce_layers=nce_layers,
                         num_patches=num_patches, nce_temperature=nce_temperature, negatives=negatives,
                         flip_equivariance=flip_equivariance, gan_mode=gan_mode)
        for name, value in (("lambda_r1", lambda_r1), ("lambda_identity", lambda_identity)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.lambda_r1 = float(lambda_r1)
        self.lambda_identity = float(lambda_identity)

    def translate(self, generator: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor) -> SinCUTTranslation:
        out = super().translate(generator, real_a, real_b)
        return SinCUTTranslation(**vars(out), real_b=real_b)

    def discriminator_losses(
        self, discriminator: nn.Module, real_b: torch.Tensor, fake_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``loss_d`` = GAN loss 0.5 * (fake + real) + ``loss_r1``."""
        if self.lambda_r1 == 0:
            loss_d = self.discriminator_loss(discriminator, real_b, fake_b)
            return {"loss_d": loss_d, "loss_r1": loss_d.new_zeros(())}
        pred_fake = discriminator(fake_b.detach())  # (B, 1)
        loss_r1, pred_real = r1_penalty(discriminator, real_b, self.lambda_r1)  # pred_real (B, 1), fp32
        loss_gan = discriminator_loss(pred_real, pred_fake, self.gan_mode)
        return {"loss_d": loss_gan + loss_r1, "loss_r1": loss_r1}

    def generator_losses(
        self, discriminator: nn.Module, generator: nn.Module, sampler: nn.Module, out: SinCUTTranslation
    ) -> dict[str, torch.Tensor]:
        """CUT's G + heads terms plus ``loss_idt``; ``loss_g`` includes it."""
        terms = super().generator_losses(discriminator, generator, sampler, out)
        loss_idt = out.fake_b.new_zeros(())
        if self.lambda_identity > 0:
            idt_b = out.idt_b if out.idt_b is not None else generator(out.real_b)
            loss_idt = F.l1_loss(upcast_half(idt_b), upcast_half(out.real_b)) * self.lambda_identity
        terms["loss_idt"] = loss_idt
        terms["loss_g"] = terms["loss_g"] + loss_idt
        return terms

    def iteration(
        self, nets: Nets, batch: Batch, optimizers: Optimizers, backward: Backward | None = None
    ) -> dict[str, torch.Tensor]:
        """``CUTObjective.iteration``; ``loss_r1`` is reported (as 0) also when there is no D step (lambda_gan 0)."""
        losses = super().iteration(nets, batch, optimizers, backward)
        losses.setdefault("loss_r1", torch.zeros_like(losses["loss_d"]))
        return losses
