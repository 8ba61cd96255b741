"""Outcomes over seeds: means with t-based 95% confidence intervals, paired differences to a baseline
configuration (same seed), and a verdict against the direction a paper reports.

A GAN's outcome at a small budget is a random draw, so a sweep that claims "this option hurts" needs several seeds
and an interval. ``seed_comparison(jobs)`` groups a sweep's jobs by configuration (overrides other than ``seed``),
takes each job's tested metrics (``test_results.csv``, the checkpoint chosen by validation) or else its final
validation metrics, and compares every configuration with the baseline seed by seed.

The paper's direction is read from each job's config (``paper: {direction: worse | better | same, note: ...}``,
set by ``conf/ablation/*.yaml``), never hard-coded here.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

if TYPE_CHECKING:
    from .jobs import Job

# metric -> True when higher is better (the built-in score terms), False when lower is (FID, KID)
HIGHER_IS_BETTER = {"content_iou": True, "style": True, "score": True, "fid": False, "kid": False}
METRICS = tuple(HIGHER_IS_BETTER)

# two-sided 95% quantiles of Student's t (t_{0.975, df}), df = 1..30; beyond: a Cornish-Fisher expansion
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (the 95% two-sided interval's factor)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1; got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its t-based 95% interval (None with fewer than 2 values)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    if len(values) < 2:
        return values[0], None
    return statistics.fmean(values), t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def verdict(diff: float | None, half: float | None, n: int, direction: str | None, higher_is_better: bool) -> str:
    """``reproduced`` when the paired difference's 95% interval lies on the paper's side of 0, ``opposite`` when it
    lies on the other side, else ``not resolved at n seeds``; ``-`` without a paper direction.

    ``direction``: the paper's finding for this option against the baseline: ``worse``, ``better`` or ``same``.
    ``same`` is never claimed from an interval alone (equivalence needs a margin): it reads ``not resolved`` while
    the interval contains 0 and ``opposite`` when it excludes 0.
    """
    if direction is None:
        return "-"
    if direction not in ("worse", "better", "same"):
        raise ValueError(f"unknown paper direction {direction!r}; expected worse, better or same")
    seeds = f"not resolved at {n} seed{'s' if n != 1 else ''}"
    if diff is None or half is None:
        return seeds
    low, high = diff - half, diff + half
    if direction == "same":
        return seeds if low <= 0 <= high else "opposite"
    improves = high < 0 if not higher_is_better else low > 0
    hurts = low > 0 if not higher_is_better else high < 0
    if (direction == "worse" and hurts) or (direction == "better" and improves):
        return "reproduced"
    if (direction == "worse" and improves) or (direction == "better" and hurts):
        return "opposite"
    return seeds


def job_outcome(job: Job) -> dict[str, float]:
    """The job's outcome per metric: tested (``test_results.csv``'s last row, ``test/<metric>``) where it was
    tested, else its final validation value (``val/<metric>``)."""
    final = {k.split("/", 1)[1]: v for k, v in job.metrics.get("final", {}).items()}
    tested = {}
    path = job.path / "test_results.csv" if job.path else None
    if path is not None and path.is_file():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        if rows:
            for key, value in rows[-1].items():
                if key and key.startswith("test/") and value not in ("", None):
                    try:
                        tested[key.split("/", 1)[1]] = float(value)
                    except ValueError:
                        pass
    return {m: tested.get(m, final.get(m)) for m in METRICS if tested.get(m, final.get(m)) is not None}


def paper_note(job: Job) -> dict[str, Any] | None:
    """The ``paper`` node of the job's saved config (``.hydra/config.yaml``), or None."""
    path = job.path / ".hydra" / "config.yaml" if job.path else None
    if path is None or not path.is_file():
        return None
    node = OmegaConf.load(path).get("paper")
    return OmegaConf.to_container(node) if node is not None else None


