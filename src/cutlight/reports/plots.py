"""The figures of runs and sweeps, drawn on ``matplotlib.figure.Figure`` objects and saved (no pyplot, no backend
switch: the library never changes a notebook's backend).

* ``ablation.png``: each run a point, final FID (lower is better) against content preservation: ``val/content_iou``
  on the built-in data (higher is better), else KID. With a ``seed`` axis, each configuration is its mean over
  seeds with standard-deviation bars, its seeds as faint dots.
* ``curves.png``: every run overlaid, the unweighted PatchNCE loss (``train/loss_nce`` / ``lambda_nce``, so that
  FastCUT's weight of 10 does not look like a 10x worse loss), ``train/loss_g_gan`` and ``val/fid`` against
  training batches (the paper's identity-loss stability study); training losses as moving averages. An FID on
  other Inception features than the standard 2048 (``debug=tiny``: 64) is titled so.

The curves are drawn by ``cutlight.reports.curves.curves_figure``, as the training callback's
``plots/loss_curves.png`` is.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib
from matplotlib.figure import Figure

from .curves import curves_figure
from .records import find_metrics_csv, read_metrics_csv

if TYPE_CHECKING:
    from .jobs import Job

CURVE_KEYS = ("train/loss_nce", "train/loss_g_gan", "val/fid")
MAX_LEGEND = 20


def _config_label(label: str) -> str:
    """A run's label without its seed: runs of one configuration share a colour."""
    return " ".join(o for o in label.split() if not o.startswith("seed=")) or "(all)"


def _short(label: str) -> str:
    """``model.objective.num_patches=16`` -> ``num_patches=16`` (the last part of each key)."""
    return " ".join(o.split("=", 1)[0].rsplit(".", 1)[-1] + ("=" + o.split("=", 1)[1] if "=" in o else "")
                    for o in label.split()) or "(all)"


def _colours(configs: list[str]) -> dict[str, tuple]:
    cmap = matplotlib.colormaps["tab10" if len(configs) <= 10 else "tab20"]
    return {c: cmap(i % cmap.N) for i, c in enumerate(configs)}


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def plot_ablation(jobs: list[Job], labels: list[str], path: Path) -> None:
    """``ablation.png`` (see the module docstring)."""
    use_iou = any("val/content_iou" in j.metrics.get("final", {}) for j in jobs)
    y_key, y_name = ("val/content_iou", "content IoU (higher is better)") if use_iou else \
        ("val/kid", "KID (lower is better)")
    points = [(_config_label(lab), lab, j.metrics["final"]["val/fid"], j.metrics["final"].get(y_key))
              for j, lab in zip(jobs, labels) if j.metrics.get("final")
              and _finite(j.metrics["final"].get("val/fid")) and _finite(j.metrics["final"].get(y_key))]
    configs = list(dict.fromkeys(p[0] for p in points))
    colours = _colours(configs)
    seeded = any("seed=" in p[1] for p in points)
    fig = Figure(figsize=(7.5, 5.5))
    ax = fig.subplots()
    for config in configs:
        xs = [p[2] for p in points if p[0] == config]
        ys = [p[3] for p in points if p[0] == config]
        if seeded and len(xs) > 1:
            ax.scatter(xs, ys, s=14, color=colours[config], alpha=0.35, lw=0)
            mx, my = statistics.fmean(xs), statistics.fmean(ys)
            ax.errorbar(mx, my, xerr=statistics.stdev(xs), yerr=statistics.stdev(ys), fmt="o", ms=7, capsize=3,
                        color=colours[config], label=f"{_short(config)} (n={len(xs)})")
            ax.annotate(_short(config), (mx, my), textcoords="offset points", xytext=(6, 5), fontsize=8)
        else:
            ax.scatter(xs, ys, s=40, color=colours[config], label=_short(config))
            for x, y in zip(xs, ys):
                ax.annotate(_short(config), (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8)
    if not points:
        ax.text(0.5, 0.5, f"no run with a final val/fid and {y_key}", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlabel(curve_titles(jobs).get("val/fid", "FID").replace("val/fid", "FID") + ", final (lower is better)  <- better")
    ax.set_ylabel(y_name + ("  better ->" if use_iou else "  <- better"))
    ax.set_title(f"Ablation: FID vs {y_key.split('/')[1]}, {len(points)} of {len(jobs)} runs")
    ax.grid(alpha=0.3)
    if 1 < len(configs) <= MAX_LEGEND:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")


def load_curves(job: Job) -> dict[str, tuple[list[float], list[float]]]:
    """``{key: (steps, values)}`` of ``CURVE_KEYS`` from a job's CSV log ({} when it has none)."""
    csv_path = find_metrics_csv(job.path) if job.path else None
    if csv_path is None:
        return {}
    rows = read_metrics_csv(csv_path)
    curves = {}
    for key in CURVE_KEYS:
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
        if key == "train/loss_nce":  # unweighted: a job without a known lambda_nce > 0 is left out of the panel
            pts = [(s, v / job.lambda_nce) for s, v in pts] if job.lambda_nce else []
        if pts:
            curves[key] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


def curve_titles(jobs: list[Job]) -> dict[str, str]:
    """Panel titles saying what the curves are: the NCE loss divided by each job's weight, and the FID's
    Inception features when some job used other ones than the standard 2048."""
    titles = {"train/loss_nce": "PatchNCE, unweighted (train/loss_nce / lambda_nce)"}
    features = sorted({j.fid_feature for j in jobs if j.fid_feature is not None and j.fid_feature != 2048})
    if features:
        titles["val/fid"] = (f"val/fid on Inception's {'/'.join(map(str, features))}-d features "
                             "(not the standard FID)")
    return titles


def plot_curves(jobs: list[Job], labels: list[str], path: Path) -> None:
    """``curves.png`` (see the module docstring): ``CURVE_KEYS`` of every job, one colour per configuration."""
    found = [(lab, curves) for j, lab in zip(jobs, labels) if (curves := load_curves(j))]
    configs = list(dict.fromkeys(_config_label(lab) for lab, _ in found))
    colours = _colours(configs)
    runs, shown = [], set()
    for lab, curves in found:
        config = _config_label(lab)
        runs.append((_short(config) if config not in shown else None, colours[config], curves))
        shown.add(config)
    fig = curves_figure(runs, CURVE_KEYS, cols=len(CURVE_KEYS), titles=curve_titles(jobs))
    axes = fig.axes
    if not runs:
        axes[0].text(0.5, 0.5, "no run with a metrics CSV", ha="center", va="center", transform=axes[0].transAxes)
    if configs and len(configs) <= MAX_LEGEND:
        handles, names = [], []
        for ax in axes:
            for h, n in zip(*ax.get_legend_handles_labels()):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(names) - 1) // 4), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
