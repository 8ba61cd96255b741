"""The record of one training run: final and best metrics from its CSV log, and ``<run>/summary.json``.

``RunRecord`` is a Hydra callback (``hydra.callbacks.run_record`` in ``conf/train.yaml``) around every job of
``python -m cutlight.train``, single runs and multiruns alike, whatever the launcher (basic, joblib, submitit):

* job start: ``summary.json`` says ``"state": "running"``, so a job that is killed (time limit, out of memory)
  is told apart from one that finished;
* job end: ``"finished"`` or ``"failed"`` with the error (its traceback also goes to the run's log file, which
  Hydra otherwise leaves without it; the console gets one line, as Hydra prints the error itself), the wall time
  and the final and best metrics read from ``metrics.csv``.

``cutlight.report`` reads these files for a whole sweep. Nothing here needs Lightning.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import statistics
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
# validation metrics summarised per run, and which way is better (min: FID, KID; max: the built-in score terms)
VAL_METRICS = {"val/fid": "min", "val/kid": "min", "val/content_iou": "max", "val/style": "max", "val/score": "max"}


def find_metrics_csv(run_dir: str | os.PathLike) -> Path | None:
    """The CSV logger's file of a run: ``<run>/csv/metrics.csv`` with the shipped logger configs, else the most
    recently written ``metrics.csv`` below the run folder (None when there is none)."""
    run_dir = Path(run_dir)
    default = run_dir / "csv" / "metrics.csv"
    if default.is_file():
        return default
    found = sorted((p for p in run_dir.rglob("metrics.csv") if ".hydra" not in p.parts), key=os.path.getmtime)
    return found[-1] if found else None


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of a Lightning ``CSVLogger`` file as ``{key: value}`` with the empty cells left out.

    ``step`` counts training batches (Lightning's logging step), ``epoch`` is 0-based; unparsable cells are
    skipped (a line cut off by a killed job)."""
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                if key is None or value in (None, ""):
                    continue
                try:
                    row[key] = float(value)
                except ValueError:
                    continue
            if row:
                rows.append(row)
    return rows


def summarize_metrics(rows: list[dict[str, float]]) -> dict[str, Any]:
    """Final and best value of each ``VAL_METRICS`` key, the step and epoch of the best, and the run's pace.

    Returns:
        ``{"final": {key: v}, "best": {key: v}, "best_step": {key: s}, "best_epoch": {key: e}, "final_step":
        {key: s}, "steps": last logged step, "epochs": epochs started (last epoch + 1), "sec_per_iter": median of
        ``perf/sec_per_iter`` (robust to the first iteration and to validation pauses), "peak_mem_mb": max of
        ``perf/peak_mem_mb``}``. Keys never logged are absent; non-finite values count as final but never best.
    """
    out: dict[str, Any] = {"final": {}, "best": {}, "best_step": {}, "best_epoch": {}, "final_step": {}}
    for key, direction in VAL_METRICS.items():
        series = [(r[key], _int(r.get("step")), _int(r.get("epoch"))) for r in rows if key in r]
        if not series:
            continue
        out["final"][key], out["final_step"][key] = series[-1][0], series[-1][1]
        finite = [s for s in series if math.isfinite(s[0])]
        if finite:
            best = (min if direction == "min" else max)(finite, key=lambda s: s[0])
            out["best"][key], out["best_step"][key], out["best_epoch"][key] = best
    steps = [r["step"] for r in rows if "step" in r]
    epochs = [r["epoch"] for r in rows if "epoch" in r]
    pace = [r["perf/sec_per_iter"] for r in rows if "perf/sec_per_iter" in r]
    mem = [r["perf/peak_mem_mb"] for r in rows if "perf/peak_mem_mb" in r]
    out["steps"] = int(max(steps)) if steps else None
    out["epochs"] = int(max(epochs)) + 1 if epochs else None
    out["sec_per_iter"] = statistics.median(pace) if pace else None
    out["peak_mem_mb"] = max(mem) if mem else None
    return out


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def run_metrics(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``summarize_metrics`` of a run folder's CSV log, or None when the run has no ``metrics.csv``."""
    path = find_metrics_csv(run_dir)
    if path is None:
        return None
    summary = summarize_metrics(read_metrics_csv(path))
    summary["csv"] = str(path)
    return summary


def read_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's ``summary.json``, or None when it has none (or it cannot be parsed)."""
    path = Path(run_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_summary(run_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Write ``<run>/summary.json`` atomically (a reader never sees half a file)."""
    path = Path(run_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def short_error(exc: BaseException) -> str:
    """``Type: message`` on one line (Hydra's instantiation errors span several)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


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
        write_summary(hc.runtime.output_dir, {
            "state": "running", "started": self._started,
            "job_num": OmegaConf.select(hc, "job.num", default=None, throw_on_missing=False),
            "overrides": OmegaConf.to_container(hc.overrides.task),
        })

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not _is_rank_zero():
            return
        out = Path(config.hydra.runtime.output_dir)
        summary = read_summary(out) or {}
        summary.update(state="finished", ended=_now(),
                       wall_s=round(time.time() - self._start, 2) if self._start is not None else None)
        if job_return.status == JobStatus.FAILED:
            exc = job_return._return_value  # ``return_value`` re-raises the job's exception
            summary.update(state="failed", error=short_error(exc),
                           traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            log.error("run failed: %s", summary["error"])  # Hydra prints the error; the traceback: log file only
            log_to_files(log.makeRecord(log.name, logging.ERROR, __file__, 0, "traceback of the failure:", None,
                                        (type(exc), exc, exc.__traceback__)))
        else:
            value = job_return.return_value
            summary["optimized_metric"] = value if isinstance(value, (int, float)) else None
        try:
            summary["metrics"] = run_metrics(out)
        except Exception as e:  # a broken CSV must not hide the job's own state
            summary["metrics"], summary["metrics_error"] = None, short_error(e)
        write_summary(out, summary)
