"""The jobs of a Hydra multirun folder as found on disk: ``Job`` (overrides, state, error, wall time, metrics).

A job's state and wall time come from its ``summary.json`` (written by ``cutlight.cli.run_record.RunRecord``), its
metrics from its CSV log (``<job>/csv/metrics.csv``, ``cutlight.reports.records``); folders of older runs without
``summary.json`` are judged from their log file. Basic-sweeper jobs that never started are rows too.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .records import read_summary, run_metrics, short_error

STATES = ("finished", "failed", "unfinished", "not started", "unreadable")
_SKIP_DIRS = {".hydra", ".submitit", "wandb", "checkpoints", "images", "plots", "csv", "tensorboard"}


class NotASweepError(ValueError):
    """The folder given to the report is not a Hydra multirun folder."""


@dataclass
class Job:
    """One job of a sweep, as found on disk."""

    num: int | None
    overrides: list[str]
    state: str
    error: str = ""
    path: Path | None = None
    wall_s: float | None = None
    max_epochs: int | None = None
    lambda_nce: float | None = None  # model.objective.lambda_nce: train/loss_nce is weighted by it
    fid_feature: int | None = None  # model.val_metrics.feature (2048: the standard FID; debug=tiny: 64)
    metrics: dict[str, Any] = field(default_factory=dict)  # cutlight.reports.records.summarize_metrics, {} when none

    @property
    def name(self) -> str:
        return self.path.name if self.path else f"{self.num} (not started)"


def override_key(override: str) -> str:
    """``+model.x=1`` -> ``model.x``."""
    return override.split("=", 1)[0].lstrip("+~")


def find_job_dirs(sweep_dir: Path, max_depth: int = 3) -> list[Path]:
    """Folders below ``sweep_dir`` holding a Hydra job (``.hydra/overrides.yaml``); a job's own subfolders are not
    searched."""
    found = []

    def walk(folder: Path, depth: int) -> None:
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS):
            if (child / ".hydra" / "overrides.yaml").is_file():
                found.append(child)
            elif depth < max_depth:
                walk(child, depth + 1)

    walk(sweep_dir, 1)
    return found


def check_sweep_dir(sweep_dir: str | os.PathLike) -> Path:
    """``sweep_dir`` as a Path if it looks like a multirun folder, else a clear error."""
    path = Path(sweep_dir)
    if not path.exists():
        raise FileNotFoundError(f"sweep folder {str(path)!r} does not exist")
    if not path.is_dir():
        raise NotASweepError(f"{str(path)!r} is a file; expected a Hydra multirun folder")
    markers = [path / "multirun.yaml", path / "optimization_results.yaml"]
    if any(m.is_file() for m in markers) or find_job_dirs(path):
        return path
    hint = (" It is a single run's folder (it has .hydra/ itself)." if (path / ".hydra").is_dir() else "")
    raise NotASweepError(
        f"{str(path)!r} is not a Hydra multirun folder: no multirun.yaml and no job folders with "
        f".hydra/overrides.yaml.{hint} Pass the hydra.sweep.dir of a `python -m cutlight.cli.train -m ...` run, "
        "e.g. multirun/<date>_<time>.")


def expected_overrides(sweep_dir: Path) -> list[list[str]] | None:
    """The jobs a basic-sweeper multirun was asked for, in launch order (job num = index), from its
    ``multirun.yaml``; None for other sweepers (Optuna chooses its trials as it goes) or unreadable files."""
    path = sweep_dir / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        cfg = OmegaConf.load(path)
        if not str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")).endswith("BasicSweeper"):
            return None
        params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
        args = [f"{k}={v}" for k, v in params.items()] + list(OmegaConf.select(cfg, "hydra.overrides.task") or [])
        axes: dict[str, list[str]] = {}  # key -> its "key=value" choices (a later override of a key wins)
        for override in OverridesParser.create().parse_overrides(args):
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    return None
                axes[key] = [f"{key}={v}" for v in override.sweep_string_iterator()]
            else:
                axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        return [list(job) for job in itertools.product(*axes.values())]
    except Exception:
        return None


def _log_text(job_dir: Path) -> str:
    logs = sorted(job_dir.glob("*.log"))
    return logs[0].read_text(errors="replace") if logs else ""


def _judge_from_log(job_dir: Path) -> tuple[str, str]:
    """State and error of a job without ``summary.json`` (runs made before ``RunRecord``), from its log file."""
    text = _log_text(job_dir)
    if "cutlight run finished" in text:
        return "finished", ""
    errors = re.findall(r"^(\w+(?:Error|Exception|Interrupt)\b.*)$", text, flags=re.M)
    if errors:
        return "failed", errors[-1].strip()
    return "unfinished", "no summary.json and no end of run in the log (killed, or still running)"


def read_job(job_dir: Path) -> Job:
    """A job folder as a ``Job``; a folder that cannot be read becomes a row in state ``unreadable``."""
    try:
        overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    except Exception as e:
        return Job(num=_num_from_name(job_dir), overrides=[], state="unreadable", path=job_dir,
                   error=f"cannot read .hydra/overrides.yaml: {short_error(e)}")
    job = Job(num=_job_num(job_dir), overrides=overrides, state="unfinished", path=job_dir)
    summary = read_summary(job_dir)
    if summary is not None:
        job.state = {"running": "unfinished"}.get(summary.get("state"), summary.get("state", "unfinished"))
        job.error = summary.get("error", "")
        job.wall_s = summary.get("wall_s")
        if job.state == "unfinished":
            job.error = "started but no end record (killed, e.g. a time limit or out of memory, or still running)"
            if (job_dir.parent / ".submitit").is_dir():
                job.error += "; see the launcher's logs under .submitit/"
    else:
        job.state, job.error = _judge_from_log(job_dir)
        job.wall_s = _wall_from_files(job_dir)
    try:
        job.metrics = run_metrics(job_dir) or {}
    except Exception as e:
        job.error = "; ".join(filter(None, [job.error, f"unreadable metrics.csv: {short_error(e)}"]))
    if not job.metrics and job.state == "finished":
        job.error = job.error or "no metrics.csv under the job folder (no CSV logger?)"
    elif job.state == "finished" and "val/fid" not in job.metrics.get("final", {}):
        job.error = job.error or "no val/fid logged (model.val_metrics null, or no validation ran)"
    job.max_epochs = _max_epochs(job_dir)
    job.lambda_nce, job.fid_feature = _curve_settings(job_dir)
    return job


def _curve_settings(job_dir: Path) -> tuple[float | None, int | None]:
    """(``model.objective.lambda_nce``, ``model.val_metrics.feature``) of a job's resolved config; None where
    absent. (A method without PatchNCE has no lambda_nce; ``val_metrics: true`` means the standard 2048.)"""
    try:
        cfg = OmegaConf.load(job_dir / "config_resolved.yaml")
    except Exception:
        return None, None
    lam = OmegaConf.select(cfg, "model.objective.lambda_nce", default=None)
    metrics = OmegaConf.select(cfg, "model.val_metrics", default=None)
    feature = metrics.get("feature", 2048) if hasattr(metrics, "get") else (2048 if metrics else None)
    return (float(lam) if isinstance(lam, (int, float)) else None), (int(feature) if feature is not None else None)


def _num_from_name(job_dir: Path) -> int | None:
    match = re.match(r"(\d+)(_|$)", job_dir.name)
    return int(match.group(1)) if match else None


def _job_num(job_dir: Path) -> int | None:
    try:
        num = OmegaConf.select(OmegaConf.load(job_dir / ".hydra" / "hydra.yaml"), "hydra.job.num", default=None,
                               throw_on_missing=False)
        return int(num) if num is not None else _num_from_name(job_dir)
    except Exception:
        return _num_from_name(job_dir)


def _max_epochs(job_dir: Path) -> int | None:
    """Epochs the run was set to train: the model's schedule (``n_epochs + n_epochs_decay``), capped by
    ``trainer.max_epochs`` when that is set (-1 / null: the schedule decides, as in ``TranslationModule``)."""
    try:
        cfg = OmegaConf.load(job_dir / "config_resolved.yaml")
        limit = OmegaConf.select(cfg, "trainer.max_epochs")
        n, d = OmegaConf.select(cfg, "model.n_epochs"), OmegaConf.select(cfg, "model.n_epochs_decay")
        schedule = int(n) + int(d) if n is not None and d is not None else None
        limit = int(limit) if limit is not None and int(limit) >= 0 else None
        return min(x for x in (schedule, limit) if x is not None) if (schedule or limit) is not None else None
    except Exception:
        return None


def _wall_from_files(job_dir: Path) -> float | None:
    """Wall time of a run without ``summary.json``: from its config's creation to its last written file."""
    start = job_dir / ".hydra" / "config.yaml"
    if not start.is_file():
        return None
    last = max((p.stat().st_mtime for p in job_dir.rglob("*") if p.is_file()), default=start.stat().st_mtime)
    return round(last - start.stat().st_mtime, 2)


def collect_jobs(sweep_dir: str | os.PathLike) -> list[Job]:
    """Every job of a sweep: the ones on disk (ordered by job number) plus, for basic-sweeper multiruns, the
    ones asked for that never started."""
    sweep_dir = check_sweep_dir(sweep_dir)
    jobs = [read_job(d) for d in find_job_dirs(sweep_dir)]
    seen = {j.num for j in jobs}
    for num, overrides in enumerate(expected_overrides(sweep_dir) or []):
        if num not in seen:
            jobs.append(Job(num=num, overrides=overrides, state="not started",
                            error="never launched (the sweep stopped or was interrupted before it)"))
    return sorted(jobs, key=lambda j: (j.num is None, j.num if j.num is not None else 0, j.name))
