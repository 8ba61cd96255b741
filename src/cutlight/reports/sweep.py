"""Sweep report: the table and figures of a Hydra multirun folder.

``write_report(SWEEP_DIR)`` (the command: ``python -m cutlight.cli.report SWEEP_DIR [--wandb auto|on|off]``, or
``cutlight-report``) writes into SWEEP_DIR:

* ``summary.csv`` and ``summary.md``: one row per job (its overrides, state, final and best ``val/fid`` and
  ``val/kid``, the built-in score terms when logged, seconds per iteration, peak memory, wall time). Failed,
  unfinished (killed, or still running) and not-started jobs are rows too, with their error.
* ``seeds.csv`` (and a section of ``summary.md``) when the sweep has a ``seed`` axis: each configuration's mean and
  standard deviation over seeds of the final and best FID / KID (and content IoU).
* ``ablation.png`` and ``curves.png`` (see ``cutlight.reports.plots``).
* When the jobs logged to W&B (online or offline): a new run named ``report`` in the same project and group,
  holding the table (``wandb.Table``) and both figures (``cutlight.reports.wandb_log``).

The jobs are read by ``cutlight.reports.jobs``.
"""

from __future__ import annotations

import csv
import math
import os
import statistics
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .intervals import comparison_figure, comparison_markdown, seed_comparison, write_comparison_csv
from .jobs import STATES, Job, check_sweep_dir, collect_jobs, override_key
from .records import VAL_METRICS

SHORT = {key: key.split("/", 1)[1] for key in VAL_METRICS}  # val/fid -> fid


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
    features = sorted({j.fid_feature for j in jobs if j.fid_feature is not None and j.fid_feature != 2048})
    if features:
        out += ["", f"**FID and KID here are computed on Inception's {'/'.join(map(str, features))}-d features** "
                "(`model.val_metrics.feature`; `debug=tiny` uses the first block's 64), not the standard 2048-d "
                "pool: comparable between these jobs only, not with published FIDs."]
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


def write_report(sweep_dir: str | os.PathLike, wandb: str = "auto", quiet: bool = False,
                 baseline: str | None = None) -> Path:
    """Write ``summary.csv``, ``summary.md``, ``ablation.png``, ``curves.png`` (and ``seeds.csv``, the W&B report
    run) for a multirun folder; returns the path of ``summary.csv``.

    Args:
        wandb: ``auto`` logs to W&B when the jobs did, ``on`` always (project ``cutlight`` unless the jobs name
            one), ``off`` never.
        baseline: the configuration the others are compared with, seed by seed (``comparison.csv``, the
            "Over seeds" section, ``comparison.png``); default ``ablation=cut`` when the sweep has it.
    Raises:
        FileNotFoundError, NotASweepError: before anything is written.
    """
    from .plots import plot_ablation, plot_curves

    if wandb not in ("auto", "on", "off"):
        raise ValueError(f"unknown wandb mode {wandb!r}; expected one of auto, on, off")
    sweep = check_sweep_dir(sweep_dir)
    jobs = collect_jobs(sweep)
    table, seeds = job_table(jobs), seed_table(jobs)
    labels = [" ".join(lab) for lab in varying_overrides(jobs)]
    figures = {"ablation": sweep / "ablation.png", "curves": sweep / "curves.png"}
    rows, base, primary = seed_comparison(jobs, varying_overrides(jobs), baseline)
    several_seeds = seeds is not None
    comparison = comparison_markdown(rows, base, primary, several_seeds) if primary is not None else []
    extra = comparison + [""] * bool(comparison) + optuna_notes(sweep) + [
        "## Figures", "", "![ablation](ablation.png)", "", "![curves](curves.png)"]
    if primary is not None:
        extra += ["", "![comparison](comparison.png)"]
        _replace(sweep / "comparison.csv", lambda p: write_comparison_csv(p, rows, primary), quiet)
        _replace(sweep / "comparison.png", lambda p: comparison_figure(rows, base, primary, p), quiet)
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
        from .wandb_log import log_report, sweep_wandb_settings

        settings = sweep_wandb_settings(jobs, sweep)
        if settings is not None or wandb == "on":
            where = log_report(sweep, table, seeds, figures, settings or {})
            if not quiet:
                print(f"W&B: {where}")
    return sweep / "summary.csv"
