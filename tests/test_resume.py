"""Exact resume: a run killed at any step and resumed ends bit-identical to an uninterrupted one, in one folder
with one continuous metrics.csv; a kill during a checkpoint save leaves the previous checkpoint intact; the data
order can start mid-epoch; the CSV log and W&B run continue."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import warm
from cutlight.data.resumable import ResumableLoader, ResumableSampler, SeededItems
from cutlight.lightning.resume import AppendingCSVLogger, read_resume_checkpoint
from helpers import ROOT, TINY_ARGS

# 2 epochs of 4 batches, a checkpoint (last.ckpt) after every batch, CPU-deterministic, validation each epoch
RESUME_ARGS = [*TINY_ARGS, "+trainer.deterministic=true", "trainer.limit_train_batches=4",
               "callbacks.checkpoint.last_every_n_steps=1", "callbacks.image_grid.every_n_steps=3",
               "model.val_metrics.extractor={_target_:helpers.TinyFeatureExtractor,num_features:16}",
               "model.val_metrics.kid_subset_size=2"]
STEPS = 8


def env(tmp_path: Path, **extra) -> dict:
    return warm.start_env({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "CUTLIGHT_CACHE": str(tmp_path / "cache"),
                           "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "WANDB_SILENT": "true", **extra})


def train(tmp_path: Path, *args: str, **extra) -> subprocess.CompletedProcess:
    """``python -m cutlight.cli.train RESUME_ARGS ARGS`` in ``tmp_path``, to the end."""
    return warm.run_module("cutlight.cli.train", [*RESUME_ARGS, *args], tmp_path, env(tmp_path, **extra), timeout=600)


def csv_rows(path: Path) -> list[dict]:
    """(step, train/* and val/* values) of each row: what two runs of the same training must share."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k == "step" or k.startswith(("train/", "val/"))}
                for row in csv.DictReader(f)]


def logged_steps(path: Path) -> list[int]:
    return [int(r["step"]) for r in csv_rows(path) if r.get("train/loss_d")]


def assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for idx, st in opt_a["state"].items():
            for key, value in st.items():
                assert torch.equal(value, opt_b["state"][idx][key]), (idx, key)
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    res = train(tmp, f"hydra.run.dir={tmp / 'run'}")
    assert res.returncode == 0, res.stderr[-3000:]
    return tmp / "run"


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_is_bit_exact(reference, tmp_path):
    kill_after = random.Random(os.urandom(8)).randrange(1, STEPS)  # any logged step but the last; in messages
    run = tmp_path / "run"
    wandb = ["logger=wandb", "logger.wandb.offline=true"]
    proc = warm.start_module("cutlight.cli.train", [*RESUME_ARGS, *wandb, f"hydra.run.dir={run}"], tmp_path,
                             env(tmp_path, WANDB_MODE="offline"))
    metrics = run / "csv" / "metrics.csv"
    try:
        while proc.poll() is None:  # rows are written at once: kill as soon as step `kill_after` is logged
            if metrics.exists() and max(logged_steps(metrics), default=-1) >= kill_after:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        proc.wait(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before step {kill_after} was killed"

    res = train(tmp_path, *wandb, f"resume={run}", WANDB_MODE="offline")
    assert res.returncode == 0, f"killed after step {kill_after}: {res.stderr[-3000:]}"
    assert "resuming from" in (run / "train.log").read_text()

    final = read_resume_checkpoint(run / "checkpoints" / "last.ckpt")
    assert_same_state(read_resume_checkpoint(reference / "checkpoints" / "last.ckpt"), final)
    assert final["global_step"] == 2 * STEPS  # last.ckpt is the final state
    assert not list((run / "checkpoints").glob("last-v*.ckpt")) and not list(run.rglob("*.tmp"))
    # one continuous metrics.csv, the same values as the uninterrupted run (losses, lr, FID/KID)
    assert csv_rows(metrics) == csv_rows(reference / "csv" / "metrics.csv"), f"killed after step {kill_after}"
    assert logged_steps(metrics) == list(range(1, STEPS + 1))  # steps count batches done
    # no image grid overwritten: every grid of the uninterrupted run, and any repeated step under a new name
    grids = sorted(p.name for p in (run / "images").iterdir())
    assert set(sorted(p.name for p in (reference / "images").iterdir())) <= set(grids)
    assert all(name.startswith(("step_", "progress")) and ("-resumed" in name or name.count("_") <= 1)
               for name in grids), grids
    assert (run / "config_resolved.resume1.yaml").exists()  # the first run's config is kept
    # the same W&B run, resumed by id (offline: two run folders with one id)
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1, ids


@pytest.mark.slow
def test_resume_from_a_file_continues_in_a_new_folder_linked_to_the_old(reference, tmp_path):
    old = tmp_path / "old"  # a run stopped after 3 batches (mid-epoch), as a kill would leave it
    res = train(tmp_path, "+trainer.max_steps=6", f"hydra.run.dir={old}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert read_resume_checkpoint(old / "checkpoints" / "last.ckpt")["global_step"] == 6
    new = tmp_path / "new"
    res = train(tmp_path, f"ckpt_path={old / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={new}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (new / "resumed_from").resolve() == old.resolve()
    assert_same_state(read_resume_checkpoint(reference / "checkpoints" / "last.ckpt"),
                      read_resume_checkpoint(new / "checkpoints" / "last.ckpt"))
    assert csv_rows(new / "csv" / "metrics.csv") == csv_rows(reference / "csv" / "metrics.csv")


SAVE_KILLER = """
import pathlib, sys, time
sys.path.insert(0, {tests!r})
import pytorch_lightning as pl, torch
from pytorch_lightning.callbacks import ModelCheckpoint
from cutlight.lightning.resume import AtomicCheckpoint
from helpers import tiny_data, tiny_module, tiny_trainer

original, calls = pl.Trainer.save_checkpoint, []

def slow_save(self, filepath, weights_only=False, storage_options=None):
    calls.append(filepath)
    if len(calls) == 3:  # the third save: half the bytes on disk, then the process is killed
        original(self, filepath + ".full")
        data = open(filepath + ".full", "rb").read()
        with open(filepath, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
        print("SAVING", filepath, flush=True)
        time.sleep(600)
    return original(self, filepath, weights_only, storage_options)

pl.Trainer.save_checkpoint = slow_save
tmp = pathlib.Path({tmp!r})
cls = AtomicCheckpoint if {atomic!r} else ModelCheckpoint
kw = dict(last_every_n_steps=1) if {atomic!r} else dict(every_n_train_steps=1)
ckpt = cls(dirpath=tmp / "ckpt", save_last=True, save_top_k=0, **kw)
torch.manual_seed(0)
trainer = tiny_trainer(tmp, max_epochs=1, limit_train_batches=5, limit_val_batches=0, enable_checkpointing=True,
                       callbacks=[ckpt])
trainer.fit(tiny_module(val_metrics=False), datamodule=tiny_data(tmp, num_train=6))
"""


def kill_during_third_save(tmp_path: Path, atomic: bool) -> str:
    tmp_path.mkdir(parents=True, exist_ok=True)
    code = textwrap.dedent(SAVE_KILLER.format(tests=str(ROOT / "tests"), tmp=str(tmp_path), atomic=atomic))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("SAVING"):
                os.kill(proc.pid, signal.SIGKILL)
                return line.split()[1]
    finally:
        proc.kill()
        proc.wait(timeout=60)
    raise AssertionError("the third checkpoint save was never reached")


@pytest.mark.slow
def test_kill_during_a_checkpoint_save_leaves_the_previous_one_intact(tmp_path):
    from cutlight.checkpoint import CheckpointError

    writing = kill_during_third_save(tmp_path / "atomic", atomic=True)
    last = tmp_path / "atomic" / "ckpt" / "last.ckpt"
    assert writing == f"{last}.tmp"  # the save went to a temporary name ...
    assert read_resume_checkpoint(last)["global_step"] == 4  # ... so last.ckpt is the previous, complete state

    writing = kill_during_third_save(tmp_path / "plain", atomic=False)  # the same kill without AtomicCheckpoint
    assert writing.endswith("last.ckpt")
    with pytest.raises(CheckpointError, match="is truncated: an incomplete zip archive"):
        read_resume_checkpoint(writing)


# ------------------------------------------------------------------------------------------- fast pieces
class Items(Dataset):
    """Item i: (i, a random number drawn from the torch RNG): shows which seed an item was made with."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"i": i, "r": torch.rand(())}


def test_sampler_resumes_mid_epoch_with_the_same_items():
    full = ResumableSampler(Items(), seed=7)
    full.set_epoch(3)
    order = list(full)
    assert sorted(i for i, _ in order) == list(range(10)) and len(set(s for _, s in order)) == 10
    full.set_epoch(4)
    assert [i for i, _ in full] != [i for i, _ in order]  # a new order each epoch
    resumed = ResumableSampler(Items(), seed=123)
    resumed.advance(3, 4)  # 4 samples of epoch 3 done
    state = resumed.state_dict()
    fresh = ResumableSampler(Items())
    fresh.load_state_dict({**state, "seed": 7})
    fresh.set_epoch(3)
    assert list(fresh) == order[4:]
    fresh.set_epoch(4)  # the next epoch starts at its beginning
    assert len(list(fresh)) == 10
    last = ResumableSampler(Items(), seed=7)
    last.advance(3, 8, last=True)  # the epoch's last batch: resume at the start of the next
    assert last.state_dict()["epoch"] == 4 and last.state_dict()["start"] == 0
    shards = [ResumableSampler(Items(), seed=7, num_replicas=3, rank=r) for r in range(3)]
    for s in shards:
        s.set_epoch(3)
    assert {i for s in shards for i, _ in s} == set(range(10))
    assert all(len(s) == 4 for s in shards)  # padded to equal shares, like DistributedSampler


def test_items_do_not_depend_on_workers_or_the_global_rng():
    def batches(workers):
        torch.manual_seed(workers)  # a different global RNG state each time
        loader = ResumableLoader(Items(), batch_size=2, seed=5, num_workers=workers)
        return [(b["i"].tolist(), b["r"].tolist()) for b in loader]

    assert batches(0) == batches(2)
    assert isinstance(ResumableLoader(Items(), batch_size=2).dataset, SeededItems)


def test_csv_logger_continues_and_drops_steps_trained_again(tmp_path):
    first = AppendingCSVLogger(tmp_path, name="csv", version="")
    for step in range(5):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.log_metrics({"val/fid": 1.5}, step=4)
    first.save()
    second = AppendingCSVLogger(tmp_path, name="csv", version="")  # a resumed run in the same folder
    second.resume_at_step(3)  # the checkpoint was written after step 2
    for step in (3, 4):
        second.log_metrics({"train/loss": 10.0 + step, "train/new": 1.0}, step=step)
    second.save()
    rows = list(csv.DictReader(open(tmp_path / "csv" / "metrics.csv")))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["train/loss"] for r in rows] == ["0.0", "1.0", "2.0", "13.0", "14.0"]
    assert set(rows[0]) == {"step", "train/loss", "train/new", "val/fid"} and rows[0]["train/new"] == ""


def test_checkpoint_carries_resume_state_and_wandb_id_is_continued(tmp_path):
    from omegaconf import OmegaConf

    from cutlight.cli.train import _continue_wandb_run
    from cutlight.lightning.resume import AtomicCheckpoint
    from helpers import tiny_data, tiny_module, tiny_trainer

    logger = AppendingCSVLogger(tmp_path, name="csv", version="")
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0, enable_checkpointing=True, logger=logger,
                           callbacks=[AtomicCheckpoint(dirpath=tmp_path / "ck", save_last=True, save_top_k=0)])
    trainer.fit(tiny_module(val_metrics=False), datamodule=tiny_data(tmp_path))
    ckpt = read_resume_checkpoint(tmp_path / "ck" / "last.ckpt")
    info = ckpt["cutlight"]
    assert set(info["rng"][0]) >= {"torch", "numpy", "python"} and info["run_dir"] == str(tmp_path)
    assert info["loggers"] == {"AppendingCSVLogger": ""} and info["guard"] == {"consecutive": 0, "skipped": 0}
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["start"] == 1  # resumes at the next batch

    cfg = OmegaConf.create({"logger": {"csv": {}, "wandb": {"id": None}}})
    _continue_wandb_run(cfg, {"loggers": {"WandbLogger": "abc123", "AppendingCSVLogger": ""}})
    assert (cfg.logger.wandb.id, cfg.logger.wandb.resume) == ("abc123", "allow")
    explicit = OmegaConf.create({"logger": {"wandb": {"id": "mine"}}})
    _continue_wandb_run(explicit, {"loggers": {"WandbLogger": "abc123"}})
    assert explicit.logger.wandb.id == "mine"


def test_image_grids_are_never_overwritten(tmp_path):
    from cutlight.lightning.callbacks import ImageGrid
    from helpers import tiny_data, tiny_module, tiny_trainer

    for _ in range(2):  # the same steps twice, as a resumed run in the same folder would
        grid = ImageGrid(every_n_steps=1, num_images=1, dirpath=str(tmp_path / "images"))
        trainer = tiny_trainer(tmp_path, max_steps=4, limit_val_batches=0, callbacks=[grid])  # 2 batches
        trainer.fit(tiny_module(val_metrics=False), datamodule=tiny_data(tmp_path))
    names = sorted(p.name for p in (tmp_path / "images").iterdir())
    assert names == ["progress-resumed1.png", "progress.png", "step_000000-resumed1.png", "step_000000.png",
                     "step_000001-resumed1.png", "step_000001.png", "step_000002-resumed1.png", "step_000002.png"]
