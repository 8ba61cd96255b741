"""The curve plot: logged series against training batches, one panel per key, runs overlaid.

One drawing for both places that show training curves: the ``LossCurves`` callback's ``plots/loss_curves.png`` (one
run, every ``train/*`` and ``val/*`` key, the raw losses faint under their moving average) and the sweep report's
``curves.png`` (``cutlight.reports.plots``: every job, a few keys, one colour per configuration). Drawn on a
``matplotlib.figure.Figure`` (no pyplot, no backend switch); the caller saves it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure

Series = tuple[Sequence[float], Sequence[float]]  # (steps, values)


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Mean of each ``window`` consecutive values, aligned with the last of them (NaN before the first full
    window); the values themselves when ``window <= 1`` or there are fewer than ``window``."""
    values = list(values)
    if window <= 1 or len(values) < window:
        return values
    out, total = [], sum(values[:window])
    out.append(total / window)
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return [*([math.nan] * (window - 1)), *out]


def curves_figure(runs: Sequence[tuple[str | None, tuple | None, dict[str, Series]]], keys: Sequence[str],
                  smooth: int | None = None, raw: bool = False, cols: int = 3,
                  panel_size: tuple[float, float] = (5.0, 4.0), titles: dict[str, str] | None = None) -> Figure:
    """Logged series against training batches, one panel per key (``cols`` per row), every run overlaid.

    Args:
        runs: ``(legend label or None, colour or None, {key: (steps, values)})`` per run.
        keys: the panels, in order; ``train/*`` keys are drawn as moving averages, the others as points.
        smooth: moving-average window in batches (None: a thirtieth of each series).
        raw: also draw the training values themselves, faintly, under their average (a single run's view).
        titles: a panel's title instead of its key (e.g. what was done to the values).
    """
    rows = max(1, math.ceil(len(keys) / cols))
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    for ax, key in zip(axes, keys):
        train = key.startswith("train/")
        values_seen, averaged = [], False
        for label, colour, series in runs:
            if key not in series:
                continue
            steps, values = series[key]
            values_seen += [v for v in values if math.isfinite(v)]
            if not train:
                ax.plot(steps, values, "o-", lw=1.2, ms=3, color=colour, label=label)
                continue
            if raw:
                ax.plot(steps, values, lw=0.6, alpha=0.4, color=colour)
            window = smooth if smooth is not None else max(1, len(values) // 30)
            if not raw or len(values) >= window:  # (beside the raw values, too few for one window: nothing)
                ax.plot(steps, moving_average(values, window), lw=1.5 if raw else 1.2, color=colour, label=label)
                averaged = True
        if train and values_seen and min(values_seen) > 0 and max(values_seen) > 10 * min(values_seen):
            ax.set_yscale("log")  # e.g. FastCUT's NCE term, weighted by lambda_nce 10, next to CUT's
        ax.set_title((titles or {}).get(key, key) + (" (moving average)" if averaged else ""))
        ax.set_xlabel("training batches")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.axis("off")
    return fig
