"""``TranslationWriter``: ``trainer.predict`` writes the translated images as files, on any number of devices.

    trainer = pl.Trainer(accelerator="gpu", devices=8, strategy="ddp",
                         callbacks=[TranslationWriter("translated/")])
    trainer.predict(model, datamodule=UnpairedDataModule(root="datasets/horse2zebra"), return_predictions=False)

The datamodule's ``predict_dataloader`` gives the source test images at their own size with their paths;
``TranslationModule.predict_step`` pads each to the generator's ``size_multiple`` and crops the translation back.
Under DDP Lightning shards the predict loader with its ``UnrepeatedDistributedSampler`` (each image on exactly one
rank), and each rank writes its own images: no image is written twice, none is missed.

Files follow ``cutlight-translate``'s rules (``cutlight.inference.files``): ``output_dir/<path relative to the input
folder>/<stem>.<ext>``; every output name is planned on every rank before anything is translated and two inputs
that would write one file stop the run (``plan_outputs``); files are written under a temporary name and renamed
(``save_image``), so an interrupted run leaves no truncated image; existing outputs are skipped unless ``overwrite``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import BasePredictionWriter

from ...inference.files import FORMATS, TranslationReport, plan_outputs, save_image
from ...inference.tensors import tensor_to_image
from ..rundir import run_dir

log = logging.getLogger(__name__)


class TranslationWriter(BasePredictionWriter):
    """Writes each batch's translations (``{"image": (B, C, H, W) in [-1, 1], "path": [...]}``, as returned by
    ``TranslationModule.predict_step``) to image files as soon as it is predicted.

    Args:
        output_dir: where to write; default ``<run directory>/translated`` (``cutlight.lightning.rundir``).
        ext: png (default), jpg, jpeg, webp, bmp, tif or tiff.
        overwrite: replace existing files (default: skip them, so a rerun resumes).
        keep_suffix: name outputs ``x.jpg.png`` (never collide) instead of ``x.png``.

    Inputs are named relative to the predict dataset's ``root`` folder (``SingleFolderDataset``); a dataset
    without ``root`` / ``paths`` gives ``<file name stem>.<ext>``, or ``<dataset index>.<ext>`` without paths.
    After ``trainer.predict``: ``report`` (this rank's ``TranslationReport``) and ``totals`` (written / skipped /
    failed over all ranks). Pass ``return_predictions=False`` to ``trainer.predict`` for large folders (otherwise
    Lightning also keeps every translated image in memory).
    """

    def __init__(self, output_dir: str | os.PathLike | None = None, ext: str = "png", overwrite: bool = False,
                 keep_suffix: bool = False) -> None:
        super().__init__("batch")
        ext = ext.lower().lstrip(".")
        if ext not in FORMATS:
            raise ValueError(f"unknown output extension {ext!r}; expected one of {', '.join(FORMATS)}")
        self.output_dir, self.ext, self.overwrite, self.keep_suffix = output_dir, ext, overwrite, keep_suffix
        self.report: TranslationReport | None = None
        self.totals: dict[str, int] = {}
        self._plan: dict[str, Path] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "predict":
            out = Path(self.output_dir) if self.output_dir else run_dir(trainer) / "translated"
            self.report = TranslationReport(Path(trainer.strategy.broadcast(str(out))))

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loaders = trainer.predict_dataloaders
        sources = []
        for loader in loaders if isinstance(loaders, Sequence) else [loaders]:
            dataset = getattr(loader, "dataset", None)
            root, paths = getattr(dataset, "root", None), getattr(dataset, "paths", None)
            if root is not None and paths is not None:
                sources += [(Path(p), Path(p).relative_to(root)) for p in paths]
        # the whole folder's names, on every rank: a collision stops the run before any file is written
        self.report.planned = plan_outputs(sources, self.report.output_dir, self.ext, self.keep_suffix)
        self._plan = {str(src): dst for src, dst in self.report.planned}

    def _destination(self, path: str | None, index: int) -> Path:
        if path is not None and path in self._plan:
            return self._plan[path]
        name = Path(path).name if path is not None else f"{index:06d}"
        return self.report.output_dir / (f"{name}.{self.ext}" if self.keep_suffix else f"{Path(name).stem}.{self.ext}")

    def write_on_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prediction: Any,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        images = prediction["image"]  # (B, C, H, W)
        paths = prediction.get("path") or [None] * len(images)
        indices = batch_indices if batch_indices is not None else range(len(images))
        for image, path, index in zip(images, paths, indices):
            dst = self._destination(path, index)
            src = Path(path) if path is not None else Path(f"<index {index}>")
            if dst.exists() and not self.overwrite:
                self.report.skipped.append((src, dst))
                continue
            try:
                save_image(tensor_to_image(image), dst, FORMATS[self.ext])
                self.report.written.append((src, dst))
            except OSError as err:
                self.report.failed.append((src, f"cannot write '{dst}': {err}"))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = torch.tensor([len(self.report.written), len(self.report.skipped), len(self.report.failed)],
                              device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum")  # a collective: every rank gets here
        self.totals = dict(zip(("written", "skipped", "failed"), map(int, counts.tolist())))
        if trainer.is_global_zero:
            log.info("translated: %(written)d written, %(skipped)d skipped (exist), %(failed)d failed -> %(dir)s",
                     {**self.totals, "dir": self.report.output_dir})
