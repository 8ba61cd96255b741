"""The README's code snippets run (on tiny data)."""

import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks():
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_core_snippet_runs_without_lightning():
    core = python_blocks()[0]
    assert "PatchNCELoss" in core and len(core.strip().splitlines()) <= 10
    exec(compile(core.replace("256, 256", "32, 32").replace("num_patches=256", "num_patches=16"), "README", "exec"), {})


def logged_scalars(run: Path) -> set[str]:
    """Scalar keys in a run folder of Lightning's default logger (TensorBoard; CSV without tensorboard)."""
    if (run / "metrics.csv").is_file():
        return set((run / "metrics.csv").read_text().splitlines()[0].split(","))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return set(EventAccumulator(str(run)).Reload().Tags()["scalars"])


@pytest.mark.slow
def test_lightning_snippet_runs_twice_in_one_folder_without_sharing_files(tmp_path, monkeypatch):
    """The snippet as a user runs it (plain ``pl.Trainer``, default logger and checkpointing, validation FID on
    by default), twice from one folder: each run writes its images, plots, checkpoints and test table under its
    own logger version folder, nothing into the current directory, and logs ``val/fid``."""
    from cutlight.data import ensure_builtin_dataset
    from helpers import TINY_EXTRACTOR

    root = ensure_builtin_dataset(size=32, num_train=4, num_test=2, cache_dir=str(tmp_path / "cache"))
    snippet = python_blocks()[1]
    assert "trainer.fit(model, datamodule=data)" in snippet and "trainer.test(model, datamodule=data)" in snippet
    small = (
        snippet.replace('"datasets/horse2zebra"', repr(str(root)))
        .replace("load_size=286, crop_size=256", "load_size=32, crop_size=32")
        .replace("max_epochs=200,", "max_epochs=1, limit_train_batches=2, log_every_n_steps=1, enable_progress_bar=False,")
        .replace("every_n_steps=1000", "every_n_steps=1")
        .replace('objective={', 'generator={"ngf": 8, "n_blocks": 1}, objective={"num_patches": 16, ')
    )
    # the tiny feature extractor for FID: what is under test is the snippet's files and logs, not Inception (its
    # offline build and features: tests/test_inception_weights.py; 4 x 2 Inception passes made this test 4 min)
    small = small.replace("n_epochs=150,", f"val_metrics={{'extractor': {TINY_EXTRACTOR!r}}}, n_epochs=150,")
    monkeypatch.chdir(tmp_path)
    runs = []
    for _ in range(2):
        scope = {}
        exec(compile(small, "README", "exec"), scope)
        trainer = scope["trainer"]
        assert trainer.global_step == 4  # 2 iterations x (D step + G step)
        runs.append(Path(trainer.log_dir))
        assert {"val/fid", "val/kid", "test/fid", "train/loss_nce", "perf/sec_per_iter"} <= logged_scalars(runs[-1])
    assert [r.relative_to(tmp_path).as_posix() for r in runs] == ["lightning_logs/version_0", "lightning_logs/version_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "lightning_logs"]  # nothing else in the cwd
    for run in runs:
        assert sorted(p.name for p in (run / "images").iterdir()) == [
            "progress.png", "step_000000.png", "step_000001.png", "step_000002.png",
            "tested_final-weights.png"]  # trainer.test(model, ...): the weights in memory
        assert (run / "plots" / "loss_curves.png").is_file()
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["epoch=0-step=2.ckpt"]  # steps: batches
        assert len((run / "test_results.csv").read_text().splitlines()) == 2  # header + this run's row