@dataclass
class ConfigurationRow:
    """One configuration of a sweep over seeds."""

    label: str
    seeds: list[str]
    stats: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # metric -> (mean, half)
    paired: dict[str, tuple[float | None, float | None, int]] = field(default_factory=dict)  # metric -> diff, half, n
    paper: dict[str, Any] | None = None
    verdict: str = "-"
    values: dict[str, list[float]] = field(default_factory=dict)  # metric -> its value per seed (finished runs)


def _seed(job_label: list[str]) -> str | None:
    return next((o.split("=", 1)[1] for o in job_label if o.split("=", 1)[0].lstrip("+~") == "seed"), None)


def seed_comparison(jobs: list[Job], labels: list[list[str]], baseline: str | None = None,
                    primary: str | None = None) -> tuple[list[ConfigurationRow], str | None, str | None]:
    """Per configuration: mean and 95% interval of each metric over its finished seeds, the paired difference to
    the baseline configuration (seeds both finished) and the verdict on the ``primary`` metric.

    Args:
        labels: each job's varying overrides (``cutlight.reports.sweep.varying_overrides``).
        baseline: the baseline configuration's label (its overrides other than ``seed``, space-separated); default:
            the configuration labelled ``ablation=cut`` when there is one, else none (no paired columns).
        primary: the metric the verdict reads; default ``score`` when logged, else ``fid``.
    Returns:
        (rows, baseline label or None, primary metric or None)
    """
    groups: dict[str, list[tuple[str | None, dict[str, float]]]] = {}
    notes: dict[str, dict | None] = {}
    for job, label in zip(jobs, labels):
        config = " ".join(o for o in label if o.split("=", 1)[0].lstrip("+~") != "seed")
        groups.setdefault(config, [])
        if job.state == "finished":
            groups[config].append((_seed(label), job_outcome(job)))
        if notes.get(config) is None:
            notes[config] = paper_note(job)
    if baseline is None:
        baseline = next((c for c in groups if c == "ablation=cut"), None)
    elif baseline not in groups:
        raise ValueError(f"baseline {baseline!r} is not a configuration of this sweep; expected one of "
                         f"{', '.join(repr(c) for c in groups)}")
    logged = {m for members in groups.values() for _, out in members for m in out}
    if primary is None:
        primary = "score" if "score" in logged else "fid" if "fid" in logged else None
    base = {seed: out for seed, out in groups.get(baseline, [])} if baseline is not None else {}
    rows = []
    for config, members in groups.items():
        row = ConfigurationRow(label=config, seeds=[s for s, _ in members if s is not None], paper=notes.get(config))
        for m in METRICS:
            row.values[m] = [out[m] for _, out in members if m in out and math.isfinite(out[m])]
            row.stats[m] = mean_ci(row.values[m])
            if baseline is not None and config != baseline:
                diffs = [out[m] - base[s][m] for s, out in members if s in base and m in out and m in base[s]]
                row.paired[m] = (*mean_ci(diffs), len(diffs))
        if primary is not None and primary in row.paired:
            diff, half, n = row.paired[primary]
            row.verdict = verdict(diff, half, n, (row.paper or {}).get("direction"), HIGHER_IS_BETTER[primary])
        rows.append(row)
    return rows, baseline, primary


def _interval(mean: float | None, half: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.3g}" if half is None else f"{mean:.3g} [{mean - half:.3g}, {mean + half:.3g}]"


