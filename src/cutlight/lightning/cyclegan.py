"""``CycleGANModule``: CycleGAN (Zhu et al. 2017) in the same trainer as CUT.

Two generators (G_A: A -> B, G_B: B -> A) and two PatchGANs (D_A judges B images, D_B judges A images) with the
original layout (``ORIGINAL_GENERATOR`` / ``ORIGINAL_DISCRIMINATOR``: strided and transposed convolutions, no
antialiasing, N(0, 0.02) init), one Adam for both generators and one for both discriminators. The iteration is
``cutlight.objectives.CycleGANObjective`` (G step, then D step on pooled fakes); the image pools are saved in
checkpoints (``objective._extra_state``), so a resumed run continues with the same history of fakes. Validation,
prediction and the schedule come from ``TranslationModule``: they use G_A (A -> B).
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import check_int, check_settings
from ..networks import PatchDiscriminator, ResnetGenerator
from ..objectives.cyclegan import ORIGINAL_DISCRIMINATOR, ORIGINAL_GENERATOR, CycleGANObjective
from ..optim import check_adam_kwargs
from .base import TranslationModule, network, plain
from .reliability import NonFiniteGuard


class CycleGANModule(TranslationModule):
    """CycleGAN with manual optimization.

    Args:
        generator: keywords shared by G_A and G_B (``ResnetGenerator`` with the original layout by default;
            ``input_nc`` / ``output_nc`` are those of G_A, G_B gets them swapped), or a ``_target_`` spec.
        discriminator: keywords shared by D_A and D_B (``PatchDiscriminator``, original layout); D_A takes
            ``output_nc`` channels and D_B ``input_nc`` (set from the generator).
        objective: ``CycleGANObjective`` keywords (lambda_a, lambda_b, lambda_identity, gan_mode, pool_size).
        optimizer, n_epochs, n_epochs_decay, warmup_iters, val_metrics, channels_last, compile, nonfinite: as ``CUTModule``
            (CycleGAN's paper schedule: 100 + 100 epochs).

    State-dict prefixes: ``gen_a.``, ``gen_b.``, ``disc_a.``, ``disc_b.`` (the original's netG_A, netG_B, netD_A,
    netD_B); ``cutlight.load_generator(ckpt, direction="AtoB"|"BtoA")`` picks a generator.
    """

    def __init__(
        self,
        generator: dict | None = None,
        discriminator: dict | None = None,
        objective: dict | None = None,
        optimizer: dict | None = None,
        n_epochs: int = 100,
        n_epochs_decay: int = 100,
        warmup_iters: int = 0,
        val_metrics: dict | bool | None = True,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite: dict | None = None,
    ):
        super().__init__()
        check_settings("optimizer", check_adam_kwargs, plain(optimizer or {}))
        nonfinite = plain(nonfinite or {})
        check_settings("nonfinite", lambda kw: NonFiniteGuard(**kw), nonfinite)
        check_int("warmup_iters", warmup_iters, low=0)
        gen = {**ORIGINAL_GENERATOR, **plain(generator or {})}
        disc = {**ORIGINAL_DISCRIMINATOR, **plain(discriminator or {})}
        self.save_hyperparameters({
            "generator": gen, "discriminator": disc, "objective": plain(objective or {}),
            "optimizer": plain(optimizer or {}), "n_epochs": n_epochs, "n_epochs_decay": n_epochs_decay,
            "warmup_iters": warmup_iters,
            "val_metrics": plain(val_metrics), "channels_last": channels_last, "compile": compile,
            "nonfinite": nonfinite,
        })
        self.objective = network(plain(objective or {}), CycleGANObjective, "objective")
        if not isinstance(self.objective, CycleGANObjective):
            raise ValueError(f"CycleGANModule needs a CycleGANObjective (loss=cyclegan, which model=cyclegan "
                             f"selects); got {type(self.objective).__name__}")
        in_nc, out_nc = gen.get("input_nc", 3), gen.get("output_nc", 3)
        if self.objective.lambda_identity > 0 and in_nc != out_nc:
            raise ValueError(
                f"model.objective.lambda_identity={self.objective.lambda_identity} needs equal channel counts "
                f"(G_A is fed B images), but input_nc={in_nc} and output_nc={out_nc}; set lambda_identity=0")
        swapped = {**gen, "input_nc": out_nc, "output_nc": in_nc}
        self.gen_a = network(gen, ResnetGenerator, "generator")
        self.gen_b = network(swapped, ResnetGenerator, "generator")
        self.disc_a = network({**disc, "input_nc": out_nc}, PatchDiscriminator, "discriminator")
        self.disc_b = network({**disc, "input_nc": in_nc}, PatchDiscriminator, "discriminator")
        self.finish_networks(self.gen_a, self.gen_b, self.disc_a, self.disc_b)

    @property
    def generator(self) -> nn.Module:
        """G_A, the A -> B generator (what validation, prediction and export use)."""
        return self.gen_a

    def translate(self, x: torch.Tensor) -> torch.Tensor:
        return self.gen_a(x)

    def input_networks(self) -> list[tuple[nn.Module, int]]:
        """Both generators and both discriminators see training crops (checked against ``data.crop_size``)."""
        return [(net, int(net.input_nc)) for net in (self.gen_a, self.gen_b, self.disc_a, self.disc_b)]

    def optimizer_groups(self):
        return ([*self.gen_a.parameters(), *self.gen_b.parameters()],
                [*self.disc_a.parameters(), *self.disc_b.parameters()])

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real_a, real_b = self.prepare(batch["A"]), self.prepare(batch["B"])
        losses = self.objective.iteration(self.gen_a, self.gen_b, self.disc_a, self.disc_b, real_a, real_b,
                                          opt_g, opt_d, backward=self.manual_backward)
        self.log_losses(losses, batch_size=real_a.shape[0])
        self.log("train/cycle", losses["loss_cycle_a"], prog_bar=True, logger=False, batch_size=real_a.shape[0])

    @torch.no_grad()
    def visuals(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Labelled image columns for grids: A, G_A(A), G_B(G_A(A)), B, G_B(B)."""
        fake_b = self.gen_a(self.prepare(real_a))
        return {"A": real_a, "G_A(A)": fake_b, "G_B(G_A(A))": self.gen_b(fake_b), "B": real_b,
                "G_B(B)": self.gen_b(self.prepare(real_b))}
