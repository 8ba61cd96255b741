"""``CycleGANModule``: ``TranslationModule`` configured for CycleGAN (Zhu et al. 2017).

The objective is ``cutlight.objectives.CycleGANObjective``: two generators (G_A: A -> B, G_B: B -> A) and two
PatchGANs (D_A judges B images, D_B judges A images) with the original layout by default (strided and transposed
convolutions, no antialiasing, N(0, 0.02) init), one Adam for both generators and one for both discriminators,
the paper's 100 + 100 epochs. The image pools are saved in checkpoints (``objective._extra_state``), so a resumed
run continues with the same history of fakes. Validation and prediction use G_A (A -> B).
"""

from __future__ import annotations

from torch import nn

from ..objectives import CycleGANObjective
from ..objectives.cyclegan import ORIGINAL_DISCRIMINATOR, ORIGINAL_GENERATOR
from .base import TranslationModule, plain


class CycleGANModule(TranslationModule):
    """CycleGAN with manual optimization (arguments: those of ``TranslationModule``; ``generator`` /
    ``discriminator`` keywords are shared by G_A and G_B / D_A and D_B; the objective must be a
    ``CycleGANObjective``).

    State-dict prefixes: ``gen_a.``, ``gen_b.``, ``disc_a.``, ``disc_b.`` (the original's netG_A, netG_B, netD_A,
    netD_B); ``cutlight.load_generator(ckpt, direction="AtoB"|"BtoA")`` picks a generator.
    """

    default_objective = CycleGANObjective

    def __init__(
        self,
        generator: dict | None = None,
        discriminator: dict | None = None,
        sampler: dict | None = None,
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
        # the original layout in the saved hyperparameters too (as checkpoints before the method contract have it)
        generator = {**ORIGINAL_GENERATOR, **plain(generator or {})}
        discriminator = {**ORIGINAL_DISCRIMINATOR, **plain(discriminator or {})}
        super().__init__(generator, discriminator, sampler, objective, optimizer, n_epochs, n_epochs_decay,
                         warmup_iters, val_metrics, channels_last, compile, nonfinite)

    def check_objective(self, objective: nn.Module) -> None:
        if not isinstance(objective, CycleGANObjective):
            raise ValueError(f"CycleGANModule needs a CycleGANObjective (objective=cyclegan, which model=cyclegan "
                             f"selects); got {type(objective).__name__}. Other methods train in TranslationModule")

    @property
    def generator(self) -> nn.Module:
        """G_A, the A -> B generator (what validation, prediction and export use)."""
        return self.gen_a
