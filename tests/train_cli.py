"""Run ``python -m cutlight.cli.train`` (and other entry points) in a subprocess for the sweep / report tests."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

import warm

REPO = Path(__file__).resolve().parents[1]
# tiny runs: debug=tiny, no progress bar; 2 epochs of 4 batches, so final and best validation can differ
TINY = ["debug=tiny", "+trainer.enable_progress_bar=false", "data.size=32", "data.num_train=8", "data.num_test=4"]


def command_env(tmp_path: Path, **env) -> dict:
    """The environment of a command run from the repository root: one CPU thread, built-in data cached under
    tmp_path, W&B off unless ``env`` says otherwise."""
    return {**os.environ, **warm.start_env(), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
            "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "CUTLIGHT_CACHE": str(tmp_path / "cache"),
            "HYDRA_FULL_ERROR": "1", **env}


def run_module(module: str, args: list[str], tmp_path: Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    """``python -m module args`` from the repository root, in ``command_env``."""
    return warm.run_module(module, args, cwd=REPO, env=command_env(tmp_path, **env), timeout=timeout)


def run_train(args: list[str], tmp_path: Path, **kw) -> subprocess.CompletedProcess:
    return run_module("cutlight.cli.train", args, tmp_path, **kw)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-4000:] + "\n--- stderr ---\n" + proc.stderr[-6000:]


def needs_plugin(module: str, package: str):
    """Skip unless the Hydra plugin ``module`` is importable (``pip install 'cutlight[sweep]'``)."""
    found = importlib.util.find_spec(module) is not None
    return pytest.mark.skipif(not found, reason=f"{package} is not installed (pip install 'cutlight[sweep]')")


def job_dirs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()), key=lambda p: int(p.name.split("_")[0]))
