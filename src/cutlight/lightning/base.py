"""``TranslationModule``: what every translation method's LightningModule shares.

- manual optimization with two optimizers (generator side, discriminator side) built by ``cutlight.optim``, the
  epoch-based schedule (constant, then linear decay) stepped at each epoch end; training stops when the schedule
  ends (the trainer's ``max_epochs`` is capped at ``n_epochs + n_epochs_decay``; -1 or None mean "the schedule");
- validation FID/KID through a ``cutlight.metrics.Evaluator`` (real statistics computed once per fit);
- translation: ``forward`` (any image size) and ``predict_step``; channels-last inputs; ``torch.compile`` of the
  networks;
- logging: ``train/<loss>`` per batch, ``train/lr``, ``val/fid``, ``val/kid``, ``val/kid_std``.

A method subclass builds its networks and objective in ``__init__`` (eagerly: DDP wrapping, optimizer creation
and checkpoint loading need every parameter before the first step) and implements ``translate``,
``optimizer_groups`` and ``training_step``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ..build import build
from ..inference import pad_to_multiple
from ..metrics import Evaluator
from ..optim import build_optimizers

log = logging.getLogger(__name__)

DEFAULT_METRICS = {"fid": True, "kid": True, "feature": 2048, "antialias": True, "kid_subset_size": 1000,
                   "extractor": "inception"}


def plain(value: Any) -> Any:
    """Hyperparameters as plain Python containers (checkpoints load with ``weights_only=True``)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        return [plain(v) for v in value]
    return value


def network(spec: dict | nn.Module | None, default: type, name: str, **extra) -> nn.Module:
    """A network from a spec (``{"_target_": "pkg.Class", **kwargs}``, ``default`` without ``_target_``), or the
    ``nn.Module`` instance itself."""
    if isinstance(spec, nn.Module):
        return spec
    return build(spec, default, name, **extra)


class TranslationModule(pl.LightningModule):
    """Shared base of cutlight's LightningModules (see the module docstring).

    The subclass saves its hyperparameters, which must include ``optimizer`` (``torch.optim.Adam`` keywords),
    ``n_epochs``, ``n_epochs_decay``, ``val_metrics`` (``True`` or a dict of ``DEFAULT_METRICS`` keys: FID/KID
    when the standard Inception weights are on this machine, else a one-line warning and validation without them;
    an explicit ``weights_path`` that does not exist is an error; ``False``/``None``: off), ``channels_last`` and
    ``compile``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.evaluator: Evaluator | None = None  # a plain object: never in state dicts or DDP buckets

    # ------------------------------------------------------------------ subclass interface
    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) in [-1, 1] -> (B, C_out, H, W), the direction validated and predicted."""
        raise NotImplementedError

    def optimizer_groups(self) -> tuple[Iterable[nn.Parameter], Iterable[nn.Parameter]]:
        """(generator-side parameters, discriminator-side parameters)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared setup
    def finish_networks(self, *nets: nn.Module) -> None:
        """Channels-last memory format and ``module.compile()`` (state-dict keys unchanged) per the hparams."""
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            for net in nets:
                net.compile()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    @property
    def size_multiple(self) -> int:
        """``translate`` needs H and W divisible by this: ``self.generator``'s (1 without one)."""
        return int(getattr(getattr(self, "generator", None), "size_multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``translate`` for any H and W: reflect-padded at the bottom and right to ``size_multiple`` and cropped
        back (a no-op at training sizes), so full-size images of any shape validate and predict."""
        h, w = x.shape[-2:]
        return self.translate(self.prepare(pad_to_multiple(x, self.size_multiple)))[..., :h, :w]

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        gen_params, disc_params = self.optimizer_groups()
        return build_optimizers(gen_params, disc_params, self.hparams.n_epochs, self.hparams.n_epochs_decay,
                                device=self.device, **self.hparams.optimizer)

    @property
    def total_epochs(self) -> int:
        return self.hparams.n_epochs + self.hparams.n_epochs_decay

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def log_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """``train/<name>`` for every loss term, ``train/lr`` of the generator side."""
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/lr", self.optimizers()[0].param_groups[0]["lr"], batch_size=batch_size)

    # ------------------------------------------------------------------ validation metrics
    def _build_evaluator(self) -> None:
        cfg = self.hparams.val_metrics
        if self.evaluator is not None or cfg in (None, False):
            return
        settings = {**DEFAULT_METRICS, **(cfg if isinstance(cfg, dict) else {})}
        try:
            self.evaluator = Evaluator(**settings)
        except RuntimeError as err:  # the standard Inception weights are not on this machine
            if settings.get("weights_path"):
                raise
            log.warning("validation without FID/KID: %s. Run `make fid-weights` (or `python -m "
                        "cutlight.metrics.inception_weights`) once to enable them.", str(err).split(";")[0])

    def setup(self, stage: str) -> None:
        if stage == "fit":  # training ends with the schedule (the learning rate is zero after it)
            loop = self.trainer.fit_loop
            if loop.max_epochs is None or loop.max_epochs < 0 or loop.max_epochs > self.total_epochs:
                loop.max_epochs = self.total_epochs
        if stage in ("fit", "validate", "test"):
            self._build_evaluator()

    def on_fit_start(self) -> None:
        # real statistics are computed once per fit: drop any left by an earlier fit or ``trainer.validate``
        if self.evaluator is not None:
            self.evaluator.reset(reals=True)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0: source images to translate; loader 1: real target images (fed once per fit)."""
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        if dataloader_idx == 0:
            self.evaluator.update(self(batch["image"]), real=False)
        elif not self._reals_fed:
            self.evaluator.update(batch["image"], real=True)

    def on_validation_epoch_start(self) -> None:
        self._reals_fed = self.evaluator is not None and self.evaluator.has_reals

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        values = self.evaluator.compute()  # a collective under DDP: every rank calls it
        self.evaluator.reset(reals=False)
        self.log_dict({f"val/{k}": v.float() for k, v in values.items()}, sync_dist=False)

    @torch.no_grad()
    def visuals(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Labelled image columns for grids (each (N, C, H, W) in [-1, 1]): the source, its translation, a target
        image and the translation of that target image (identity). Methods with more images override this."""
        return {"A": real_a, "G(A)": self(real_a), "B": real_b, "G(B)": self(real_b)}

    # ------------------------------------------------------------------ prediction
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Translate ``batch["image"]``: returns ``{"image": (B, C, H, W) in [-1, 1], "path": [...]}`` (clamped:
        generators without a final tanh, e.g. SinCUT's, may leave the range slightly)."""
        return {"image": self(batch["image"]).float().clamp(-1, 1), "path": batch.get("path")}
