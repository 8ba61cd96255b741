"""Non-finite values, bad configuration values and bad checkpoint files: each fails early, clearly, and never
leaves non-finite weights behind."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cutlight.checkpoint import CheckpointError, read_checkpoint
from cutlight.checks import ConfigValueError
from cutlight.lightning.reliability import NonFiniteError, NonFiniteGuard
from cutlight.lightning.resume import AtomicCheckpoint, find_last_checkpoint, read_resume_checkpoint
from cutlight.networks import sampler as sampler_module
from helpers import K_OP, TINY_ARGS, assert_scaled_close, run_entrypoint, tiny_data, tiny_module, tiny_trainer


def old_l2_normalize(x, eps=1e-7):  # the formula before the fix: NaN gradient on an all-zero row
    return x / (x.pow(2).sum(-1, keepdim=True).sqrt() + eps)


# ---------------------------------------------------------------------------------------- patch normalisation
@pytest.mark.numeric
def test_l2_normalize_zero_row_has_finite_gradient_and_same_values():
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    x[1, 2] = 0
    x.requires_grad_(True)
    y, ref = sampler_module.l2_normalize(x), old_l2_normalize(x)
    assert torch.equal(y, ref)  # the same values, bit for bit
    g = torch.randn_like(y)
    (got,) = torch.autograd.grad(y, x, g)
    (old,) = torch.autograd.grad(ref, x, g)
    assert torch.isnan(old[1, 2]).all() and torch.isfinite(got).all()
    keep = torch.ones(3, 5, dtype=torch.bool)
    keep[1, 2] = False
    assert torch.equal(got[keep], old[keep])  # identical gradients elsewhere
    assert_scaled_close(got[1, 2], g[1, 2] / 1e-7, K_OP)  # d(x / eps)/dx at the zero row
    assert torch.autograd.gradcheck(sampler_module.l2_normalize, (torch.randn(4, 6, dtype=torch.float64,
                                                                                 requires_grad=True),))


def _dead_head_module():
    """The tiny CUT module with one MLP head whose ReLU is switched off everywhere: its rows are exactly zero
    (the situation that turned loss_nce into NaN with lr=0 and the debug=tiny heads)."""
    torch.manual_seed(0)
    module = tiny_module(val_metrics=False)
    with torch.no_grad():
        module.sampler.mlp_1[0].bias.fill_(-1e3)
    return module


@pytest.mark.parametrize("fixed", [True, False])
def test_lr_zero_with_zero_head_rows_stays_finite(fixed, monkeypatch):
    if not fixed:  # the test can fail: with the old formula the same run is NaN at once
        monkeypatch.setattr(sampler_module, "l2_normalize", old_l2_normalize)
    module = _dead_head_module()
    opt_g = torch.optim.Adam([*module.generator.parameters(), *module.sampler.parameters()], lr=0.0)
    opt_d = torch.optim.Adam(module.discriminator.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(1)
    finite = []
    for _ in range(6):
        a, b = (torch.rand(1, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
        losses = module.objective.iteration(module.nets, {"A": a, "B": b},
                                            {"generator": opt_g, "discriminator": opt_d})
        finite.append(all(math.isfinite(float(v)) for v in losses.values())
                      and all(torch.isfinite(p).all() for p in module.parameters()))
        if not finite[-1]:
            break
    assert finite == ([True] * 6 if fixed else [False])


# ---------------------------------------------------------------------------------------------- the guard
def _param_with_grad(value: float, fused: bool):
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.Adam([p], lr=0.1, fused=fused)
    return p, opt


@pytest.mark.parametrize("fused", [True, False])
def test_guard_skips_a_nonfinite_update_on_fused_and_plain_optimizers(fused):
    guard = NonFiniteGuard(policy="skip", max_skips=2)
    p, opt = _param_with_grad(1.0, fused)
    guard.attach([opt], ["generator-side"])
    p.grad = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    guard.note_loss(torch.tensor(3.0))
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4)) and not hasattr(opt, "found_inf")
    assert not opt.state or float(opt.state[p]["step"]) == 0  # Adam's state untouched
    assert guard.after_iteration({"loss_g": torch.tensor(3.0)}, "step 0", "none") is False
    p.grad = torch.ones(4)
    guard.note_loss(torch.tensor(float("inf")))  # a non-finite loss alone skips the update too
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4))
    assert guard.after_iteration({"loss_g": torch.tensor(float("inf"))}, "step 1", "none") is False
    p.grad = torch.ones(4)
    guard.note_loss(torch.tensor(2.0))
    opt.step()
    assert not torch.equal(p.detach(), torch.ones(4)) and float(opt.state[p]["step"]) == 1
    assert guard.after_iteration({"loss_g": torch.tensor(2.0)}, "step 2", "none") is True
    assert (guard.consecutive, guard.skipped) == (0, 2)
    for step in range(3):  # three bad iterations in a row > max_skips=2: stop
        p.grad = torch.full((4,), float("nan"))
        opt.step()
        if step < 2:
            assert guard.after_iteration({"loss_g": torch.tensor(1.0)}, f"step {3 + step}", "none") is False
    with pytest.raises(NonFiniteError, match="3 bad iterations in a row, more than model.nonfinite.max_skips=2"):
        guard.after_iteration({"loss_g": torch.tensor(1.0)}, "step 5", "none")


class InjectNaN(pl.Callback):
    """Makes the generator's PatchNCE loss NaN at the given batches (through the objective, as a blow-up would)."""

    def __init__(self, at: set[int]):
        self.at = at

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        objective = module.objective
        original = type(objective).generator_losses
        step = trainer.fit_loop.epoch_loop._batches_that_stepped

        def poisoned(self_, *args, **kwargs):
            terms = original(self_, *args, **kwargs)
            if step in self.at:
                terms["loss_nce"] = terms["loss_nce"] * float("nan")
                terms["loss_g"] = terms["loss_g"] + terms["loss_nce"]
            return terms

        objective.generator_losses = poisoned.__get__(objective)


