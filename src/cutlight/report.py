"""Sweep report: the table and figures of a Hydra multirun folder.

``python -m cutlight.report SWEEP_DIR [--wandb auto|on|off]`` (or ``cutlight-report``) writes into SWEEP_DIR:

* ``summary.csv`` and ``summary.md``: one row per job (its overrides, state, final and best ``val/fid`` and
  ``val/kid``, the built-in score terms when logged, seconds per iteration, peak memory, wall time). Failed,
  unfinished (killed, or still running) and not-started jobs are rows too, with their error.
* ``seeds.csv`` (and a section of ``summary.md``) when the sweep has a ``seed`` axis: each configuration's mean and
  standard deviation over seeds of the final and best FID / KID (and content IoU).
* ``ablation.png`` and ``curves.png`` (see ``cutlight.report_plots``).
* When the jobs logged to W&B (online or offline): a new run named ``report`` in the same project and group,
  holding the table (``wandb.Table``) and both figures.

A job's state and wall time come from its ``summary.json`` (written by ``cutlight.runs.RunRecord``), its metrics
from its CSV log (``<job>/csv/metrics.csv``); folders of older runs without ``summary.json`` are judged from
their log file.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .runs import VAL_METRICS, read_summary, run_metrics, short_error

SHORT = {key: key.split("/", 1)[1] for key in VAL_METRICS}  # val/fid -> fid
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
    metrics: dict[str, Any] = field(default_factory=dict)  # cutlight.runs.summarize_metrics, {} when none

    @property
    def name(self) -> str:
        return self.path.name if self.path else f"{self.num} (not started)"


# ---------------------------------------------------------------------------------------------- finding jobs
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
        f".hydra/overrides.yaml.{hint} Pass the hydra.sweep.dir of a `python -m cutlight.train -m ...` run, "
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
    return job


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


# ---------------------------------------------------------------------------------------------- tables
def varying_overrides(jobs: list[Job]) -> list[list[str]]:
    """Each job's overrides that differ between jobs (the sweep's axes): the labels of rows and points."""
    values: dict[str, set[str]] = {}
    for job in jobs:
        for o in job.overrides:
            values.setdefault(override_key(o), set()).add(o)
    common = {k for k, v in values.items() if len(v) == 1 and all(k in map(override_key, j.overrides) for j in jobs)}
    if len(jobs) < 2:
        common = set()
    return [[o for o in j.overrides if override_key(o) not in common and not o.startswith("hydra.")] for j in jobs]


def metric_groups(jobs: list[Job]) -> list[str]:
    """Validation metrics to tabulate: FID and KID always, the others when some job logged them."""
    logged = set().union(*(j.metrics.get("final", {}).keys() for j in jobs)) if jobs else set()
    return [k for k in VAL_METRICS if k in ("val/fid", "val/kid") or k in logged]


def job_table(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]]:
    """``summary.csv``'s columns and rows (one per job, metrics as numbers, None when absent)."""
    labels = varying_overrides(jobs)
    axes = sorted({override_key(o) for lab in labels for o in lab})
    groups = metric_groups(jobs)
    columns = ["num", "label", "state", "error"]
    for key in groups:
        s = SHORT[key]
        columns += [f"{s}_final", f"{s}_best", f"{s}_best_step"]
    columns += ["steps", "epochs", "max_epochs", "sec_per_iter", "peak_mem_mb", "wall_s", "overrides", "path", *axes]
    rows = []
    for job, label in zip(jobs, labels):
        m = job.metrics
        row: dict[str, Any] = dict(num=job.num, label=" ".join(label), state=job.state, error=job.error)
        for key in groups:
            s = SHORT[key]
            row[f"{s}_final"] = m.get("final", {}).get(key)
            row[f"{s}_best"] = m.get("best", {}).get(key)
            step = m.get("best_step", {}).get(key)
            row[f"{s}_best_step"] = int(step) if step is not None else None
        row.update(steps=m.get("steps"), epochs=m.get("epochs"), max_epochs=job.max_epochs,
                   sec_per_iter=m.get("sec_per_iter"), peak_mem_mb=m.get("peak_mem_mb"), wall_s=job.wall_s,
                   overrides=" ".join(job.overrides), path=str(job.path) if job.path else "")
        for o in job.overrides:
            if override_key(o) in axes:
                row[override_key(o)] = o.split("=", 1)[1] if "=" in o else ""
        rows.append(row)
    return columns, rows


