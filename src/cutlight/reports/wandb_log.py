"""The sweep report in Weights & Biases.

The report goes to a **new run** named ``report`` (``job_type="report"``) in the jobs' project and group, not into
the jobs' own runs: a sweep's summary belongs to no single job, the jobs' runs stay as they were logged, and it
works the same for offline sweeps (an offline run cannot be resumed before it is synced). The run holds
``report/summary`` (a ``wandb.Table`` with the columns of ``summary.csv``), ``report/seeds`` when the sweep has a
seed axis, and both figures. An offline sweep gets an offline report run under ``<sweep>/wandb/``, uploaded with
the jobs' runs by ``wandb sync``. Each call of the report adds one such run. (W&B's service process writes the
offline run file; it is complete once the reporting process has exited, as after ``python -m cutlight.cli.report``.)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from .records import short_error

if TYPE_CHECKING:
    from .jobs import Job


def sweep_wandb_settings(jobs: list[Job], sweep_dir: Path) -> dict[str, Any] | None:
    """Project, entity, group and offline mode of the sweep's W&B runs, from the first job whose config has a
    ``logger.wandb`` node or whose folder has a W&B run; None when no job logged to W&B."""
    for job in jobs:
        if job.path is None:
            continue
        try:
            cfg = OmegaConf.load(job.path / ".hydra" / "config.yaml")
            node = OmegaConf.select(cfg, "logger.wandb", default=None)
            wb = OmegaConf.to_container(node, resolve=False) if node is not None else {}
        except Exception:
            wb = {}
        runs = [p for p in job.path.glob("wandb/*run-*") if p.is_dir()]
        if not wb and not runs:
            continue
        return {
            "project": wb.get("project") or "cutlight",
            "entity": wb.get("entity"),
            # the jobs' group: set explicitly, else the sweep folder's name (cutlight.cli.train._name_wandb_run)
            "group": wb.get("group") or sweep_dir.name,
            "offline": bool(wb.get("offline")) or any(p.name.startswith("offline-run") for p in runs),
        }
    return None


def _cell(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def log_report(sweep_dir: Path, table: tuple, seeds: tuple | None, figures: dict[str, Path],
               settings: dict[str, Any]) -> str:
    """Log the report to a new W&B run; returns where it went (or why it did not: the files are written first,
    so a W&B problem never loses the report)."""
    try:
        import wandb

        run = wandb.init(
            project=settings.get("project") or "cutlight", entity=settings.get("entity"),
            group=settings.get("group") or sweep_dir.name, name="report", job_type="report", tags=["report"],
            dir=str(sweep_dir), mode="offline" if settings.get("offline") else None,
            config={"sweep_dir": str(sweep_dir.resolve())},
        )
        data: dict[str, Any] = {}
        for key, (columns, rows) in (("summary", table), ("seeds", seeds or (None, None))):
            if columns:
                data[f"report/{key}"] = wandb.Table(
                    columns=columns, data=[[_cell(r.get(c)) for c in columns] for r in rows])
        for name, path in figures.items():
            if path.is_file():
                data[f"report/{name}"] = wandb.Image(str(path))
        run.log(data)
        folder, url, offline = Path(run.dir).parent, run.url, run.settings.mode == "offline"
        run.finish()
    except Exception as e:
        return f"not logged ({short_error(e)}); the files above are complete"
    if offline:
        return f"offline run {folder} (upload with: wandb sync {folder})"
    return f"run {url or folder}"
