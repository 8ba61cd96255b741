"""Weights & Biases logging through the real Hydra entrypoint, offline.

A 2-job multirun (``-m debug=tiny logger=wandb seed=0,1``) runs once in a subprocess with ``WANDB_MODE=offline``;
the tests read each job's offline run file (``run-<id>.wandb``: a LevelDB-style log of protobuf records, read
here with a small reader since wandb 0.31 ships no Python one) and its ``files/media/images`` folder:
* the loss terms, ``val/fid``, ``val/kid``, ``perf/sec_per_iter`` and ``perf/peak_mem_mb`` are in the history,
  with the same values as the CSV logger;
* image grids and the loss-curve plot were logged as 8-bit RGB PNGs;
* the run config is one tree, the composed config: its top-level keys are exactly those of the job's
  ``config_resolved.yaml``, each written once (no flattened module / datamodule hyperparameters next to it);
* the two jobs are two runs of one W&B group, each with its own config (not one run reused by both jobs).
``_name_wandb_run`` is also unit-tested for single runs (overrides + time) and multiruns without starting W&B.
"""

from __future__ import annotations

import csv
import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import warm
from helpers import TINY_ARGS

REPO = Path(__file__).resolve().parents[1]
LOGGED = ["train/loss_d", "train/loss_g", "train/loss_g_gan", "train/loss_nce", "train/loss_nce_idt",
          "val/fid", "val/kid", "perf/sec_per_iter", "perf/peak_mem_mb"]
IMAGE_KEYS = ["samples/translations", "plots/loss_curves"]