def seed_table(jobs: list[Job]) -> tuple[list[str], list[dict[str, Any]]] | None:
    """Per configuration (overrides other than ``seed``): mean and sample standard deviation over its seeds of the
    final and best FID and KID (and content IoU when logged); None when the sweep has no ``seed`` axis."""
    labels = varying_overrides(jobs)
    if not any(override_key(o) == "seed" for lab in labels for o in lab):
        return None
    groups: dict[str, list[Job]] = {}
    for job, label in zip(jobs, labels):
        groups.setdefault(" ".join(o for o in label if override_key(o) != "seed"), []).append(job)
    keys = [k for k in ("val/fid", "val/kid", "val/content_iou") if k in metric_groups(jobs)]
    columns = ["label", "seeds", "finished"]
    for key in keys:
        for when in ("final", "best"):
            columns += [f"{SHORT[key]}_{when}_mean", f"{SHORT[key]}_{when}_std"]
    rows = []
    for label, members in groups.items():
        row: dict[str, Any] = dict(label=label, seeds=len(members),
                                   finished=sum(j.state == "finished" for j in members))
        for key in keys:
            for when in ("final", "best"):
                values = [v for j in members if (v := j.metrics.get(when, {}).get(key)) is not None
                          and math.isfinite(v)]
                row[f"{SHORT[key]}_{when}_mean"] = statistics.fmean(values) if values else None
                row[f"{SHORT[key]}_{when}_std"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return columns, rows


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(round(seconds))
    return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def markdown(jobs: list[Job], table: tuple, seeds: tuple | None, extra: list[str]) -> str:
    """``summary.md``: the job table, the errors, the seed aggregate and notes (e.g. Optuna's best trial)."""
    columns, rows = table
    groups = [SHORT[k] for k in metric_groups(jobs)]
    with_best = [g for g in groups if g in ("fid", "kid", "content_iou")]  # the others' best: summary.csv
    head = ["#", "overrides", "state"]
    for g in groups:
        head += [f"{g} final"] + ([f"{g} best (step)"] if g in with_best else [])
    head += ["epochs", "s/iter", "peak MB", "wall"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [_fmt(r["num"]), f"`{r['label']}`" if r["label"] else "", r["state"]]
        for g in groups:
            best = _fmt(r[f"{g}_best"])
            if best and r[f"{g}_best_step"] is not None:
                best += f" ({r[f'{g}_best_step']})"
            cells += [_fmt(r[f"{g}_final"])] + ([best] if g in with_best else [])
        epochs = f"{_fmt(r['epochs']) or '-'}/{_fmt(r['max_epochs']) or '?'}" if r["epochs"] or r["max_epochs"] else ""
        cells += [epochs, _fmt(r["sec_per_iter"]), _fmt(r["peak_mem_mb"] and round(r["peak_mem_mb"])),
                  _duration(r["wall_s"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    counts = {s: sum(j.state == s for j in jobs) for s in STATES}
    out = ["# Sweep report", "", ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(jobs)} jobs).",
           "FID and KID: lower is better; content_iou, style, score: higher is better. Final = last validation, "
           "best = best validation (step = training batches). s/iter: median. Peak MB: max allocated on a GPU; on a "
           "CPU the process's peak RSS, so jobs sharing one process (the basic launcher) carry earlier jobs' peaks.",
           "", *lines]
    problems = [r for r in rows if r["error"]]
    if problems:
        out += ["", "## Problems", ""] + [f"- job {_fmt(r['num'])} `{r['label']}` ({r['state']}): {r['error']}"
                                          for r in problems]
    if seeds is not None:
        s_cols, s_rows = seeds
        metric_cols = [c for c in s_cols if c.endswith("_mean")]
        head = ["configuration", "seeds (finished)"] + [c[: -len("_mean")].replace("_", " ") for c in metric_cols]
        out += ["", "## Over seeds (mean ± std)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in s_rows:
            cells = [f"`{r['label']}`" if r["label"] else "(all)", f"{r['seeds']} ({r['finished']})"]
            for c in metric_cols:
                mean, std = r[c], r[c.replace("_mean", "_std")]
                cells.append("" if mean is None else _fmt(mean) + ("" if std is None else f" ± {std:.2g}"))
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out + ([""] + extra if extra else []) + [""])


def write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})


def _replace(path: Path, write, quiet: bool) -> Path:
    """Write through a temporary file; say so when an existing file is replaced."""
    if path.exists() and not quiet:
        print(f"overwriting {path.name}")
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def optuna_notes(sweep_dir: Path) -> list[str]:
    path = sweep_dir / "optimization_results.yaml"
    if not path.is_file():
        return []
    res = OmegaConf.to_container(OmegaConf.load(path))
    params = " ".join(f"{k}={v}" for k, v in (res.get("best_params") or {}).items())
    return ["## Optuna", "", f"Best value {res.get('best_value')} with `{params}` (optimization_results.yaml)."]


# ---------------------------------------------------------------------------------------------- entry points
def report(sweep_dir: str | os.PathLike, wandb: str = "auto", quiet: bool = False) -> Path:
    """Write ``summary.csv``, ``summary.md``, ``ablation.png``, ``curves.png`` (and ``seeds.csv``, the W&B report
    run) for a multirun folder; returns the path of ``summary.csv``.

    Args:
        wandb: ``auto`` logs to W&B when the jobs did, ``on`` always (project ``cutlight`` unless the jobs name
            one), ``off`` never.
    Raises:
        FileNotFoundError, NotASweepError: before anything is written.
    """
    from .report_plots import plot_ablation, plot_curves

    if wandb not in ("auto", "on", "off"):
        raise ValueError(f"unknown wandb mode {wandb!r}; expected one of auto, on, off")
    sweep = check_sweep_dir(sweep_dir)
    jobs = collect_jobs(sweep)
    table, seeds = job_table(jobs), seed_table(jobs)
    labels = [" ".join(lab) for lab in varying_overrides(jobs)]
    figures = {"ablation": sweep / "ablation.png", "curves": sweep / "curves.png"}
    extra = optuna_notes(sweep) + ["## Figures", "", "![ablation](ablation.png)", "", "![curves](curves.png)"]
    _replace(sweep / "summary.csv", lambda p: write_csv(p, *table), quiet)
    if seeds is not None:
        _replace(sweep / "seeds.csv", lambda p: write_csv(p, *seeds), quiet)
    elif (sweep / "seeds.csv").exists():  # from an earlier report of this folder
        if not quiet:
            print("removing seeds.csv (the sweep has no seed axis now)")
        (sweep / "seeds.csv").unlink()
    _replace(sweep / "summary.md", lambda p: p.write_text(markdown(jobs, table, seeds, extra)), quiet)
    _replace(figures["ablation"], lambda p: plot_ablation(jobs, labels, p), quiet)
    _replace(figures["curves"], lambda p: plot_curves(jobs, labels, p), quiet)
    if wandb != "off":
        from .report_wandb import log_report, sweep_wandb_settings

        settings = sweep_wandb_settings(jobs, sweep)
        if settings is not None or wandb == "on":
            where = log_report(sweep, table, seeds, figures, settings or {})
            if not quiet:
                print(f"W&B: {where}")
    return sweep / "summary.csv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cutlight-report",
        description="Summarise a Hydra multirun of cutlight.train: summary.csv/.md, ablation.png, curves.png.")
    parser.add_argument("sweep_dir", help="the multirun folder (hydra.sweep.dir), e.g. multirun/<date>_<time>")
    parser.add_argument("--wandb", choices=["auto", "on", "off"], default="auto",
                        help="log the table and figures to a W&B 'report' run (auto: when the jobs logged to W&B)")
    parser.add_argument("--quiet", action="store_true", help="print only where the files are")
    args = parser.parse_args(argv)
    try:
        path = report(args.sweep_dir, wandb=args.wandb, quiet=args.quiet)
    except (FileNotFoundError, NotASweepError) as e:
        print(f"cutlight-report: error: {e}", file=sys.stderr)
        return 2
    sweep = path.parent
    if not args.quiet:
        print((sweep / "summary.md").read_text().split("\n## Figures")[0])
    print(f"sweep report: {sweep}\n  table:   {sweep / 'summary.md'} ({path.name})")
    if (sweep / "seeds.csv").exists():
        print(f"  seeds:   {sweep / 'seeds.csv'}")
    print(f"  figures: {sweep / 'ablation.png'}, {sweep / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
