"""``RunRecord``: the Hydra callback that keeps ``<run>/summary.json`` for every job of the train command.

It runs around every job of ``python -m cutlight.cli.train`` (``hydra.callbacks.run_record`` in
``conf/train.yaml``), single runs and multiruns alike, whatever the launcher (basic, joblib, submitit):

* job start: ``summary.json`` says ``"state": "running"``, so a job that is killed (time limit, out of memory)
  is told apart from one that finished; a run continued in its own folder keeps its first ``started`` time and
  lists each restart under ``resumed``;
* job end: ``"finished"`` or ``"failed"`` with the error (its traceback also goes to the run's log file, which
  Hydra otherwise leaves without it; the console gets one line, as Hydra prints the error itself), the wall time
  and the final and best metrics read from ``metrics.csv`` (``cutlight.reports.records``);
* a job stopped by Ctrl-C / SIGTERM (which ends the process without Hydra's job end): ``"interrupted"``, written
  by the train command itself through :func:`record_end`, as is ``"failed"`` for a job ended by ``sys.exit``.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..reports.records import read_summary, run_metrics, short_error, write_summary

log = logging.getLogger(__name__)


def _is_rank_zero() -> bool:
    """False in the other processes of a multi-process job (DDP children, SLURM tasks > 0), which also run the
    Hydra job: only rank 0 keeps the record."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def _now() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def log_to_files(record: logging.LogRecord) -> None:
    """Hand ``record`` to the root logger's file handlers only (Hydra's ``<run>/train.log``), not to the console."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


_STARTED: dict[str, float] = {}  # run folder -> time.time() at its job start (this process)


def record_end(run_dir: str | os.PathLike, state: str, **fields: Any) -> None:
    """Close ``<run>/summary.json`` with ``state`` (``finished``, ``failed``, ``interrupted``), the end time, the
    wall time of this process's job and the metrics of ``metrics.csv``, plus ``fields``. Rank 0 only."""
    if not _is_rank_zero():
        return
    out = Path(run_dir)
    start = _STARTED.get(str(out.resolve()))
    summary = read_summary(out) or {}
    summary.update(state=state, ended=_now(), wall_s=round(time.time() - start, 2) if start is not None else None)
    summary.update(fields)
    try:
        summary["metrics"] = run_metrics(out)
    except Exception as e:  # a broken CSV must not hide the job's own state
        summary["metrics"], summary["metrics_error"] = None, short_error(e)
    write_summary(out, summary)


class RunRecord(Callback):
    """Hydra callback keeping ``<run>/summary.json`` (see the module docstring)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._started: str | None = None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not _is_rank_zero():
            return
        self._start, self._started = time.time(), _now()
        hc = config.hydra
        _STARTED[str(Path(hc.runtime.output_dir).resolve())] = self._start
        summary = {
            "state": "running", "started": self._started,
            "job_num": OmegaConf.select(hc, "job.num", default=None, throw_on_missing=False),
            "overrides": OmegaConf.to_container(hc.overrides.task),
        }
        earlier = read_summary(hc.runtime.output_dir) or {}
        if earlier.get("started"):  # a run continued in its own folder (resume=, ckpt_path=last): the first start
            summary["started"] = earlier["started"]  # stays; each restart is added to "resumed"
            summary["resumed"] = [*earlier.get("resumed", []), self._started]
        write_summary(hc.runtime.output_dir, summary)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_rank_zero():
            return
        out = Path(config.hydra.runtime.output_dir)
        if job_return.status == JobStatus.FAILED:
            exc = job_return._return_value  # ``return_value`` re-raises the job's exception
            fields = {"error": short_error(exc),
                      "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
            log.error("run failed: %s", fields["error"])  # Hydra prints the error; the traceback: log file only
            log_to_files(log.makeRecord(log.name, logging.ERROR, __file__, 0, "traceback of the failure:", None,
                                        (type(exc), exc, exc.__traceback__)))
            record_end(out, "failed", **fields)
        else:
            value = job_return.return_value
            record_end(out, "finished", optimized_metric=value if isinstance(value, (int, float)) else None)
