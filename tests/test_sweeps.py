"""Sweeps that scale out: the ablation group, the launcher / sweeper configs (joblib, SLURM via submitit, Optuna)
and multiruns through them on ``debug=tiny`` that the report reads.

Tests needing a Hydra plugin skip when it is not installed (``pip install 'cutlight[sweep]'``).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from cutlight.reports.records import SUMMARY_FILE
from cutlight.reports.sweep import write_report as report
from train_cli import TINY, job_dirs, needs_plugin, output, run_train

CONF = Path(__file__).resolve().parents[1] / "conf"
joblib_plugin = needs_plugin("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher")
submitit_plugin = needs_plugin("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher")
optuna_plugin = needs_plugin("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper")


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


def summary_rows(sweep: Path) -> list[dict]:
    report(sweep, wandb="off")
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------- configs
# (every option of every group, hydra/launcher and hydra/sweeper included, composes and instantiates:
# tests/test_config.py::test_every_yaml_composes_and_instantiates)


@optuna_plugin
def test_optuna_sweeper_config():
    sweeper = compose_cfg(["hydra/sweeper=optuna_fid"]).hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert set(sweeper.params) == {"model.objective.lambda_nce", "model.objective.nce_temperature",
                                   "model.objective.num_patches"}
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert all(o.is_sweep_override() for o in parsed)


@submitit_plugin
def test_slurm_launcher_makes_the_expected_sbatch_script(tmp_path, monkeypatch):
    """The SLURM config's parameters go through submitit's own validation into an sbatch script (converted the
    way hydra-submitit-launcher does; no cluster needed: only ``srun``'s presence is faked)."""
    import submitit
    import submitit.slurm.slurm as slurm
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_cfg(["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                       "hydra.launcher.timeout_min=600", "trainer=ddp", f"hydra.sweep.dir={tmp_path}"])
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["tasks_per_node"] == 4  # one DDP process per GPU
    assert cfg.trainer.devices == -1 and cfg.trainer.strategy.startswith("ddp")
    monkeypatch.setattr(slurm.shutil, "which", lambda name: f"/usr/bin/{name}")
    executor = submitit.AutoExecutor(folder=tmp_path / ".submitit", cluster="slurm",
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    params.pop("_target_"), params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m cutlight.cli.train", "uid")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --time=600", "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64GB", "#SBATCH --nodes=1"):
        assert line in script, script
    assert "srun" in script


# ------------------------------------------------------------------------------------------- multiruns
def assert_two_finished(sweep: Path, proc) -> list[dict]:
    jobs = job_dirs(sweep)
    assert proc.returncode == 0 and len(jobs) == 2, output(proc)
    assert [json.loads((j / SUMMARY_FILE).read_text())["state"] for j in jobs] == ["finished"] * 2
    rows = summary_rows(sweep)
    assert [r["label"] for r in rows] == ["seed=0", "seed=1"]
    assert all(r["state"] == "finished" and math.isfinite(float(r["fid_final"])) for r in rows)
    assert (sweep / "ablation.png").is_file() and (sweep / "curves.png").is_file()
    return rows


@pytest.mark.slow
@joblib_plugin
def test_joblib_sweep_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(["-m", *TINY, "hydra/launcher=parallel", "seed=0,1", f"hydra.sweep.dir={sweep}"], tmp_path)
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr, output(proc)
    assert_two_finished(sweep, proc)


@pytest.mark.slow
@submitit_plugin
def test_submitit_local_sweep_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(["-m", *TINY, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15", "seed=0,1",
                      f"hydra.sweep.dir={sweep}"], tmp_path)
    assert_two_finished(sweep, proc)
    assert list((sweep / ".submitit").glob("*/*_log.out"))  # submitit's own job logs


@pytest.mark.slow
@optuna_plugin
def test_optuna_two_trials_best_is_the_minimum(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(["-m", *TINY, "hydra/sweeper=optuna_fid", "hydra.sweeper.n_trials=2",
                      f"hydra.sweep.dir={sweep}"], tmp_path)
    jobs = job_dirs(sweep)
    assert proc.returncode == 0 and len(jobs) == 2, output(proc)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    rows = summary_rows(sweep)
    fids = [float(r["fid_final"]) for r in rows]
    assert all(math.isfinite(f) for f in fids) and best.best_value == pytest.approx(min(fids))
    for job, row in zip(jobs, rows):  # each trial returned its own final val/fid to Optuna
        assert json.loads((job / SUMMARY_FILE).read_text())["optimized_metric"] == pytest.approx(float(row["fid_final"]))
    winner = rows[fids.index(min(fids))]["overrides"]
    assert all(f"{k}={v}" in winner for k, v in best.best_params.items())
    assert "## Optuna" in (sweep / "summary.md").read_text()
