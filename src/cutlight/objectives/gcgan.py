"""GcGAN (Fu, Gong, Wang, Batmanghelich, Zhang, Tao: "Geometry-Consistent Generative Adversarial Networks for
One-Sided Unsupervised Domain Mapping", CVPR 2019) on CUT's networks.

For a predefined geometric transform f (rotation by 90 degrees or vertical flip) the translation of f(x) should be
the transform of the translation of x. The generator translates both x and f(x); the discriminator judges both
outputs (against real B and f(real B)); and the geometry-consistency term (``geometry_consistency_loss``)

    L_geo = || G(x) - f^-1(G(f(x))) ||_1 + || G(f(x)) - f(G(x)) ||_1

ties them together (each side's target detached, as in the authors' code). Total G loss, as in that code:

    lambda_gan * [GAN(G(x)) + GAN(G(f(x)))] + lambda_ab * lambda_gc * L_geo
      + lambda_ab * lambda_identity * [ |G(y) - y|_1 + |G(f(y)) - f(y)|_1 ]

Defaults are the GcGAN code's training options (lambda_AB 10, lambda_gc 2, lambda_G 1, identity 0.5, pool 50,
geometry rot); its README's example commands may set identity differently (0.3 in some).

Deviations from the authors' code (this objective keeps CUT's roles: one generator, one D):
* the code's ``gc_gan_cross`` model builds a second generator for f(x) (G_X~Y~) but saves G_XY under both names;
  here one generator (shared weights) translates x and f(x), which is the model the code actually saves;
* the code uses a second discriminator D_gc for the transformed domain; here one D scores both orientations
  (its D loss is still the code's sum of the two 0.5 * (real + fake) terms).
"""

from __future__ import annotations

import torch
from torch import nn

from ..losses import (
    GEOMETRIC_TRANSFORMS,
    cycle_loss,
    generator_loss,
    geometric_transform,
    geometry_consistency_loss,
)
from .cyclegan import ImagePool, batched_call
from .onesided import DiscriminatorPairs, OneSidedObjective


class GcGANObjective(OneSidedObjective):
    """GcGAN's losses on the roles ``generator`` and ``discriminator`` (``OneSidedObjective``).

    Args:
        lambda_gan: weight of each adversarial term (the code's lambda_G).
        lambda_ab: base weight of the geometry and identity terms (the code's lambda_AB).
        lambda_gc: geometry-consistency weight, relative to lambda_ab.
        lambda_identity: identity weight, relative to lambda_ab (0 = off; needs as many channels in A as in B).
        transform: ``rot90`` (clockwise, as the code's ``rot``) or ``vflip`` (the code's ``vf``).
        gan_mode: ``lsgan``, ``vanilla``, ``nonsaturating`` or ``hinge``.
        pool_size: size of each image pool (fakes of x and of f(x)); 0 = no pool.

    Loss keys: ``loss_g``, ``loss_g_gan``, ``loss_g_gan_gc``, ``loss_gc``, ``loss_idt``, ``loss_idt_gc``,
    ``loss_d_b`` (real y vs pooled G(x)), ``loss_d_gc`` (real f(y) vs pooled G(f(x))), ``loss_d`` (their sum).
    """

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_ab: float = 10.0,
        lambda_gc: float = 2.0,
        lambda_identity: float = 0.5,
        transform: str = "rot90",
        gan_mode: str = "lsgan",
        pool_size: int = 50,
    ):
        super().__init__(gan_mode)
        if transform not in GEOMETRIC_TRANSFORMS:
            raise ValueError(f"unknown transform {transform!r}; expected one of {', '.join(GEOMETRIC_TRANSFORMS)}")
        self.lambda_gan = float(lambda_gan)
        self.lambda_ab = float(lambda_ab)
        self.lambda_gc = float(lambda_gc)
        self.lambda_identity = float(lambda_identity)
        self.transform = transform
        self.pool_b = ImagePool(pool_size)  # G(x), shown to D
        self.pool_gc = ImagePool(pool_size)  # G(f(x)), shown to D

    def check_channels(self, input_nc: int, output_nc: int) -> None:
        if self.lambda_identity > 0 and input_nc != output_nc:
            raise ValueError(f"model.objective.lambda_identity={self.lambda_identity} needs input_nc == output_nc (G "
                             f"is fed B images), but input_nc={input_nc} and output_nc={output_nc}; set "
                             "lambda_identity=0")

    def generator_losses(
        self, generator: nn.Module, discriminator: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], DiscriminatorPairs]:
        identity = self.lambda_identity > 0
        if identity and real_a.shape[1] != real_b.shape[1]:
            raise ValueError(f"lambda_identity={self.lambda_identity} needs input_nc == output_nc, but A images have "
                             f"{real_a.shape[1]} channels and B images {real_b.shape[1]}; set lambda_identity=0")
        real_gc_a = geometric_transform(real_a, self.transform)  # f(x), (B, C, W, H) for rot90
        real_gc_b = geometric_transform(real_b, self.transform)  # f(y)
        outs = batched_call(generator, [real_a, real_gc_a] + ([real_b, real_gc_b] if identity else []))
        fake_b, fake_gc_b = outs[:2]  # G(x), G(f(x))
        pred, pred_gc = batched_call(discriminator, [fake_b, fake_gc_b])
        zero = fake_b.new_zeros(())
        terms = {
            "loss_g_gan": generator_loss(pred, self.gan_mode) * self.lambda_gan,
            "loss_g_gan_gc": generator_loss(pred_gc, self.gan_mode) * self.lambda_gan,
            "loss_gc": geometry_consistency_loss(fake_b, fake_gc_b, self.transform) * self.lambda_ab * self.lambda_gc,
            "loss_idt": zero,
            "loss_idt_gc": zero,
        }
        if identity:
            idt_b, idt_gc_b = outs[2:]  # G(y), G(f(y))
            terms["loss_idt"] = cycle_loss(idt_b, real_b) * self.lambda_ab * self.lambda_identity
            terms["loss_idt_gc"] = cycle_loss(idt_gc_b, real_gc_b) * self.lambda_ab * self.lambda_identity
        terms["loss_g"] = sum(terms.values(), zero)
        pairs = {"loss_d_b": (real_b, fake_b, self.pool_b), "loss_d_gc": (real_gc_b, fake_gc_b, self.pool_gc)}
        return terms, pairs
