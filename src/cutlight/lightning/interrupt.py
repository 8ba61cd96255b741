"""Ctrl-C (SIGINT) and SIGTERM during training: save ``last.ckpt`` at the current step, then stop.

``GracefulInterrupt`` is a callback that the train command adds to every run (usable with any ``pl.Trainer``):

* from ``install()`` (the train command calls it first) until training starts, a signal stops at once with
  :class:`TrainingInterrupted` (nothing trained yet, nothing to save);
* during training the first signal only takes a note (one line on stderr); the current batch finishes and
  ``last.ckpt`` is written at that step through the run's :class:`~cutlight.lightning.resume.AtomicCheckpoint`
  (atomically: an interrupted save leaves the previous file), then :class:`TrainingInterrupted` ends the fit
  (at the next hook, once Lightning has logged the batch's row; a validation due after it is not run).
  At an epoch's last batch the epoch ends first (its validation and schedule step: a checkpoint written before
  them would not resume exactly). A second signal stops at once without saving (``KeyboardInterrupt`` for
  SIGINT; SIGTERM's default action);
* under DDP every rank takes the decision together (one small all-reduce per batch), at the same step;
* with a launcher that trains in child processes (``ddp_spawn``, ``ddp_fork``: :meth:`GracefulInterrupt.
  train_in_children`), the launching process does not stop at once: the children got the same signal (Ctrl-C
  signals the terminal's whole process group; send SIGTERM to each process yourself) and save ``last.ckpt``;
  the launcher waits for them and then reports what they saved (:meth:`GracefulInterrupt.children_stopped`).

Lightning's own SIGTERM handling (it raises ``SIGTERMException`` after the batch, without saving) is replaced
while training runs, and the previous handlers are restored at the end of the fit.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from .resume import find_last_checkpoint
from .rundir import batches_done, checkpoint_batches

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """Training was stopped by a signal. ``signum``; ``step`` (training batches done, None before training);
    ``checkpoint`` (the file saved at ``step``, or None); ``exit_code`` = 128 + signum (130 SIGINT, 143 SIGTERM)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None,
                 note: str = "", at_once: bool = False) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        if at_once:
            what = "a second time: stopped at once, nothing saved after the last checkpoint"
        elif step is None:
            what = "before training started: nothing was trained or saved"
        elif checkpoint:
            what = f"after {step} training batches; saved {checkpoint} at that step"
        else:
            what = f"after {step} training batches; no checkpoint saved ({note or 'no checkpoint callback'})"
        super().__init__(f"interrupted by {name} {what}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class GracefulInterrupt(Callback):
    """See the module docstring."""

    def __init__(self) -> None:
        self.requested: int | None = None  # the signal received, not yet acted on
        self.forced: int | None = None  # a second signal: stopped at once
        self._training = False
        self._at_epoch_end = False
        self._pending: TrainingInterrupted | None = None  # saved mid-epoch; raised at the next hook
        self._pending_ckpt = None  # the AtomicCheckpoint asked to save last.ckpt at this epoch's end
        self._previous: dict[int, Any] = {}
        self._launcher_pid: int | None = None  # this process launches the training processes (train_in_children)

    # ------------------------------------------------------------------ signal handlers
    def install(self) -> None:
        """Handle SIGINT / SIGTERM in this process from now on (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in SIGNALS:
            current = signal.getsignal(signum)
            if current is not self._handle:
                self._previous.setdefault(signum, current)
                signal.signal(signum, self._handle)

    def uninstall(self) -> None:
        """Restore the handlers found by :meth:`install`."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, handler in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def train_in_children(self) -> None:
        """Training runs in processes this one launches (``ddp_spawn``): from now on a first signal here waits
        for them (they save and stop) instead of stopping this process at once."""
        self._launcher_pid = os.getpid()

    def children_stopped(self, checkpoints: Path) -> TrainingInterrupted | None:
        """In the launching process, after the training processes ended: the interruption they acted on (the step
        and file of the newest checkpoint in ``checkpoints``, the ``last.ckpt`` they wrote), or None when no
        signal arrived."""
        if self.requested is None:
            return None
        found = find_last_checkpoint(checkpoints)
        if found is None:
            return TrainingInterrupted(self.requested, note=f"the training processes wrote none in {checkpoints}")
        path, content = found
        return TrainingInterrupted(self.requested, step=checkpoint_batches(content), checkpoint=str(path))

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._launcher_pid == os.getpid():
            if self.requested is not None:  # the second one: stop now, without waiting for the save
                self.forced = signum
                self.uninstall()
                raise KeyboardInterrupt
            self.requested = signum
            print(f"\n{signal.Signals(signum).name} received: the training processes save last.ckpt after their "
                  "current batch, then stop (send it again to stop at once without saving)", file=sys.stderr,
                  flush=True)
            return
        if not self._training:
            raise TrainingInterrupted(signum)
        if self.requested is not None:  # the second one: stop now, without saving
            self.forced = signum
            self.uninstall()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.requested = signum
        print(f"\n{signal.Signals(signum).name} received: saving last.ckpt after the current training batch, then "
              "stopping (send it again to stop at once without saving)", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ training hooks
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.install()  # after Lightning registered its own SIGTERM handler (its SIGTERMException saves nothing)
        self._training = True

    def _decided(self, trainer: pl.Trainer) -> bool:
        wanted = self.requested is not None
        if trainer.world_size > 1:  # every rank stops at the same batch
            wanted = trainer.strategy.reduce_boolean_decision(wanted, all=False)
            if wanted and self.requested is None:
                self.requested = signal.SIGTERM
        return wanted

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._at_epoch_end or self._pending is not None or not self._decided(trainer):
            return
        if batch_idx + 1 >= trainer.num_training_batches:
            self._at_epoch_end = True  # see the module docstring
            return
        self._stop(trainer, mid_epoch=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # this hook runs before the module's (the schedule step) and the checkpoint callbacks': have last.ckpt
        # written by the AtomicCheckpoint at its own epoch end, and stop at the next hook
        if self._at_epoch_end:
            self._at_epoch_end = False
            self._stop(trainer, mid_epoch=False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_pending()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self._raise_pending()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._raise_pending()  # a mid-epoch validation due after the saved batch: not run

    def _raise_pending(self) -> None:
        if self._pending is not None:
            stop, self._pending = self._pending, None
            if self._pending_ckpt is not None:  # saved at the epoch end: its path now
                stop = TrainingInterrupted(stop.signum, stop.step, self._pending_ckpt.last_model_path or None,
                                           "the epoch-end save did not happen")
                self._pending_ckpt = None
            self._training = False
            raise stop

    def _stop(self, trainer: pl.Trainer, mid_epoch: bool) -> None:
        from .resume import AtomicCheckpoint

        step = batches_done(trainer)
        ckpt = next((cb for cb in trainer.checkpoint_callbacks if isinstance(cb, AtomicCheckpoint) and cb.save_last),
                    None)
        path, note = None, "no AtomicCheckpoint with save_last"
        if ckpt is not None and not mid_epoch:
            ckpt.save_last_at_epoch_end()  # after the schedule step
            self._pending_ckpt = ckpt
        elif ckpt is not None:
            path = ckpt.save_last_now(trainer, mid_epoch=True)
            note = "" if path else "checkpointing is off here (e.g. fast_dev_run)"
        # raised at the next hook: once Lightning has logged this batch's row (or ended the epoch)
        self._pending = TrainingInterrupted(self.requested or signal.SIGINT, step, path, note)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training = False

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._training = False

    def state_dict(self) -> dict[str, Any]:
        return {}