def read_wandb_records(path: Path) -> list:
    """Records of an offline ``.wandb`` file: a 7-byte ``:W&B`` header, then a LevelDB log (32 KiB blocks of
    chunks with a 7-byte header: crc32c, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) of ``Record`` protos."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the end of the block
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        else:
            assert kind in (3, 4), f"bad chunk type {kind} at {pos}"
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def parse_run(job_dir: Path) -> dict:
    """One job's offline W&B run: run record, history rows, config, and its folder."""
    run_files = sorted(job_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, f"expected one offline run under {job_dir}, found {run_files}"
    records = read_wandb_records(run_files[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    history = [{_key(i): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    config, config_writes = {}, []
    for r in records:
        if r.WhichOneof("record_type") == "config":
            config.update({_key(i): json.loads(i.value_json) for i in r.config.update})
            config_writes += [_key(i) for i in r.config.update]
    return dict(run=runs[0], n_runs=len(runs), kinds=kinds, history=history, config=config,
                config_writes=config_writes, dir=run_files[0].parent)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("wandb")
    sweep = tmp / "sweep"
    env = {**os.environ, **warm.start_env(), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb_dir"), "WANDB_SILENT": "true",
           "OMP_NUM_THREADS": "1", "CUTLIGHT_CACHE": str(tmp / "cache")}  # not an override: it would name the jobs
    args = ["-m", *TINY_ARGS, "logger=wandb", "seed=0,1", "trainer.max_epochs=1", "trainer.log_every_n_steps=1",
            "+trainer.enable_progress_bar=false", f"hydra.sweep.dir={sweep}"]
    proc = warm.run_module("cutlight.cli.train", args, REPO, env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name[:2] for p in jobs] == ["0_", "1_"], jobs
    return dict(sweep=sweep, jobs=jobs, runs=[parse_run(j) for j in jobs])


@pytest.mark.slow
def test_offline_run_has_metrics_images_and_hyperparameters(multirun):
    job, run = multirun["jobs"][0], multirun["runs"][0]
    assert run["n_runs"] == 1 and "exit" in run["kinds"]  # a finished run
    keys = set().union(*run["history"])
    assert set(LOGGED) <= keys, sorted(set(LOGGED) - keys)

    # The values are the ones the CSV logger got (same Lightning logging calls, same steps).
    with open(job / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for key in ("val/fid", "val/kid", "train/loss_nce"):
        from_csv = [float(r[key]) for r in rows if r.get(key)]
        from_wandb = [row[key] for row in run["history"] if key in row]
        assert from_csv and from_wandb == pytest.approx(from_csv, rel=1e-6), key
    assert all(row["perf/sec_per_iter"] > 0 for row in run["history"] if "perf/sec_per_iter" in row)

    # Images: history entries of type image-file, and the PNGs themselves, 8-bit RGB with content.
    for key in IMAGE_KEYS:
        entries = [row for row in run["history"] if f"{key}/_type" in row or key in row]
        assert entries, f"no image logged under {key}"
    media = run["dir"] / "files" / "media" / "images"
    grids, plots = sorted((media / "samples").glob("*.png")), sorted((media / "plots").glob("*.png"))
    assert grids and len(plots) == 1
    for png in (grids[-1], plots[0]):
        with Image.open(png) as img:
            assert img.mode == "RGB"
            pixels = np.asarray(img)
        assert pixels.dtype == np.uint8 and pixels.std() > 5, png
    # A grid is 3 labelled columns (input A | translation G(A) | target domain B) of 32 px images shown at 192 px
    # (tile_size) with 4 px padding.
    with Image.open(grids[-1]) as img:
        assert img.size[0] == 4 + 3 * (192 + 4)

    # Hyperparameters: one tree, the composed Hydra config (the module's and datamodule's hparams are not
    # logged a second time next to it), every key written once.
    config = run["config"]
    from omegaconf import OmegaConf

    composed = OmegaConf.to_container(OmegaConf.load(job / "config_resolved.yaml"))
    user_keys = [k for k in run["config_writes"] if not k.startswith("_")]  # "_wandb": W&B's own bookkeeping
    assert sorted(user_keys) == sorted(composed), (sorted(user_keys), sorted(composed))
    # the same values (the W&B logger node also holds the run name and group, set after the file was written)
    assert {k: config[k] for k in composed if k != "logger"} == {k: v for k, v in composed.items() if k != "logger"}
    assert config["seed"] == 0
    assert config["model"]["objective"]["num_patches"] == 16
    assert config["trainer"]["accelerator"] == "cpu"
    assert config["model"]["val_metrics"]["feature"] == 64
    assert not {"generator", "objective", "val_metrics", "batch_size"} & set(config), sorted(config)


@pytest.mark.slow
def test_multirun_jobs_are_separate_runs_in_one_group(multirun):
    sweep, runs = multirun["sweep"], multirun["runs"]
    ids = {r["run"].run_id for r in runs}
    assert len(ids) == 2
    assert [r["run"].run_group for r in runs] == [sweep.name, sweep.name]
    names = [r["run"].display_name for r in runs]
    assert names == [j.name.split("_", 1)[1] for j in multirun["jobs"]]  # the job's override_dirname
    assert "seed=0" in names[0] and "seed=1" in names[1]
    # Each run holds its own job's config and metrics (job 1 did not log into job 0's run).
    assert [r["config"]["seed"] for r in runs] == [0, 1]
    for r in runs:
        assert {"val/fid", "train/loss_nce"} <= set().union(*r["history"])
        assert sum("plots/loss_curves/_type" in row for row in r["history"]) == 1


@pytest.fixture
def hydra_config(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    conf_dir = str(REPO / "conf")

    def make(mode: str, overrides: list[str]):
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            cfg = compose("train", overrides=["logger=wandb", f"hydra.mode={mode}", *overrides],
                          return_hydra_config=True)
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / "outputs" / "run7")
            cfg.hydra.job.num = 3
            cfg.hydra.job.override_dirname = "seed=5"
            cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "sweep42")
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None


def test_name_wandb_run_single_run(hydra_config):
    from cutlight.cli.train import _name_wandb_run

    cfg = hydra_config("RUN", [])
    _name_wandb_run(cfg)
    assert re.fullmatch(r"seed=5 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", cfg.logger.wandb.name)  # overrides + time
    assert cfg.logger.wandb.group is None


def test_name_wandb_run_multirun_and_explicit_names(hydra_config):
    from cutlight.cli.train import _name_wandb_run

    cfg = hydra_config("MULTIRUN", [])
    _name_wandb_run(cfg)
    assert (cfg.logger.wandb.group, cfg.logger.wandb.name) == ("sweep42", "seed=5")
    cfg = hydra_config("MULTIRUN", ["logger.wandb.group=mine", "logger.wandb.name=given"])
    _name_wandb_run(cfg)
    assert (cfg.logger.wandb.group, cfg.logger.wandb.name) == ("mine", "given")
