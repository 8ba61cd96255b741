"""Issue 28 (items 2, 4, 5, 6) and 27.1 through the real train command: one run per folder, Ctrl-C / SIGTERM
and a full disk never lose work or leave a lying ``summary.json``, no silent success, and what can be known
before the first step is checked before it (each refusal names its key or folder and trains nothing)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import warm
from cutlight.cli.run_lock import LOCK_FILE, RunLock, RunLockError
from train_cli import REPO, TINY, command_env, output, run_train

pytestmark = pytest.mark.slow

# 2 epochs of 8 batches: time to land a signal mid-epoch
LONG = [*TINY, "trainer.limit_train_batches=8"]


def _popen(args: list[str], tmp_path: Path, log: Path, new_session: bool = False, **env) -> warm.WarmProcess:
    """``python -m cutlight.cli.train ARGS`` started in the background, its output (stdout and stderr) in ``log``."""
    return warm.start_module("cutlight.cli.train", args, REPO, command_env(tmp_path, **env), stdout=log, stderr="stdout",
                             new_session=new_session)


def _steps(run: Path) -> list[int]:
    path = run / "csv" / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [int(float(r["step"])) for r in csv.DictReader(f) if r.get("train/loss_d")]


def _wait_for(cond, proc, timeout: float = 50) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before the condition")
        time.sleep(0.05)
    raise AssertionError("timed out")


def _state(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


# ------------------------------------------------------------------------------------------ one run per folder


def test_second_run_and_live_resume_refused_first_unharmed(tmp_path):
    run = tmp_path / "run"  # long enough to outlive both refusals on a busy machine; then stopped with Ctrl-C
    first = _popen([*LONG, "model.n_epochs=500", "model.n_epochs_decay=0", f"hydra.run.dir={run}"], tmp_path,
                   tmp_path / "first.log")
    try:
        _wait_for(lambda: len(_steps(run)) >= 2, first)
        owner = json.loads((run / LOCK_FILE).read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname()
        config_before = (run / ".hydra" / "config.yaml").read_bytes()
        for args in ([*LONG, f"hydra.run.dir={run}", "seed=1"], [*LONG, f"resume={run}"]):
            second = run_train(args, tmp_path, timeout=60)
            assert second.returncode == 1, output(second)
            assert f"in use by another training run (pid {first.pid} on {socket.gethostname()}, since" \
                   in second.stderr, output(second)
        assert (run / ".hydra" / "config.yaml").read_bytes() == config_before  # nothing written by the second
        assert not list(run.glob("config_resolved.resume*.yaml"))
        assert first.poll() is None, "the first run ended before both refusals: make it longer"
        seen = len(_steps(run))
        _wait_for(lambda: len(_steps(run)) > seen, first)  # unharmed: still training
    finally:
        first.send_signal(signal.SIGINT)
        rc = first.wait(timeout=120)
    assert rc == 130, (tmp_path / "first.log").read_text()[-3000:]
    assert _steps(run) == list(range(1, len(_steps(run)) + 1))  # one continuous log, no mixed rows
    assert _state(run)["state"] == "interrupted" and "seed=1" not in _state(run)["overrides"]
    assert not (run / LOCK_FILE).exists()  # released at the end


def test_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                             "since": "2026-01-01T00:00:00+00:00"}))
    proc = run_train([*TINY, "+trainer.max_steps=2", f"hydra.run.dir={run}"], tmp_path, timeout=120)
    assert proc.returncode == 0, output(proc)
    assert f"taking over the stale lock of {run}" in proc.stderr + proc.stdout
    assert not (run / LOCK_FILE).exists()


def test_run_lock_in_process(tmp_path):
    lock = RunLock.acquire(tmp_path)
    assert RunLock.acquire(tmp_path) is lock  # re-entrant in one process
    other = {"pid": 1, "host": socket.gethostname(), "since": "then"}  # pid 1 is alive
    lock.release()
    lock.release()
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text(json.dumps(other))
    with pytest.raises(RunLockError, match=r"pid 1 on .*since then"):
        RunLock.acquire(tmp_path)
    (tmp_path / LOCK_FILE).write_text(json.dumps({**other, "host": "elsewhere"}))
    with pytest.raises(RunLockError, match="another machine.*delete"):
        RunLock.acquire(tmp_path)


# ------------------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_current_step_and_resumes(tmp_path, signum):
    run = tmp_path / "run"
    log = tmp_path / "run.log"
    proc = _popen([*LONG, f"hydra.run.dir={run}"], tmp_path, log)
    _wait_for(lambda: len(_steps(run)) >= 3, proc)
    proc.send_signal(signum)
    rc = proc.wait(timeout=60)
    text = log.read_text()
    assert rc == 128 + signum, text[-3000:]
    name = signal.Signals(signum).name
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    done = _steps(run)
    assert ckpt["global_step"] == 2 * len(done) and done == list(range(1, len(done) + 1))  # the current step
    assert f"cutlight run interrupted by {name} after {len(done)} training batches; saved" in text  # the summary
    state = _state(run)
    assert state["state"] == "interrupted" and state["signal"] == name and state["step"] == len(done)
    assert not (run / LOCK_FILE).exists() and not list(run.rglob("*.tmp"))
    if signum == signal.SIGINT:  # resume continues where it stopped: one continuous log
        res = run_train([*LONG, f"resume={run}"], tmp_path, timeout=120)
        assert res.returncode == 0, output(res)
        assert _steps(run) == list(range(1, 17)) and _state(run)["state"] == "finished"


def test_ctrl_c_under_ddp_saves_the_same_step_on_every_rank(tmp_path):
    """Ctrl-C in a terminal signals the whole foreground process group: under ``trainer=ddp_cpu`` the launcher and
    both ranks. The ranks agree on the step (one all-reduce per batch), rank 0 writes ``last.ckpt`` there, the run
    says ``interrupted`` and exits 130, and ``resume=`` continues it to the end through the train command with
    ``trainer=ddp_cpu`` (the ``test_ddp.py`` tests use Lightning directly), validating on the way."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run, log = tmp_path / "run", tmp_path / "run.log"
    ddp = [*LONG, "trainer=ddp_cpu", f"hydra.run.dir={run}"]
    proc = _popen(ddp, tmp_path, log, new_session=True, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        _wait_for(lambda: len(_steps(run)) >= 3, proc, timeout=120)
        os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    done = _steps(run)  # rank 0's rows: batches per rank
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2 * len(done) and done == list(range(1, len(done) + 1)), text[-3000:]
    state = _state(run)
    assert state["state"] == "interrupted" and state["step"] == len(done), state
    assert not (run / LOCK_FILE).exists() and not list(run.rglob("*.tmp"))
    res = run_train([*LONG, "trainer=ddp_cpu", f"resume={run}"], tmp_path, timeout=300, MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(port))
    assert res.returncode == 0, output(res)
    # 8 images over 2 ranks: 4 batches per rank and epoch, 2 epochs; one continuous log of rank 0's steps
    assert _steps(run) == list(range(1, 9)) and _state(run)["state"] == "finished"
    assert "cutlight run finished" in res.stdout, output(res)
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 16
    with open(run / "csv" / "metrics.csv", newline="") as f:
        fids = [float(r["val/fid"]) for r in csv.DictReader(f) if r.get("val/fid")]
    assert fids and all(fid > 0 for fid in fids)  # validated under DDP (FID gathered over the ranks)


# ------------------------------------------------------------------------------------------ full disk

ENOSPC_HOOK = """
import errno, os
import lightning_fabric.plugins.io.torch_io as torch_io
_real, _calls = torch_io._atomic_save, [0]
def _atomic_save(checkpoint, path):
    _calls[0] += 1
    if _calls[0] >= int(os.environ["FAIL_SAVE_FROM"]):
        with open(path, "wb") as f:
            f.write(b"PK" + b"0" * 1000)  # half a file, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    _real(checkpoint, path)
torch_io._atomic_save = _atomic_save
"""


def test_disk_full_keeps_previous_checkpoint_and_resume_needs_no_cleaning(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(ENOSPC_HOOK))
    run = tmp_path / "run"
    args = [*LONG, "callbacks.checkpoint.last_every_n_steps=2"]
    full = run_train([*args, f"hydra.run.dir={run}"], tmp_path, timeout=120,
                     PYTHONPATH=f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", FAIL_SAVE_FROM="2")
    assert full.returncode == 1, output(full)
    assert "No space left on device" in full.stderr and "is the previous one, intact" in full.stderr, output(full)
    assert f"resume={run}" in full.stderr
    assert not list(run.rglob("*.tmp"))  # the partial file is gone
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4  # the first save (after 2 batches)
    assert _state(run)["state"] == "failed" and "No space left" in _state(run)["error"]
    (run / "checkpoints" / "last.ckpt.tmp").write_bytes(b"x" * 100)  # as a kill during a save would leave
    res = run_train([*args, f"resume={run}"], tmp_path, timeout=120)  # space freed: resume, no hand cleaning
    assert res.returncode == 0, output(res)
    assert "removed last.ckpt.tmp (100 bytes)" in res.stderr + res.stdout
    assert _steps(run) == list(range(1, 17)) and _state(run)["state"] == "finished"


def test_resume_with_only_an_unfinished_save_says_what_it_found(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt.tmp").write_bytes(b"x" * 10)
    res = run_train([*TINY, f"resume={run}"], tmp_path, timeout=60)
    assert res.returncode == 1
    assert "only last.ckpt.tmp (10 bytes): a save that never finished" in res.stderr, output(res)
    assert not (run / "checkpoints" / "last.ckpt.tmp").exists()


# ------------------------------------------------------------------------------------------ no silent success


def test_every_iteration_skipped_fails(tmp_path):
    run = tmp_path / "run"
    res = run_train([*TINY, "model.optimizer.lr=1e30", "model.nonfinite.policy=skip", "model.nonfinite.max_skips=100",
                     f"hydra.run.dir={run}"], tmp_path, timeout=120)
    assert res.returncode == 1, output(res)
    assert "NothingTrainedError: no optimizer update was applied: all 8 training iteration(s) were skipped" \
           in res.stderr, output(res)
    assert "cutlight run FAILED (trained nothing usable)" in res.stdout
    assert _state(run)["state"] == "failed"


# ------------------------------------------------------------------------------------------ before the first step


def _folder(root: Path, n_train: int = 4, n_test: int = 1) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("trainA", n_train), ("trainB", n_train), ("testA", n_test), ("testB", n_test)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / split / f"{i}.png")
    return root


@pytest.mark.parametrize("args, wanted", [
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is invalid"),
    (["seed=abc"], "seed='abc' is invalid: expected an integer"),
    (["trainer.devices=3"], "trainer.devices=3 is invalid: expected 1 with trainer.accelerator=cpu and the default "
                            "strategy"),
    (["data.input_nc=1"], "data.output_nc=3 is invalid: expected data.output_nc == data.input_nc (here 1)"),
    (["data=folder", "data.root={folder}"], "the val split has 1 source image(s) ({folder}/testA) and 1 target "
                                            "image(s) ({folder}/testB): FID/KID need at least 2"),
    (["data=folder", "data.root={folder}", "data.max_val_images=1", "data.val_dir_a={folder}/trainA",
      "data.val_dir_b={folder}/trainB"], "raise data.max_val_images (now 1)"),
])
def test_refused_before_the_first_step(tmp_path, args, wanted):
    folder = _folder(tmp_path / "data")
    args = [a.format(folder=folder) for a in args]
    wanted = wanted.format(folder=folder)
    run = tmp_path / "run"
    base = ["debug=tiny", "+trainer.enable_progress_bar=false"] if "data=folder" in args else TINY
    res = run_train([*base, *args, f"hydra.run.dir={run}"], tmp_path, timeout=120)
    assert res.returncode == 1, output(res)
    assert wanted in res.stderr, output(res)
    assert not _steps(run) and not list(run.rglob("*.ckpt"))  # nothing trained
    assert _state(run)["state"] == "failed"


def test_training_problem_names_each_way_of_training_nothing():
    from cutlight.lightning.reliability import NonFiniteGuard, training_problem

    guard = NonFiniteGuard(policy="skip")
    assert training_problem(guard, resumed=False).startswith("no training step ran")
    assert training_problem(guard, resumed=True) is None  # a finished run resumed: nothing left to train
    guard.checked, guard.applied = 5, 0
    assert training_problem(guard, resumed=False).startswith("no optimizer update was applied: all 5")
    guard.applied, guard.consecutive, guard.skipped = 3, 2, 2
    assert training_problem(guard, resumed=False).startswith("the run ended skipping: its last 2")
    guard.consecutive = 0
    assert training_problem(guard, resumed=False) is None


@pytest.mark.parametrize("at_batch", [1, 2])  # batch 2 of 3: mid-epoch; 3 of 3: the epoch's last (saved at its end)
def test_interrupt_in_process_saves_the_step_it_stops_at(tmp_path, at_batch):
    import pytorch_lightning as pl

    from cutlight.lightning.interrupt import GracefulInterrupt, TrainingInterrupted
    from cutlight.lightning.resume import AtomicCheckpoint
    from helpers import tiny_data, tiny_module, tiny_trainer

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx == at_batch and trainer.current_epoch == 0:
                os.kill(os.getpid(), signal.SIGINT)

    interrupt = GracefulInterrupt()
    ckpt = AtomicCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True, save_top_k=0)
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=3, limit_val_batches=0,
                           enable_checkpointing=True, callbacks=[Kill(), ckpt, interrupt])
    module = tiny_module(val_metrics=False, n_epochs=2, n_epochs_decay=1)
    before = signal.getsignal(signal.SIGINT)  # Python's default_int_handler; SIG_IGN in a pytest-xdist worker
    interrupt.install()
    try:
        with pytest.raises(TrainingInterrupted) as info:
            trainer.fit(module, datamodule=tiny_data(tmp_path))
    finally:
        interrupt.uninstall()
    assert info.value.step == at_batch + 1 and info.value.exit_code == 130
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert info.value.checkpoint == str(tmp_path / "ckpt" / "last.ckpt")
    assert saved["global_step"] == 2 * (at_batch + 1)
    if at_batch == 2:  # saved after the epoch's end: the schedule stepped once
        assert saved["lr_schedulers"][0]["last_epoch"] == 1 and saved["epoch"] == 0
    assert signal.getsignal(signal.SIGINT) is before  # the handler that was there is back
