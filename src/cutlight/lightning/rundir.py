"""Where a run's files go, what its step numbers count, and the test-results table.

Directory (:func:`run_dir`): every file a cutlight callback or module writes without an explicit ``dirpath`` goes
under the run's own directory, found the way Lightning's ``ModelCheckpoint`` finds where to put checkpoints: the
first logger's ``save_dir/name/version`` (TensorBoard and CSV: their ``log_dir``, e.g.
``lightning_logs/version_3``, a new version per run; W&B: ``save_dir/<project>/<run id>``), or, without loggers,
the trainer's ``default_root_dir``. So two runs of a plain ``pl.Trainer()`` in one folder never share images,
plots or tables. The Hydra entrypoint passes explicit folders (``outputs/<date>/<overrides>/<time>/images``...).

Steps (:func:`batches_done`): cutlight counts *training batches*. Lightning's ``global_step`` counts optimizer
steps (two per CUT batch: D and G), and its loggers use the batch index (0-based). ``TranslationModule`` logs
``step`` = batches done (:func:`log_step`), which Lightning uses as the x-axis of that row in every logger and
ModelCheckpoint uses for ``{step}`` in checkpoint names; image grids and loss curves use the same number. So
"step 500" means "after 500 training batches" in W&B, TensorBoard, the CSV file, ``images/step_000500.png`` and
``epoch=0-step=500.ckpt`` alike (Lightning's ``ThroughputMonitor`` counts the same way).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
from pathlib import Path

import pytorch_lightning as pl

RESULTS_CSV = "test_results.csv"
RESULTS_MD = "test_results.md"


def run_dir(trainer: pl.Trainer) -> Path:
    """This run's directory (see the module docstring). Not a collective: safe on rank 0 alone; under DDP,
    loggers that number versions by listing the disk may disagree across ranks, so broadcast the result
    (``trainer.strategy.broadcast``) when every rank needs the same path."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir) / str(logger.name) / version


def output_dir(trainer: pl.Trainer, dirpath: str | os.PathLike | None, sub: str) -> Path:
    """``dirpath`` if given, else ``run_dir(trainer) / sub``; created."""
    path = Path(dirpath) if dirpath else run_dir(trainer) / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches completed so far in this fit (restored on resume); 0 before any."""
    return trainer.fit_loop.total_batch_idx + 1


def checkpoint_batches(ckpt: dict) -> int | None:
    """Training batches completed when ``ckpt`` (a loaded Lightning checkpoint) was written, the count
    :func:`batches_done` gives and checkpoint names carry (``global_step`` counts optimizer steps); None when the
    checkpoint does not say."""
    try:
        return int(ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["ready"])  # as batches_done
    except (KeyError, TypeError, ValueError):
        return None


def log_step(module: pl.LightningModule) -> None:
    """Log ``step`` = :func:`batches_done`: the x-axis of the metrics logged with it, and ``{step}`` of checkpoint
    names (see the module docstring); and ``epoch``, which Lightning adds to a row only when it picks the step
    itself. Not shown on the progress bar; never synced (the same on every rank)."""
    trainer = module.trainer
    module.log("step", float(batches_done(trainer)), batch_size=1, sync_dist=False)
    module.log("epoch", float(trainer.current_epoch), batch_size=1, sync_dist=False)


def write_test_results(directory: str | os.PathLike, row: dict[str, object]) -> tuple[Path, Path]:
    """Add ``row`` (e.g. checkpoint, time and ``test/*`` metrics) to ``test_results.csv`` in ``directory`` and
    rewrite ``test_results.md`` (a markdown table of every row) next to it. Returns both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path_csv, path_md = directory / RESULTS_CSV, directory / RESULTS_MD
    rows: list[dict[str, object]] = []
    if path_csv.exists():
        with open(path_csv, newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append({k: _cell(v) for k, v in row.items()})
    columns = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path_csv.with_name(f".{RESULTS_CSV}.partial")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path_csv)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    path_md.write_text("\n".join(lines) + "\n")
    return path_csv, path_md


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def _cell(value: object) -> object:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value
