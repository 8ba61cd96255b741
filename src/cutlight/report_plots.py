"""The sweep report's figures (matplotlib, Agg backend).

* ``ablation.png``: each run a point, final FID (lower is better) against content preservation: ``val/content_iou``
  on the built-in data (higher is better), else KID. With a ``seed`` axis, each configuration is its mean over
  seeds with standard-deviation bars, its seeds as faint dots.
* ``curves.png``: every run overlaid, ``train/loss_nce``, ``train/loss_g_gan`` and ``val/fid`` against training
  batches (the paper's identity-loss stability study); training losses as moving averages.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from .runs import find_metrics_csv, read_metrics_csv

if TYPE_CHECKING:
    from .report import Job

CURVE_KEYS = ("train/loss_nce", "train/loss_g_gan", "val/fid")
MAX_LEGEND = 20


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _config_label(label: str) -> str:
    """A run's label without its seed: runs of one configuration share a colour."""
    return " ".join(o for o in label.split() if not o.startswith("seed=")) or "(all)"


def _short(label: str) -> str:
    """``model.objective.num_patches=16`` -> ``num_patches=16`` (the last part of each key)."""
    return " ".join(o.split("=", 1)[0].rsplit(".", 1)[-1] + ("=" + o.split("=", 1)[1] if "=" in o else "")
                    for o in label.split()) or "(all)"


def _colours(configs: list[str]) -> dict[str, tuple]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(configs) <= 10 else "tab20")
    return {c: cmap(i % cmap.N) for i, c in enumerate(configs)}


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def plot_ablation(jobs: list[Job], labels: list[str], path: Path) -> None:
    plt = _pyplot()
    use_iou = any("val/content_iou" in j.metrics.get("final", {}) for j in jobs)
    y_key, y_name = ("val/content_iou", "content IoU (higher is better)") if use_iou else \
        ("val/kid", "KID (lower is better)")
    points = [(_config_label(lab), lab, j.metrics["final"]["val/fid"], j.metrics["final"].get(y_key))
              for j, lab in zip(jobs, labels) if j.metrics.get("final")
              and _finite(j.metrics["final"].get("val/fid")) and _finite(j.metrics["final"].get(y_key))]
    configs = list(dict.fromkeys(p[0] for p in points))
    colours = _colours(configs)
    seeded = any("seed=" in p[1] for p in points)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
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
    ax.set_xlabel("FID, final (lower is better)  <- better")
    ax.set_ylabel(y_name + ("  better ->" if use_iou else "  <- better"))
    ax.set_title(f"Ablation: FID vs {y_key.split('/')[1]}, {len(points)} of {len(jobs)} runs")
    ax.grid(alpha=0.3)
    if 1 < len(configs) <= MAX_LEGEND:
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _moving_average(values: list[float], window: int) -> list[float]:
    if window <= 1 or len(values) < window:
        return values
    out, total = [], sum(values[:window])
    out.append(total / window)
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return [*([math.nan] * (window - 1)), *out]


def load_curves(job: Job) -> dict[str, tuple[list[float], list[float]]]:
    """``{key: (steps, values)}`` of ``CURVE_KEYS`` from a job's CSV log ({} when it has none)."""
    csv_path = find_metrics_csv(job.path) if job.path else None
    if csv_path is None:
        return {}
    rows = read_metrics_csv(csv_path)
    curves = {}
    for key in CURVE_KEYS:
        pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
        if pts:
            curves[key] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


def plot_curves(jobs: list[Job], labels: list[str], path: Path) -> None:
    plt = _pyplot()
    runs = [(lab, curves) for j, lab in zip(jobs, labels) if (curves := load_curves(j))]
    configs = list(dict.fromkeys(_config_label(lab) for lab, _ in runs))
    colours = _colours(configs)
    fig, axes = plt.subplots(1, len(CURVE_KEYS), figsize=(5.0 * len(CURVE_KEYS), 4.0), squeeze=False)
    shown: set[str] = set()
    for lab, curves in runs:
        config = _config_label(lab)
        for ax, key in zip(axes[0], CURVE_KEYS):
            if key not in curves:
                continue
            steps, values = curves[key]
            legend = _short(config) if config not in shown else None
            shown.add(config)
            if key.startswith("train/"):
                window = max(1, len(values) // 30)
                ax.plot(steps, _moving_average(values, window), lw=1.2, color=colours[config], label=legend)
            else:
                ax.plot(steps, values, "o-", lw=1.2, ms=3, color=colours[config], label=legend)
    for ax, key in zip(axes[0], CURVE_KEYS):
        values = [v for _, curves in runs if key in curves for v in curves[key][1] if math.isfinite(v)]
        if key.startswith("train/") and values and min(values) > 0 and max(values) > 10 * min(values):
            ax.set_yscale("log")  # e.g. FastCUT's NCE term, weighted by lambda_nce 10, next to CUT's
        ax.set_title(key + (" (moving average)" if key.startswith("train/") else ""))
        ax.set_xlabel("training batches")
        ax.grid(alpha=0.3)
    if not runs:
        axes[0][0].text(0.5, 0.5, "no run with a metrics CSV", ha="center", va="center",
                        transform=axes[0][0].transAxes)
    if configs and len(configs) <= MAX_LEGEND:
        handles, names = [], []
        for ax in axes[0]:
            for h, n in zip(*ax.get_legend_handles_labels()):
                if n not in names:
                    handles.append(h)
                    names.append(n)
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06 + 0.04 * ((len(names) - 1) // 4), 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
