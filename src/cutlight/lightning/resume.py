"""Continuing a run: checkpoints that survive a kill, a CSV log that is appended to, finding the newest checkpoint.

```
AtomicCheckpoint        ModelCheckpoint that writes each file under a temporary name and renames it (a kill
                        during a save leaves the previous file intact), refuses non-finite weights, keeps last.ckpt
                        the newest state (one name, no last-v1.ckpt; refreshed every last_every_n_steps batches and
                        at the end of training)
AppendingCSVLogger      CSVLogger that continues an existing metrics.csv instead of deleting it, writes every
                        row at once, and on resume drops the rows of the steps that are trained again
find_last_checkpoint    the newest readable checkpoint in a folder (what ckpt_path=last means)
read_resume_checkpoint  a checkpoint checked for resuming: readable, a full training state, finite
```
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from ..checkpoint import CheckpointError, nonfinite_entries, read_checkpoint
from .reliability import NonFiniteError
from .rundir import batches_done

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def _local(path: str | os.PathLike) -> bool:
    return "://" not in str(path)


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` for long runs (every ``ModelCheckpoint`` argument works the same), plus:

    * atomic files: each checkpoint is written to ``<name>.tmp`` in the same folder, flushed to disk and renamed
      over ``<name>``, so a process killed while saving leaves the previous checkpoint intact (leftover ``.tmp``
      files are removed at the next start);
    * never non-finite: a state dict holding NaN or infinity is not written; :class:`NonFiniteError` stops the run
      and the last checkpoint stays the last good state;
    * ``last.ckpt`` is the newest state: always that one name (replaced, never ``last-v1.ckpt``), written whenever
      this callback saves, every ``last_every_n_steps`` training batches (0: off) and at the end of training;
      a run stopped mid-epoch (``max_steps``, ``max_time``) leaves the state after its last batch, from which a
      resume continues that epoch.

    * ``monitor_every_n_steps``: with a ``monitor``, compare its value and keep the top ``save_top_k``
      checkpoints every that many training batches (0: off), for a metric that a callback logs during training,
      e.g. ``TranslationScore(every_n_steps=N)``'s ``val/score`` with the same N. Lightning's own
      ``every_n_train_steps`` counts optimizer steps, and a GAN batch makes several.

    At an epoch's last batch ``last.ckpt`` is written once the epoch has ended (after validation and the
    schedule step): Lightning resumes a checkpoint written at that batch as a finished epoch without running its
    end, so such a checkpoint would not resume exactly. (Plain ``every_n_train_steps`` checkpoints have that
    problem; ``last_every_n_steps`` does not. A best-``monitor`` checkpoint is for testing and inference: resume
    from ``last.ckpt``.)
    """

    def __init__(self, *args: Any, last_every_n_steps: int = 0, monitor_every_n_steps: int = 0,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, value in (("last_every_n_steps", last_every_n_steps), ("monitor_every_n_steps", monitor_every_n_steps)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0; got {value!r}")
        if monitor_every_n_steps and not self.monitor:
            raise ValueError(f"monitor_every_n_steps={monitor_every_n_steps} needs a monitor (the metric to compare)")
        self.last_every_n_steps = last_every_n_steps
        self.monitor_every_n_steps = monitor_every_n_steps

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and _local(self.dirpath) and Path(self.dirpath).is_dir():
            for stale in Path(self.dirpath).glob(f"*.ckpt{TMP_SUFFIX}"):  # from a save that was killed
                stale.unlink(missing_ok=True)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        bad = nonfinite_entries(trainer.lightning_module.state_dict())
        if bad:
            raise NonFiniteError(
                f"refusing to write checkpoint '{filepath}': non-finite values in {len(bad)} tensor(s) "
                f"({', '.join(bad[:5])}{', ...' if len(bad) > 5 else ''}); the last checkpoint written stays the "
                "last good state"
            )
        if not _local(filepath):
            super()._save_checkpoint(trainer, filepath)
            return
        tmp = filepath + TMP_SUFFIX
        try:
            super()._save_checkpoint(trainer, tmp)
            if trainer.is_global_zero:
                _fsync(tmp)
                os.replace(tmp, filepath)
                _fsync(os.path.dirname(os.path.abspath(filepath)), directory=True)
        except OSError as err:  # e.g. ENOSPC: drop the partial file, keep the previous checkpoint
            Path(tmp).unlink(missing_ok=True)
            previous = (f"'{filepath}' is the previous one, intact" if os.path.exists(filepath)
                        else f"the last one written: {self.last_model_path or 'none'}")
            raise CheckpointError(
                f"could not write checkpoint '{filepath}': {err.strerror or err} ({type(err).__name__}); its "
                f"temporary file was removed and {previous}. Free space (or fix the folder), then continue with "
                f"resume={Path(filepath).resolve().parent.parent}") from err
        trainer.strategy.barrier("AtomicCheckpoint")
        self._last_checkpoint_saved = filepath

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        versions, self._enable_version_counter = self._enable_version_counter, False  # last.ckpt: one name
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self._enable_version_counter = versions

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        m = self.monitor_every_n_steps
        if m and batches_done(trainer) % m == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))  # names the missing monitor
        n = self.last_every_n_steps
        stopping = trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step  # max_steps, max_time
        if not (self.save_last and (stopping or (n and batches_done(trainer) % n == 0))):
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            # the epoch's last batch: Lightning resumes a checkpoint written here as a finished epoch without
            # running its end (validation, the schedule step); write last.ckpt when the epoch has ended instead
            self._last_due_at_epoch_end = True
        else:
            self._save_last_now(trainer)
            # stopped mid-epoch: this is the state to resume from (Lightning ends the epoch early after it)
            self._stopped_mid_epoch = stopping

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(self, "_stopped_mid_epoch", False):
            return
        super().on_validation_end(trainer, pl_module)

    def _save_last_now(self, trainer: pl.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        periodic_step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_global_step_saved = periodic_step  # a periodic checkpoint of this step may still be due
        self._last_step_of_last = trainer.global_step

    def save_last_now(self, trainer: pl.Trainer, mid_epoch: bool) -> str | None:
        """Write ``last.ckpt`` now (an interrupt: ``cutlight.lightning.interrupt``), after a mid-epoch batch
        (``mid_epoch``) or at an epoch's end; returns its path, or None when saving is off (``fast_dev_run``)."""
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != "fit":
            return None
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_step_of_last = trainer.global_step
        self._stopped_mid_epoch = mid_epoch
        return self.last_model_path or None

    def save_last_at_epoch_end(self) -> None:
        """Write ``last.ckpt`` at the end of the current epoch (after its validation and schedule step), unless
        this epoch's end writes one anyway (an interrupt at an epoch's last batch)."""
        self._last_due_at_epoch_end = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if getattr(self, "_stopped_mid_epoch", False):  # the cut-short epoch is not saved as if it had ended
            return
        super().on_train_epoch_end(trainer, pl_module)
        if getattr(self, "_last_due_at_epoch_end", False):
            self._last_due_at_epoch_end = False
            if trainer.global_step not in (self._last_global_step_saved, getattr(self, "_last_step_of_last", None)):
                self._save_last_now(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        saved = (self._last_global_step_saved, getattr(self, "_last_step_of_last", None))
        if (self.save_last and trainer.global_step not in saved and not trainer.fast_dev_run
                and not getattr(self, "_stopped_mid_epoch", False)):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))  # the final state
        super().on_train_end(trainer, pl_module)


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it) and continues its header."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = f.readline().strip()
            self.metrics_keys = sorted(k for k in header.split(",") if k)


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` for runs that are resumed in their folder: an existing ``metrics.csv`` is continued (rows and
    header kept), every row is written at once (``flush_logs_every_n_steps`` defaults to 1: a killed run loses no
    logged step), and :meth:`resume_at_step` drops the rows of the steps a resumed run trains again."""

    def __init__(self, *args: Any, flush_logs_every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, flush_logs_every_n_steps=flush_logs_every_n_steps, **kwargs)

    @property
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def resume_at_step(self, step: int) -> None:
        """Training continues at ``step``: drop the rows logged at ``step`` or later (a run killed after its last
        checkpoint logged them; the resumed run logs them again)."""
        import csv

        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) != len(rows):
            tmp = path.with_suffix(".csv" + TMP_SUFFIX)
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(kept)
            os.replace(tmp, path)
            log.info("metrics.csv: dropped %d row(s) from step %d on (trained again after the resume)",
                     len(rows) - len(kept), step)
        self.experiment  # noqa: B018 - open the writer on the kept file (it continues its header)


# ----------------------------------------------------------------------------------------- finding / checking


def read_resume_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at ``path``, checked for resuming training (:class:`CheckpointError` naming the file): it
    must be readable, hold a full training state (weights, optimizers, loop position) and only finite weights."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"'{path}' is not a Lightning training checkpoint: no 'state_dict' (found {found}); "
                              "a bare state dict can be translated with, not resumed")
    missing = [k for k in ("optimizer_states", "loops") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint '{path}' holds weights only (no {' or '.join(missing)}): it can load a "
                              "model (CUTModule.load_from_checkpoint) but not resume training")
    bad = nonfinite_entries(ckpt["state_dict"])
    if bad:
        raise CheckpointError(f"checkpoint '{path}' holds non-finite weights ({', '.join(bad[:5])}"
                              f"{', ...' if len(bad) > 5 else ''}): it comes from a diverged run; use an earlier one")
    return ckpt


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the ``*.ckpt.tmp`` files of saves that never finished (a kill or a full disk during a save) from
    ``folder``; returns their names (nothing to remove: [])."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for stale in sorted(folder.glob(f"*.ckpt{TMP_SUFFIX}")):
        size = stale.stat().st_size if stale.exists() else 0
        stale.unlink(missing_ok=True)
        removed.append(f"{stale.name} ({size} bytes)")
    return removed


def find_last_checkpoint(folder: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest readable training checkpoint in ``folder`` (by modification time; ``last.ckpt`` wins a tie) and
    its content, or None when there is none. Unreadable ones are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name.startswith("last")), reverse=True)
    for path in files:
        try:
            return path, read_resume_checkpoint(path)
        except (CheckpointError, OSError) as err:
            log.warning("skipping %s", err)
    return None
