"""``PerfMonitor``: seconds per training iteration and peak memory, logged every batch."""

from __future__ import annotations

import resource
import time

import pytorch_lightning as pl
import torch


class PerfMonitor(pl.Callback):
    """Logs ``perf/sec_per_iter`` (wall time between consecutive training batches) and ``perf/peak_mem_mb``
    (max allocated CUDA memory on GPU, peak process RSS on CPU) every batch.

    Why not Lightning's monitors: ``ThroughputMonitor`` logs windowed rates (batches/s once 100 batches are in
    the window) straight to the loggers, so they reach neither the progress bar nor ``callback_metrics`` (the
    end-of-run summary, sweeps' ``optimized_metric``), needs a ``batch_size_fn`` and warns unless the module
    defines ``flops_per_batch``; ``DeviceStatsMonitor`` logs dozens of per-device keys (CUDA allocator stats;
    CPU utilisation through psutil), not one peak-memory number; ``Timer`` measures whole stages (and enforces
    ``Trainer(max_time=...)``), not iterations. Add any of them next to this one when wanted.
    """

    def __init__(self):
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # do not count validation / epoch boundaries as iteration time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            pl_module.log("perf/sec_per_iter", now - self._last, prog_bar=True, batch_size=1)
        self._last = now
        pl_module.log("perf/peak_mem_mb", peak_memory_mb(pl_module.device), batch_size=1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux
