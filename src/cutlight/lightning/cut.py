"""``CUTModule``: CUT / FastCUT (and the one-sided objectives on the same networks) as a LightningModule.

The math of an iteration lives in the objective (plain PyTorch, ``cutlight.objectives``); this module builds the
networks, runs the iteration with Lightning's manual optimization and logs. Validation, prediction and the
schedule come from ``TranslationModule``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..checks import ConfigValueError, check_int, check_settings
from ..networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from ..objectives import CUTObjective, CycleGANObjective
from ..optim import check_adam_kwargs
from .base import TranslationModule, network, plain
from .reliability import NonFiniteGuard


class CUTModule(TranslationModule):
    """CUT / FastCUT with manual optimization: one Adam for G + MLP heads, one for D.

    Args:
        generator: ``ResnetGenerator`` keywords, or ``{"_target_": "pkg.Class", ...}`` for another generator class
            (it must follow the generator protocol: ``forward(x)``, ``forward_with_features(x, layers)``,
            ``encode(x, layers)``, ``feature_channels(layers)``, ``input_nc``, ``output_nc``, ``size_multiple``),
            or an ``nn.Module`` instance (not saved in the hyperparameters: pass it again to
            ``load_from_checkpoint``).
        discriminator: ``PatchDiscriminator`` keywords, a ``_target_`` spec, or an instance (any image -> logits).
        sampler: ``PatchSampler`` keywords other than ``in_channels`` (taken from the generator), a ``_target_``
            spec (called with ``in_channels=...``), or an instance.
        objective: ``CUTObjective`` keywords (the CUT / FastCUT presets and ablations), or a ``_target_`` spec of
            another objective with the same ``iteration`` signature (e.g. the one-sided baselines).
        optimizer: ``torch.optim.Adam`` keywords for both optimizers (defaults: lr 2e-4, betas (0.5, 0.999),
            ``fused: null`` = fused on CUDA and CPU).
        n_epochs / n_epochs_decay: constant learning rate, then linear decay to zero; training stops after both.
        warmup_iters: scale the learning rate linearly from 1/warmup_iters to 1 over the first ``warmup_iters``
            iterations (0: off, the papers' recipe; see ``cutlight.optim.apply_warmup``).
        val_metrics: ``True`` (FID/KID when the Inception weights are present), a dict of settings (see
            ``cutlight.lightning.base.DEFAULT_METRICS``; ``extractor`` may be a ``_target_`` spec), or ``False``.
        channels_last: keep networks and inputs in channels-last memory format.
        compile: ``torch.compile`` the networks in place (state-dict keys unchanged).
        nonfinite: what a NaN / infinite loss or gradient does (``NonFiniteGuard`` keywords): ``policy`` ``stop``
            (default: raise ``NonFiniteError``, the bad update not applied) or ``skip`` (drop the iteration, stop
            after ``max_skips`` in a row; default 10).

    Batches: ``{"A": (B, C, H, W), "B": (B, C, H, W)}`` in [-1, 1] for training; validation batches come from
    two loaders, ``{"image": ...}`` of A images to translate (index 0) and real B images (index 1).
    """

    def __init__(
        self,
        generator: dict | nn.Module | None = None,
        discriminator: dict | nn.Module | None = None,
        sampler: dict | nn.Module | None = None,
        objective: dict | None = None,
        optimizer: dict | None = None,
        n_epochs: int = 200,
        n_epochs_decay: int = 200,
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
        check_int("n_epochs", n_epochs, low=0)
        check_int("n_epochs_decay", n_epochs_decay, low=0)
        check_int("warmup_iters", warmup_iters, low=0)
        if n_epochs + n_epochs_decay < 1:
            raise ConfigValueError("n_epochs", n_epochs, "n_epochs + n_epochs_decay >= 1 (the training length)")
        nets = {"generator": generator, "discriminator": discriminator, "sampler": sampler}
        self.save_hyperparameters({
            **{k: plain(v or {}) for k, v in nets.items() if not isinstance(v, nn.Module)},
            "objective": plain(objective or {}), "optimizer": plain(optimizer or {}), "n_epochs": n_epochs,
            "n_epochs_decay": n_epochs_decay, "warmup_iters": warmup_iters, "val_metrics": plain(val_metrics),
            "channels_last": channels_last, "compile": compile, "nonfinite": nonfinite,
        })
        self.objective = network(plain(objective or {}), CUTObjective, "objective")
        if isinstance(self.objective, CycleGANObjective):
            raise ValueError("the CycleGAN objective (loss=cyclegan) trains two generators: use it with "
                             "model=cyclegan (CycleGANModule)")
        self.generator = network(plain(generator) if isinstance(generator, dict) else generator,
                                 ResnetGenerator, "generator")
        self.discriminator = network(plain(discriminator) if isinstance(discriminator, dict) else discriminator,
                                     PatchDiscriminator, "discriminator")
        layers = getattr(self.objective, "nce_layers", None)
        if isinstance(sampler, nn.Module) or not layers:
            self.sampler = sampler if isinstance(sampler, nn.Module) else None
        else:
            self.sampler = network(plain(sampler or {}), PatchSampler, "sampler",
                                   in_channels=self.generator.feature_channels(layers))
        self.finish_networks(*(n for n in (self.generator, self.discriminator, self.sampler) if n is not None))

    def translate(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def optimizer_groups(self):
        heads = list(self.sampler.parameters()) if self.sampler is not None else []
        return [*self.generator.parameters(), *heads], self.discriminator.parameters()

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real_a, real_b = self.prepare(batch["A"]), self.prepare(batch["B"])
        losses = self.objective.iteration(
            self.generator, self.discriminator, self.sampler, real_a, real_b, opt_g, opt_d,
            backward=self.manual_backward,
        )
        self.log_losses(losses, batch_size=real_a.shape[0])
        if "loss_nce" in losses:
            self.log("train/nce", losses["loss_nce"], prog_bar=True, logger=False, batch_size=real_a.shape[0])
