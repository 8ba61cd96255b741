"""``CUTModule``: the LightningModule that wires CUT's networks, optimizers, schedule and validation metrics.

The math of an iteration lives in ``CUTObjective`` (plain PyTorch); this module only runs it with Lightning's
manual optimization, logs, steps the learning-rate schedule and evaluates FID/KID.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from .networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from .objectives import CUTObjective

DEFAULT_METRICS = {"fid": True, "kid": True, "feature": 2048, "antialias": True, "kid_subset_size": 1000,
                   "extractor": "inception"}


def linear_decay_factor(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """LR multiplier after ``epoch`` finished epochs: 1 for ``n_epochs``, then linear towards 0 over
    ``n_epochs_decay`` (the reference's rule: 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1))."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def _plain(value: Any) -> Any:
    """Hyperparameters as plain Python containers (checkpoints load with ``weights_only=True``)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        return [_plain(v) for v in value]
    return value


class CUTModule(pl.LightningModule):
    """CUT / FastCUT with manual optimization: one Adam for G + MLP heads, one for D.

    Args:
        generator: ``ResnetGenerator`` keyword arguments.
        discriminator: ``PatchDiscriminator`` keyword arguments.
        sampler: ``PatchSampler`` keyword arguments other than ``in_channels`` (taken from the generator).
        objective: ``CUTObjective`` keyword arguments (the CUT / FastCUT presets and ablations).
        optimizer: ``torch.optim.Adam`` keyword arguments shared by both optimizers (``fused: null`` = fused on
            CUDA and CPU, about 8x faster than the per-parameter loop on CPU; PyTorch's default elsewhere).
        n_epochs / n_epochs_decay: constant learning rate, then linear decay (stepped at each epoch end).
        val_metrics: FID/KID settings (keys of ``DEFAULT_METRICS``), or ``None`` to validate without metrics.
        channels_last: keep networks and inputs in channels-last memory format.
        compile: ``torch.compile`` the networks in place (state-dict keys unchanged).

    Batches: ``{"A": (B, C, H, W), "B": (B, C, H, W)}`` in [-1, 1] for training; validation batches come from
    two loaders, ``{"image": ...}`` of A images to translate (index 0) and real B images (index 1).
    """

    def __init__(
        self,
        generator: dict | None = None,
        discriminator: dict | None = None,
        sampler: dict | None = None,
        objective: dict | None = None,
        optimizer: dict | None = None,
        n_epochs: int = 200,
        n_epochs_decay: int = 200,
        val_metrics: dict | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters({
            "generator": _plain(generator or {}), "discriminator": _plain(discriminator or {}),
            "sampler": _plain(sampler or {}), "objective": _plain(objective or {}),
            "optimizer": _plain(optimizer or {}), "n_epochs": n_epochs, "n_epochs_decay": n_epochs_decay,
            "val_metrics": _plain(val_metrics), "channels_last": channels_last, "compile": compile,
        })
        self.automatic_optimization = False
        hp = self.hparams
        self.objective = CUTObjective(**hp.objective)
        self.generator = ResnetGenerator(**hp.generator)
        self.discriminator = PatchDiscriminator(**hp.discriminator)
        self.sampler = PatchSampler(self.generator.feature_channels(self.objective.nce_layers), **hp.sampler)
        if channels_last:
            self.to(memory_format=torch.channels_last)
        if compile:
            for net in (self.generator, self.discriminator, self.sampler):
                net.compile()
        # Metrics are kept outside the module tree: no Inception weights in checkpoints, none in DDP's buckets.
        self._metrics: dict[str, nn.Module] = {}
        self._metric_counts = {"fake": 0, "real": 0}
        self._reals_done = False

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        kwargs = {"lr": 2e-4, "betas": (0.5, 0.999), "fused": None, **self.hparams.optimizer}
        if kwargs["fused"] is None:
            kwargs["fused"] = self.device.type in ("cuda", "cpu")
        kwargs["betas"] = tuple(kwargs["betas"])
        opt_g = torch.optim.Adam([*self.generator.parameters(), *self.sampler.parameters()], **kwargs)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), **kwargs)
        n, d = self.hparams.n_epochs, self.hparams.n_epochs_decay
        schedulers = [
            torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: linear_decay_factor(epoch, n, d))
            for opt in (opt_g, opt_d)
        ]
        return [opt_g, opt_d], schedulers

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real_a, real_b = self._prepare(batch["A"]), self._prepare(batch["B"])
        losses = self.objective.iteration(
            self.generator, self.discriminator, self.sampler, real_a, real_b, opt_g, opt_d,
            backward=self.manual_backward,
        )
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=False, batch_size=real_a.shape[0])
        self.log("train/lr", opt_g.param_groups[0]["lr"], batch_size=real_a.shape[0])
        self.log("train/nce", losses["loss_nce"], prog_bar=True, logger=False, batch_size=real_a.shape[0])

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def forward(self, real_a: torch.Tensor) -> torch.Tensor:
        """Translate (B, C, H, W) images in [-1, 1] from A to B."""
        return self.generator(self._prepare(real_a))

    # ------------------------------------------------------------------ validation metrics
    @property
    def metric_settings(self) -> dict | None:
        cfg = self.hparams.val_metrics
        return None if cfg is None else {**DEFAULT_METRICS, **cfg}

    def _build_metrics(self) -> None:
        from .metrics import TinyFeatureExtractor, build_metrics

        cfg = self.metric_settings
        if cfg is None or self._metrics:
            return
        if cfg["extractor"] not in ("inception", "tiny"):
            raise ValueError(f"unknown val_metrics.extractor {cfg['extractor']!r}; expected one of inception, tiny")
        extractor = TinyFeatureExtractor(cfg["feature"]) if cfg["extractor"] == "tiny" else None
        self._metrics = build_metrics(
            fid=cfg["fid"], kid=cfg["kid"], kid_subset_size=cfg["kid_subset_size"], feature=cfg["feature"],
            antialias=cfg["antialias"], feature_extractor=extractor,
        )
        for metric in self._metrics.values():
            metric.to(self.device)

    def setup(self, stage: str) -> None:
        if stage in ("fit", "validate"):
            self._build_metrics()

    def on_fit_start(self) -> None:
        # Real statistics are computed once per fit: drop any left by an earlier fit or ``trainer.validate``
        # (``reset_real_features=False`` keeps them through ``reset()``), else the reals would be counted twice.
        for metric in self._metrics.values():
            metric.reset_real_features = True
            metric.reset()
            metric.reset_real_features = False
            metric.to(self.device)
        self._metric_counts = {"fake": 0, "real": 0}
        self._reals_done = False

    def _update_metrics(self, images: torch.Tensor, real: bool) -> None:
        from .metrics import to_uint8

        with torch.autocast(device_type=self.device.type, enabled=False):
            images_u8 = to_uint8(images.float())  # (B, 3, H, W) uint8
            for metric in self._metrics.values():
                if metric.device != images_u8.device:  # trainer.validate has no on_fit_start to move them
                    metric.to(images_u8.device)
                metric.update(images_u8, real=real)
        self._metric_counts["real" if real else "fake"] += images.shape[0]

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self._metrics or self.trainer.sanity_checking:
            return
        if dataloader_idx == 0:
            self._update_metrics(self(batch["image"]), real=False)
        elif not self._reals_done:
            self._update_metrics(batch["image"], real=True)

    def on_validation_epoch_end(self) -> None:
        if not self._metrics or self.trainer.sanity_checking:
            return
        counts = torch.tensor([self._metric_counts["fake"], self._metric_counts["real"]], device=self.device)
        n_fake, n_real = (int(c) for c in self.trainer.strategy.reduce(counts, reduce_op="sum"))
        if n_fake < 2 or n_real < 2:
            raise RuntimeError(f"FID/KID need >= 2 images per side; validation gave {n_fake} fake, {n_real} real")
        values = {}
        if "fid" in self._metrics:
            values["val/fid"] = self._metrics["fid"].compute()  # sum states: synced across ranks in compute
        if "kid" in self._metrics:  # cutlight.metrics.KID: DDP-safe sync, subset size clamped, fixed seed
            values["val/kid"], values["val/kid_std"] = self._metrics["kid"].compute()
        for metric in self._metrics.values():
            metric.reset()  # fake statistics only (reset_real_features=False)
        self._metric_counts["fake"] = 0
        self._reals_done = True
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=False)