def test_nonfinite_loss_stops_with_term_step_and_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    ckpt = AtomicCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0, last_every_n_steps=1)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=5, limit_val_batches=0,
                           enable_checkpointing=True, callbacks=[ckpt, InjectNaN({3})])
    model = tiny_module(val_metrics=False)
    with pytest.raises(NonFiniteError) as info:
        trainer.fit(model, datamodule=tiny_data(tmp_path))
    message = str(info.value)
    assert "non-finite loss loss_nce=nan" in message and "at training step 4 (epoch 0, batch 3)" in message
    assert f"Last good checkpoint: '{tmp_path / 'ckpt' / 'last.ckpt'}'" in message
    assert "generator-side update (skipped" in message
    saved = read_resume_checkpoint(tmp_path / "ckpt" / "last.ckpt")  # finite, or this raises
    assert saved["global_step"] == 6  # after step 2: the state before the bad iteration
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all(), name
        if name.startswith("generator."):  # the bad generator update was never applied
            assert torch.equal(p.detach(), saved["state_dict"][name]), name


def test_skip_policy_drops_isolated_bad_iterations_and_logs_the_count(tmp_path):
    import csv

    from cutlight.cli.train import _summary
    from cutlight.lightning.resume import AppendingCSVLogger

    torch.manual_seed(0)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=5, limit_val_batches=0, log_every_n_steps=1,
                           callbacks=[InjectNaN({1, 3, 4})], logger=AppendingCSVLogger(tmp_path, name="csv"))
    model = tiny_module(val_metrics=False, nonfinite={"policy": "skip", "max_skips": 2})
    trainer.fit(model, datamodule=tiny_data(tmp_path, num_train=8))
    assert model.guard.skipped == 3 and float(trainer.callback_metrics["train/nonfinite_skips"]) == 3
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(float(trainer.callback_metrics["train/loss_nce"]))
    with open(next(tmp_path.rglob("metrics.csv")), newline="") as f:  # one row per batch, at its step
        rows = list(csv.DictReader(f))
    assert [int(float(r["step"])) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["train/nonfinite_skips"] for r in rows][:2] == ["", "1.0"] and rows[-1]["train/nonfinite_skips"] == "3.0"
    text = _summary(trainer, tmp_path, {}, {})  # the end-of-run summary says so, and that it ended diverging
    assert "non-finite iterations skipped: 3 (train/nonfinite_skips); the last 2 in a row" in text


def test_skip_policy_stops_after_max_skips_in_a_row_with_the_right_hint(tmp_path):
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=5, limit_val_batches=0,
                           callbacks=[InjectNaN({1, 2})])
    model = tiny_module(val_metrics=False, nonfinite={"policy": "skip", "max_skips": 1})
    with pytest.raises(NonFiniteError, match="more than model.nonfinite.max_skips=1") as info:
        trainer.fit(model, datamodule=tiny_data(tmp_path, num_train=8))
    assert "raise model.nonfinite.max_skips" in str(info.value) and "policy=skip" not in str(info.value)


def test_checkpoint_refuses_nonfinite_weights(tmp_path):
    torch.manual_seed(0)
    ckpt = AtomicCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)
    trainer = tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt])
    model = tiny_module(val_metrics=False)
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    before = (tmp_path / "ckpt" / "last.ckpt").read_bytes()
    with torch.no_grad():
        model.generator.model[1].weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match="refusing to write checkpoint .*generator.model.1.weight"):
        ckpt._save_last_checkpoint(trainer, ckpt._monitor_candidates(trainer))
    assert (tmp_path / "ckpt" / "last.ckpt").read_bytes() == before
    from cutlight import load_generator

    torch.save({"state_dict": {f"generator.{k}": v for k, v in model.generator.state_dict().items()},
                "hyper_parameters": {"generator": dict(model.hparams.generator)}}, tmp_path / "nan.ckpt")
    with pytest.raises(ValueError, match="holds non-finite weights .*model.1.weight.*diverged"):
        load_generator(tmp_path / "nan.ckpt")


def test_nonfinite_generator_gets_no_validation_numbers(tmp_path, caplog):
    from helpers import TINY_EXTRACTOR

    torch.manual_seed(0)
    model = tiny_module(val_metrics={"extractor": TINY_EXTRACTOR, "kid_subset_size": 2})
    with torch.no_grad():
        model.generator.model[1].weight.fill_(float("nan"))
    trainer = tiny_trainer(tmp_path)
    with caplog.at_level("ERROR"):
        trainer.validate(model, datamodule=tiny_data(tmp_path), verbose=False)
    assert not [k for k in trainer.callback_metrics if k.startswith("val/")]
    assert "non-finite (NaN or infinite) images in validation" in caplog.text


def test_translating_with_a_generator_that_overflows_fails_instead_of_writing_black_images(tmp_path):
    from PIL import Image

    from cutlight.inference import translate_folder
    from cutlight.networks import ResnetGenerator

    torch.manual_seed(0)
    generator = ResnetGenerator(ngf=8, n_blocks=1).eval()
    with torch.no_grad():  # finite weights (a diverged run's last finite state) whose output is NaN
        for p in generator.parameters():
            p.copy_(torch.sign(torch.randn_like(p)) * 1e30)
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "x.png")
    report = translate_folder(generator, tmp_path / "x.png", tmp_path / "out", progress=False, workers=0)
    assert not report.written and not list((tmp_path / "out").glob("*.png"))
    assert [p.name for p, _ in report.failed] == ["x.png"]
    assert "the generator produced non-finite values (NaN or infinity)" in report.failed[0][1]


@pytest.mark.slow
def test_entrypoint_huge_lr_exits_nonzero_naming_term_and_step(tmp_path):
    run = tmp_path / "run"
    res = run_entrypoint([*TINY_ARGS, "model.optimizer.lr=1e30", "callbacks.checkpoint.last_every_n_steps=1",
                          "model.val_metrics=false", f"hydra.run.dir={run}"], tmp_path)
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    err = error_line(res.stderr)
    assert err.startswith("cutlight.lightning.reliability.NonFiniteError: non-finite loss"), err
    assert "at training step 1" in err and "loss_g=nan" in err and "Training stopped" in err, err
    for path in run.rglob("*.ckpt"):  # whatever was written is finite
        read_resume_checkpoint(path)
    assert json.loads((run / "summary.json").read_text())["state"] == "failed"


def error_line(stderr: str) -> str:
    """The exception line Hydra prints for a failed job; the traceback above it is one frame (``train.main``),
    not Lightning's loops."""
    lines = stderr.strip().splitlines()
    assert sum(line.startswith("  File ") for line in lines) == 1, stderr[-3000:]
    return next(line for line in reversed(lines) if line.startswith("cutlight."))


# ------------------------------------------------------------------------------------ configuration values
def compose(overrides, tmp_path):
    from test_config import compose_cfg

    return compose_cfg([*TINY_ARGS, f"data.cache_dir={tmp_path / 'cache'}", "model.val_metrics=false",
                        *overrides], tmp_path)


BAD_VALUES = [
    ("data.crop_size=63", "data.crop_size=63 is invalid: expected a multiple of 4 of at least 24", "build"),  # D too
    ("data.crop_size=abc", "data.crop_size='abc' is invalid: expected an integer >= 1", "build"),
    ("data.batch_size=0", "data.batch_size=0 is invalid: expected an integer >= 1", "build"),
    ("data.preprocess=resize_and_crop data.load_size=16",
     "data.load_size=16 is invalid: expected load_size >= crop_size (32)", "build"),
    ("data.verify=quick", "unknown data.verify 'quick'; expected one of header, full, none", "build"),
    ("model.optimizer.lr=abc", "model.optimizer.lr='abc' is invalid: expected a finite number > 0", "build"),
    ("model.optimizer.lr=0", "model.optimizer.lr=0 is invalid: expected a finite number > 0", "build"),
    ("model.optimizer.lr=-1e-4", "model.optimizer.lr=-0.0001 is invalid", "build"),
    ("model.optimizer.betas=[0.5,1.5]", "model.optimizer.betas[1]=1.5 is invalid: expected a finite number >= 0 "
     "and < 1", "build"),
    ("+model.optimizer.momentum=0.9", "model.optimizer.momentum=0.9 is invalid: expected the name of a "
     "torch.optim.Adam keyword", "build"),
    ("model.objective.num_patches=abc", "model.objective.num_patches='abc' is invalid: expected an integer >= 1",
     "build"),
    ("model.objective.num_patches=0", "model.objective.num_patches=0 is invalid", "build"),
    ("model.objective.nce_temperature=0", "model.objective.nce_temperature=0 is invalid: expected a finite number > 0",
     "build"),
    ("model.objective.lambda_nce=-1", "model.objective.lambda_nce=-1 is invalid: expected a finite number >= 0",
     "build"),
    ("model.n_epochs=abc", "model.n_epochs='abc' is invalid: expected an integer >= 0", "build"),
    ("model.generator.ngf=abc", "model.generator.ngf='abc' is invalid: expected an integer >= 1", "build"),
    ("model.discriminator.n_layers=0", "model.discriminator.n_layers=0 is invalid", "build"),
    ("model.nonfinite.policy=ignore", "unknown model.nonfinite.policy 'ignore'; expected one of stop, skip", "build"),
    ("model.nonfinite.max_skips=0", "model.nonfinite.max_skips=0 is invalid: expected an integer >= 1", "build"),
]


@pytest.mark.parametrize("override,message,when", BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_bad_config_value_fails_before_training_naming_its_key(override, message, when, tmp_path, monkeypatch):
    from cutlight.cli import train as train_module

    steps = []
    monkeypatch.setattr(train_module.pl.LightningModule, "on_train_batch_start",
                        lambda *a: steps.append(1), raising=False)
    cfg = compose(override.split(), tmp_path)
    with pytest.raises(ConfigValueError) as info:
        train_module.train(cfg)
    assert str(info.value).startswith(message), str(info.value)
    assert steps == []
    if when == "build":  # before the trainer even started: no run artefacts but the config
        assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_mandatory_value_is_reported_by_its_message_alone(tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    from cutlight.cli.train import _expected_errors, train
    from test_config import compose_cfg

    cfg = compose_cfg(["debug=tiny", "data=folder", "model.val_metrics=false"], tmp_path)  # no data.root
    with pytest.raises(MissingMandatoryValue, match="data.root") as info:
        train(cfg)
    assert isinstance(info.value, _expected_errors())  # one line from the entrypoint, no traceback


@pytest.mark.slow
def test_entrypoint_bad_value_is_one_clear_line(tmp_path):
    res = run_entrypoint([*TINY_ARGS, "model.objective.num_patches=abc", f"hydra.run.dir={tmp_path / 'run'}"],
                         tmp_path)
    assert res.returncode == 1
    assert error_line(res.stderr) == ("cutlight.checks.ConfigValueError: model.objective.num_patches='abc' is "
                                      "invalid: expected an integer >= 1")


# -------------------------------------------------------------------------------------- checkpoint files
class Foreign:  # a pickled object that weights_only loading refuses
    pass


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    ckpt = AtomicCheckpoint(dirpath=tmp / "ckpt", save_last=True, save_top_k=0)
    trainer = tiny_trainer(tmp, max_steps=1, limit_val_batches=0, enable_checkpointing=True, callbacks=[ckpt])
    trainer.fit(tiny_module(val_metrics=False), datamodule=tiny_data(tmp))
    return tmp / "ckpt" / "last.ckpt"


def test_corrupt_checkpoints_are_named_with_the_problem(real_checkpoint, tmp_path):
    data = real_checkpoint.read_bytes()
    cases = {
        "empty.ckpt": (b"", "is empty (0 bytes)"),
        "truncated.ckpt": (data[: len(data) // 2], "is truncated: an incomplete zip archive"),
        "text.ckpt": (b"not a checkpoint at all", "is not a PyTorch checkpoint: it starts with b'not a ch'"),
        "pickle.ckpt": (pickle.dumps({"state_dict": Foreign()}, protocol=2),
                        "holds more than tensors and plain containers, which cutlight never unpickles"),
        # start like a pickle, then garbage: not an object, and not a bare IndexError from the unpickler
        "noise.ckpt": (b"\x80\x02" + b"\xff" * 64,
                       "cannot be read: its pickle data holds an instruction that torch.save never writes"),
        "noise2.ckpt": (b"\x80" + bytes(range(45, 256)), "cannot be read (IndexError: pop from empty list"),
    }
    for name, (content, fragment) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CheckpointError, match=re.escape(fragment)) as info:
            read_checkpoint(path)
        assert str(path) in str(info.value)
        assert "weights_only=False" not in str(info.value)  # no hint to load untrusted pickles
        from cutlight import load_generator

        with pytest.raises(ValueError, match=re.escape(fragment)):
            load_generator(path)
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        read_checkpoint(tmp_path / "missing.ckpt")
    weights = tmp_path / "weights.ckpt"
    torch.save({"state_dict": torch.load(real_checkpoint, weights_only=True)["state_dict"]}, weights)
    with pytest.raises(CheckpointError, match="holds weights only .* not resume training"):
        read_resume_checkpoint(weights)


def test_checkpoint_of_another_architecture_names_the_keys(real_checkpoint, tmp_path):
    model = tiny_module(val_metrics=False, generator={"ngf": 4, "n_blocks": 1})
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    with pytest.raises(CheckpointError, match=r"checkpoint '.*last.ckpt' was written for another architecture") as info:
        trainer.fit(model, datamodule=tiny_data(tmp_path), ckpt_path=str(real_checkpoint))
    assert "different shapes: generator.model.1.weight (8, 3, 7, 7) (the model has (4, 3, 7, 7))" in str(info.value)


def test_entrypoint_refuses_another_architecture_before_touching_the_run_folder(real_checkpoint, tmp_path):
    from cutlight.cli.train import train

    cfg = compose(["model.generator.ngf=4", f"ckpt_path={real_checkpoint}"], tmp_path)
    with pytest.raises(CheckpointError, match="was written for another architecture"):
        train(cfg)
    out = tmp_path / "run"  # not linked to the checkpoint's run, no config written: nothing to clean up
    assert not (out / "resumed_from").is_symlink() and not (out / "config_resolved.yaml").exists()


def test_find_last_checkpoint_takes_the_newest_readable_one(real_checkpoint, tmp_path):
    import os
    import shutil

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(real_checkpoint, folder / "epoch000.ckpt")
    shutil.copy(real_checkpoint, folder / "last.ckpt")
    (folder / "broken.ckpt").write_bytes(b"PK\x03\x04garbage")
    now = Path(folder / "last.ckpt").stat().st_mtime
    os.utime(folder / "epoch000.ckpt", (now - 100, now - 100))
    os.utime(folder / "broken.ckpt", (now + 100, now + 100))  # the newest, but unreadable: skipped
    path, ckpt = find_last_checkpoint(folder)
    assert path.name == "last.ckpt" and ckpt["global_step"] == 2
    assert find_last_checkpoint(tmp_path / "nothing") is None
