"""A new user's first hour (issue 27): the README's own-data and debug commands on a CPU-only machine, what a
missing optional package says, run folders of path-like values, the resume message and record, and the summary
lines of a run that validated nothing."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from cutlight.checks import ConfigValueError
from cutlight.cli.run_name import MAX_LENGTH, run_name
from helpers import TINY_ARGS, run_entrypoint

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


def cfg_of(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_module("cutlight.conf", version_base="1.3"):
        return compose("train", overrides=overrides)


def folder_data(root: Path, n_train: int = 4, n_test: int = 2) -> Path:
    for sub, n in (("trainA", n_train), ("trainB", n_train), ("testA", n_test), ("testB", n_test)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 40), (60 * i % 256, 100 if "A" in sub else 20, 30)).save(root / sub / f"{i}.png")
    return root


# ------------------------------------------------------------------ 27.2: debug=tiny on a CPU, with a validation
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_debug_tiny_trains_on_the_cpu_and_validates_every_epoch(experiment):
    cfg = cfg_of([f"experiment={experiment}", "debug=tiny"])
    assert cfg.trainer.accelerator == "cpu" and "precision" not in cfg.trainer or cfg.trainer.precision != "bf16-mixed"
    assert cfg.trainer.check_val_every_n_epoch == 1 and cfg.trainer.limit_val_batches == 1.0
    assert cfg.model.n_epochs + cfg.model.n_epochs_decay >= 1  # at least one epoch, so at least one validation


def test_trainer_on_the_command_line_wins_over_debug_tiny():
    assert cfg_of(["debug=tiny", "trainer=gpu"]).trainer.accelerator == "gpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_gpu_experiment_without_cuda_stops_before_training_naming_the_key(tmp_path):
    data = folder_data(tmp_path / "photos")
    res = run_entrypoint(["experiment=horse2zebra", f"data.root={data}"], tmp_path)
    assert res.returncode == 1
    assert "trainer.accelerator='gpu' is invalid: expected a device this machine has: no CUDA GPU found. Add " \
           "trainer=cpu" in res.stderr, res.stderr[-2000:]
    assert "debug=tiny" in res.stderr and "No supported gpu backend" not in res.stderr
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.slow
def test_readme_own_data_debug_command_validates_and_keeps_a_best_fid_checkpoint(tmp_path):
    """``experiment=horse2zebra data.root=... debug=tiny``, exactly as the README writes it, on a CPU-only
    machine: it failed with 'No supported gpu backend found!', and with trainer=cpu never validated."""
    data = folder_data(tmp_path / "photos")
    res = run_entrypoint(["experiment=horse2zebra", f"data.root={data}", "debug=tiny", "hydra.run.dir=run",
                          "+trainer.enable_progress_bar=false"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["state"] == "finished" and "val/fid" in summary["metrics"]["final"]
    assert list((tmp_path / "run" / "checkpoints").glob("best-fid-*.ckpt"))
    assert "FID/KID above: on Inception's 64-d features (model.val_metrics.feature=64)" in res.stdout


# ------------------------------------------------------------------ 27.4: logger=tensorboard without tensorboard
def test_tensorboard_logger_without_tensorboard_names_the_extra(monkeypatch):
    import importlib.util

    from cutlight.cli.train import _check_logger_packages

    cfg = cfg_of(["logger=tensorboard"])
    _check_logger_packages(cfg)  # installed here (dev extra): nothing to say
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else find_spec(name, *a))
    with pytest.raises(ConfigValueError, match=r"pip install 'cutlight\[tensorboard\]'"):
        _check_logger_packages(cfg)
    _check_logger_packages(cfg_of([]))  # logger=csv needs nothing


def test_tensorboard_extra_is_declared():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert any(d.startswith("tensorboard") for d in extras["tensorboard"])
    assert any(d.startswith("tensorboard") for d in extras["dev"])


# ------------------------------------------------------------------ 27.5: path-like values in run names
@pytest.mark.parametrize("dirname, expected", [
    ("data.image_a=photos/china.jpg,data.image_b=../x/y.png", "data.image_a=china.jpg,data.image_b=y.png"),
    ("data.root=/data/h2z/,seed=1", "data.root=h2z,seed=1"),
    ("debug=tiny,objective=fastcut", "debug=tiny,objective=fastcut"),
    ("logger.wandb.tags=[a/b,c]", "logger.wandb.tags=[b,c]"),
    ("model/generator=x", "model.generator=x"),
    ("", ""),
])
def test_run_name_keeps_one_folder_level(dirname, expected):
    assert run_name(dirname) == expected


def test_run_name_of_long_overrides_is_bounded_and_distinct():
    a, b = run_name("x=" + "a" * 300), run_name("x=" + "a" * 299 + "b")
    assert len(a) == len(b) == MAX_LENGTH and a != b


def test_image_paths_do_not_nest_the_run_folder(tmp_path):
    """``data.image_a=photos/china.jpg`` made ``outputs/<date>/data.image_a=photos/china.jpg,.../<time>``. The run
    stops at once (a bad value), after Hydra made its folder."""
    (tmp_path / "photos").mkdir()
    for name in ("china.jpg", "paint.jpg"):
        Image.new("RGB", (40, 40)).save(tmp_path / "photos" / name)
    res = run_entrypoint(["data=single_image", "data.image_a=photos/china.jpg", "data.image_b=photos/paint.jpg",
                          "model.optimizer.lr=abc"], tmp_path)
    assert res.returncode == 1 and "model.optimizer.lr='abc' is invalid" in res.stderr, res.stderr[-2000:]
    (day,) = (tmp_path / "outputs").iterdir()
    (named,) = day.iterdir()
    assert named.name == "data.image_a=china.jpg,data.image_b=paint.jpg,data=single_image,model.optimizer.lr=abc"
    (run,) = named.iterdir()
    assert (run / ".hydra").is_dir()


# ------------------------------------------------------------------ 27.8: resuming counts batches, keeps started
@pytest.mark.slow
def test_resume_message_counts_training_batches_and_summary_keeps_started(tmp_path):
    run = tmp_path / "run"
    args = [*TINY_ARGS, "+trainer.enable_progress_bar=false", "callbacks.checkpoint.last_every_n_steps=1",
            "model.val_metrics.extractor={_target_:helpers.TinyFeatureExtractor,num_features:16}",
            "model.val_metrics.kid_subset_size=2"]
    res = run_entrypoint([*args, "+trainer.max_steps=6", f"hydra.run.dir={run}"], tmp_path)  # 3 batches
    assert res.returncode == 0, res.stderr[-3000:]
    first = json.loads((run / "summary.json").read_text())
    res = run_entrypoint([*args, f"resume={run}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming from {run / 'checkpoints' / 'last.ckpt'} (epoch 0, step 3)" in (run / "train.log").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["started"] == first["started"] and len(summary["resumed"]) == 1
    assert summary["state"] == "finished"


# ------------------------------------------------------------------ 27.14: a run that validated nothing
def test_builtin_score_summary_without_a_validation_after_the_start():
    from cutlight.lightning.callbacks import TranslationScore

    cb = TranslationScore(every_n_steps=100)
    cb.history = [{"content_iou": 0.151, "style": 0.5, "score": 0.075}]
    ((label, text),) = cb.summary().items()
    assert label == "built-in score, validation images, before training" and "->" not in text
    assert text.startswith("content_iou 0.151, style 0.500, score 0.075; none after it (no validation ran")
    cb.history.append({"content_iou": 0.8, "style": 0.7, "score": 0.56})
    assert "content_iou 0.151 -> 0.800" in cb.summary()["built-in score, validation images (before training -> end)"]


def test_tested_weights_named_when_the_monitoring_checkpoint_kept_nothing(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from cutlight.cli.train import _test_checkpoint

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/score", mode="max")
    ckpt, words = _test_checkpoint(SimpleNamespace(callbacks=[best]))
    assert ckpt is None and "no checkpoint monitors" not in words
    assert words == ("final weights (the checkpoint callback monitoring val/score kept none: val/score was never "
                     "computed during training)")
    ckpt, words = _test_checkpoint(SimpleNamespace(callbacks=[]))
    assert ckpt is None and "no checkpoint monitors a val/ metric" in words


# ------------------------------------------------------------------ 27.9: model=cyclegan alone brings its objective
def test_model_cyclegan_alone_brings_its_objective(tmp_path):
    from hydra.utils import instantiate

    from cutlight import CycleGANModule
    from cutlight.objectives import CycleGANObjective

    cfg = cfg_of(["model=cyclegan", "debug=tiny", f"data.cache_dir={tmp_path}"])
    module = instantiate(cfg.model)
    assert isinstance(module, CycleGANModule) and isinstance(module.objective, CycleGANObjective)
