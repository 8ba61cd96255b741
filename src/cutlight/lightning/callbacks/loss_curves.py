"""``LossCurves``: the run's training losses and validation metrics against training batches, as one picture."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image

from ...reports.curves import curves_figure
from ..rundir import batches_done
from ..rundir import output_dir as run_dir
from .drawing import log_image

log = logging.getLogger(__name__)


class LossCurves(pl.Callback):
    """Collects ``train/*`` losses each batch and ``val/*`` metrics each validation (and those a callback computed
    during training: ``TranslationScore(every_n_steps=N)``); plots them at the end of training to
    ``plots/loss_curves.png`` (the losses faint, their moving average over ``smooth`` batches on top), drawn by
    ``cutlight.reports.curves.curves_figure`` as the sweep report's curves are."""

    def __init__(self, smooth: int = 25, dirpath: str | None = None):
        self.smooth = smooth
        self.dirpath = dirpath
        self.train: dict[str, list[tuple[int, float]]] = {}
        self.val: dict[str, list[tuple[int, float]]] = {}
        self.path: Path | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = batches_done(trainer)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/loss"):
                self.train.setdefault(key, []).append((step, float(value)))

    def on_validation_end(self, trainer, pl_module) -> None:
        # after the module's on_validation_epoch_end: this epoch's val/* are in callback_metrics by now
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and not key.endswith("_std"):
                self.val.setdefault(key, []).append((batches_done(trainer), float(value)))

    def series(self, trainer: pl.Trainer) -> dict[str, tuple[list[int], list[float]]]:
        """``{key: (steps, values)}``: the training losses, then the validation metrics (with the scores other
        callbacks computed during training, their ``train_time_val``), each group sorted by key."""
        val = {k: list(v) for k, v in self.val.items()}
        for cb in trainer.callbacks:
            for key, points in getattr(cb, "train_time_val", {}).items():
                val[key] = sorted(val.get(key, []) + points)
        panels = sorted(self.train.items()) + sorted(val.items())
        return {key: ([s for s, _ in points], [v for _, v in points]) for key, points in panels if points}

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.train:
            return
        series = self.series(trainer)
        fig = curves_figure([(None, None, series)], list(series), smooth=self.smooth, raw=True,
                            panel_size=(4.2, 3.0))
        fig.tight_layout()
        self.path = run_dir(trainer, self.dirpath, "plots") / "loss_curves.png"
        fig.savefig(self.path, dpi=110)
        image = torch.from_numpy(np.array(Image.open(self.path).convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
        log_image(trainer, "plots/loss_curves", image, batches_done(trainer))
        log.info("loss curves: %s", self.path)

    def summary(self) -> dict[str, str]:
        """The end-of-run summary's line: where the plot is."""
        return {"loss curves": str(self.path)} if self.path else {}