def comparison_markdown(rows: list[ConfigurationRow], baseline: str | None, primary: str | None,
                        several_seeds: bool) -> list[str]:
    """``summary.md``'s section: one line per configuration, means with 95% intervals; with a baseline, the paired
    differences and the verdict against the paper's direction."""
    logged = [m for m in METRICS if any(r.stats[m][0] is not None for r in rows)]
    unit = "seeds" if several_seeds else "runs"
    title = "Over seeds: mean [95% CI, t-based]" if several_seeds else "Per configuration: mean [95% CI, t-based]"
    head = ["configuration", unit] + logged
    if baseline is not None:
        head += [f"{primary} - baseline (paired)", "paper", "verdict"]
    out = [f"## {title}", ""]
    if baseline is not None:
        out += [f"Baseline: `{baseline}`. Paired: the difference to the baseline run of the same seed, its mean and "
                f"95% interval; the verdict reads `{primary}` ({'higher' if HIGHER_IS_BETTER[primary] else 'lower'} "
                "is better) against the direction the paper reports (the `paper:` note of the option's config).", ""]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"`{r.label}`" if r.label else "(all)", str(len(r.seeds))]
        cells += [_interval(*r.stats[m]) for m in logged]
        if baseline is not None:
            if r.label == baseline:
                cells += ["(baseline)", "", ""]
            else:
                diff, half, n = r.paired.get(primary, (None, None, 0))
                paper = r.paper or {}
                note = paper.get("direction", "") + (f": {paper['note']}" if paper.get("note") else "")
                cells += [_interval(diff, half) + (f" (n={n})" if diff is not None else ""), note, r.verdict]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return out


def write_comparison_csv(path: Path, rows: list[ConfigurationRow], primary: str | None) -> None:
    """``comparison.csv``: the section above as numbers (mean, ci_low, ci_high per metric; paired ones)."""
    columns = ["label", "n"]
    for m in METRICS:
        columns += [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high", f"{m}_diff", f"{m}_diff_ci_low", f"{m}_diff_ci_high"]
    columns += ["paper_direction", "verdict", "verdict_metric"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            rec: dict[str, Any] = {"label": r.label, "n": len(r.seeds), "verdict": r.verdict,
                                   "verdict_metric": primary or "",
                                   "paper_direction": (r.paper or {}).get("direction", "")}
            for m in METRICS:
                mean, half = r.stats[m]
                diff, dhalf, _ = r.paired.get(m, (None, None, 0))
                rec[f"{m}_mean"] = "" if mean is None else mean
                rec[f"{m}_ci_low"] = "" if half is None else mean - half
                rec[f"{m}_ci_high"] = "" if half is None else mean + half
                rec[f"{m}_diff"] = "" if diff is None else diff
                rec[f"{m}_diff_ci_low"] = "" if dhalf is None else diff - dhalf
                rec[f"{m}_diff_ci_high"] = "" if dhalf is None else diff + dhalf
            writer.writerow(rec)


def comparison_figure(rows: list[ConfigurationRow], baseline: str | None, metric: str, path: Path) -> Path:
    """``comparison.png``: one row per configuration, its seeds as dots and its mean with the 95% interval; the
    baseline's interval as a band across every row (drawn on a ``Figure``, saved; no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 0.5 * len(rows) + 1.4))
    ax = fig.add_subplot()
    base = next((r for r in rows if r.label == baseline), None)
    if base is not None and base.stats[metric][0] is not None:
        mean, half = base.stats[metric]
        if half is not None:
            ax.axvspan(mean - half, mean + half, color="tab:blue", alpha=0.15, label="baseline 95% CI")
        ax.axvline(mean, color="tab:blue", lw=1, label="baseline mean")
    for y, r in enumerate(rows):
        ax.scatter(r.values[metric], [y] * len(r.values[metric]), s=14, color="0.5", zorder=2)
        mean, half = r.stats[metric]
        if mean is not None:
            ax.errorbar([mean], [y], xerr=[[half or 0], [half or 0]], fmt="o", color="black", capsize=4, zorder=3)
    ax.set_yticks(range(len(rows)), [r.label or "(all)" for r in rows])
    ax.invert_yaxis()
    better = "higher" if HIGHER_IS_BETTER[metric] else "lower"
    ax.set_xlabel(f"{metric} ({better} is better): seeds (dots), mean and 95% CI (bars)")
    if base is not None:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")  # the report writes through a .tmp name
    return path
