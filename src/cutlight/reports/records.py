"""What a finished (or running) training run left on disk: its CSV log's final and best metrics and its
``<run>/summary.json``.

``summary.json`` is written by ``cutlight.cli.run_record.RunRecord`` (a Hydra callback around every job of
``python -m cutlight.cli.train``); the sweep report (``cutlight.reports.sweep``) reads these files for a whole
sweep. Nothing here needs Lightning or Hydra.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
from pathlib import Path
from typing import Any

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
    # the test after fit logs its row with the epoch index after the last one trained: not an epoch started
    epochs = [r["epoch"] for r in rows if "epoch" in r and not any(k.startswith("test/") for k in r)]
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
