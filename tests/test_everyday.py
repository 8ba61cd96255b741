"""Everyday use: the test stage and its results table, steps counted in batches everywhere, the data direction,
prediction on several processes, grayscale, and quiet entrypoint runs (issues 14 and 16)."""

from __future__ import annotations

import csv
import json
import re
import socket
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import CSVLogger

from cutlight.data import UnpairedDataModule
from cutlight.data.builtin import generate_image
from cutlight.lightning.callbacks import TranslationScore, TranslationWriter
from helpers import TINY_ARGS, TinyFeatureExtractor, run_entrypoint, tiny_data, tiny_module, tiny_trainer

NOISE = re.compile(r"warn|deprecat|💡|tip:", re.IGNORECASE)


def noisy_lines(stderr: str) -> list[str]:
    """Lines of a run's stderr that are warnings or tips (Lightning's plain info lines are not)."""
    return [line for line in stderr.splitlines() if NOISE.search(line)]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def fid(reals: torch.Tensor, fakes: torch.Tensor) -> float:
    from cutlight.metrics import Evaluator

    metric = Evaluator(kid=False, extractor=TinyFeatureExtractor(16))
    metric.update(reals, real=True)
    metric.update(fakes, real=False)
    return float(metric.compute()["fid"])


# ------------------------------------------------------------------------------ same defaults
def test_python_defaults_are_the_hydra_defaults():
    """``CUTModule()`` and the DataModules without arguments are the Hydra defaults (the YAML only spells them
    out). The one intended difference: the YAML's ``val_metrics`` dict requires the Inception weights, while
    ``val_metrics=True`` warns once and validates without FID/KID when they are missing."""
    import inspect

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from cutlight import (
        BuiltinDataModule,
        CUTModule,
        CUTObjective,
        PatchDiscriminator,
        PatchSampler,
        ResnetGenerator,
    )
    from cutlight.lightning.base import DEFAULT_METRICS
    from cutlight.optim import ADAM_DEFAULTS
    from helpers import ROOT

    def defaults(cls) -> dict:
        plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
        return {k: plain(p.default) for k, p in inspect.signature(cls).parameters.items()}

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        builtin, folder = compose("train"), compose("train", overrides=["data=folder", "data.root=/x"])
    model = OmegaConf.to_container(builtin.model, resolve=True)
    for key, cls in (("generator", ResnetGenerator), ("discriminator", PatchDiscriminator),
                     ("sampler", PatchSampler), ("objective", CUTObjective)):
        expected = defaults(cls)
        assert {k: v for k, v in model[key].items() if k != "_target_"} == {k: expected[k] for k in model[key]
                                                                              if k != "_target_"}, key
    assert model["optimizer"] == {k: list(v) if isinstance(v, tuple) else v for k, v in ADAM_DEFAULTS.items()}
    assert model["val_metrics"] == DEFAULT_METRICS and defaults(CUTModule)["val_metrics"] is True
    assert {k: model[k] for k in ("n_epochs", "n_epochs_decay", "channels_last", "compile")} == {
        k: defaults(CUTModule)[k] for k in ("n_epochs", "n_epochs_decay", "channels_last", "compile")}
    for cfg, cls in ((builtin, BuiltinDataModule), (folder, UnpairedDataModule)):
        data = {k: v for k, v in OmegaConf.to_container(cfg.data).items() if k not in ("_target_", "root")}
        assert data == {k: defaults(cls)[k] for k in data}, cls.__name__


# ------------------------------------------------------------------------------ test stage and steps
def test_test_stage_scores_writes_a_table_and_steps_count_batches(tmp_path):
    model, dm = tiny_module(), tiny_data(tmp_path, num_train=6)  # 6 batches per epoch, 2 epochs (the schedule)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=-1, logger=CSVLogger(tmp_path), log_every_n_steps=1,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[TranslationScore()],
                         default_root_dir=tmp_path)
    trainer.fit(model, datamodule=dm)
    version = tmp_path / "lightning_logs" / "version_0"
    # checkpoint names count batches (Lightning's default name would say step=24: two optimizer steps per batch)
    assert [p.name for p in (version / "checkpoints").iterdir()] == ["epoch=1-step=12.ckpt"]
    rows = read_csv(version / "metrics.csv")
    train = [r for r in rows if r.get("train/loss_nce")]
    val = [r for r in rows if r.get("val/fid")]
    assert [int(r["step"]) for r in train] == list(range(1, 13))  # the k-th batch's losses at step k
    assert [(int(r["step"]), float(r["epoch"])) for r in val] == [(6, 0), (12, 1)]  # FID after 6 and 12 batches
    assert all(r["epoch"] != "" for r in train) and all(r.get("val/score") for r in val)

    (results,) = trainer.test(model, datamodule=dm, verbose=False)  # one result (was one per loader: 27.10)
    assert {"test/fid", "test/kid", "test/kid_std", "test/score", "test/content_iou", "test/style"} <= set(results)
    assert results["test/fid"] == pytest.approx(float(trainer.callback_metrics["test/fid"]))
    assert results["test/fid"] == pytest.approx(float(val[-1]["val/fid"]), rel=1e-5)  # test split = validation's
    best = version / "checkpoints" / "epoch=1-step=12.ckpt"
    trainer.test(model, datamodule=dm, ckpt_path=str(best), verbose=False)
    table = read_csv(version / "test_results.csv")
    assert [r["checkpoint"] for r in table] == ["weights in memory", str(best)]
    assert float(table[0]["test/fid"]) == pytest.approx(results["test/fid"], rel=1e-5)
    markdown = (version / "test_results.md").read_text().splitlines()
    assert markdown[0].startswith("| checkpoint | time | test/") and len(markdown) == 4


# ------------------------------------------------------------------------------ direction
def test_direction_btoa_trains_and_validates_on_swapped_domains(tmp_path):
    torch.manual_seed(0)
    model = tiny_module()
    dm = tiny_data(tmp_path, num_train=4, direction="BtoA")
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, callbacks=[TranslationScore()])
    trainer.fit(model, datamodule=dm)
    assert {p.parent.name for p in dm.train_dataset.paths_a} == {"trainB"}  # the generator learned B -> A
    logged = float(trainer.callback_metrics["val/fid"])
    assert "val/score" not in trainer.callback_metrics  # the built-in score is defined for A -> B only

    assert Path(dm.val_dataset_a.paths[0]).parent.name == "testB"
    sources = torch.stack([dm.val_dataset_a[i]["image"] for i in range(4)])  # domain B's test images
    targets = torch.stack([dm.val_dataset_b[i]["image"] for i in range(4)])  # domain A's
    with torch.no_grad():
        fakes = model.eval()(sources)
    assert logged == pytest.approx(fid(targets, fakes), rel=1e-6)  # FID against the real A images
    # The comparison can fail: the unswapped pairing (reals from B) gives another value.
    assert abs(fid(sources, fakes) - logged) > 1e-3 * logged


def test_channels_of_a_swapped_direction_must_match_the_generator(tmp_path):
    """input_nc / output_nc name the channels of domains A / B and swap with the direction; a generator built for
    the other way round is refused at setup, with the arguments that would fit."""
    from cutlight.data import ensure_builtin_dataset

    root = str(ensure_builtin_dataset(size=32, num_train=4, num_test=4, cache_dir=str(tmp_path / "cache")))
    dm = UnpairedDataModule(root=root, direction="BtoA", input_nc=3, output_nc=1, load_size=32, crop_size=32)
    trainer = tiny_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0)
    with pytest.raises(ValueError, match=r"build it with input_nc=1, output_nc=3"):
        trainer.fit(tiny_module(val_metrics=False), datamodule=dm)


# ------------------------------------------------------------------------------ prediction
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RecordingWriter(TranslationWriter):
    """Also writes what this rank wrote to ``rank<r>.json`` (runs inside the spawned processes)."""

    def __init__(self, output_dir: str, record_dir: str) -> None:
        super().__init__(output_dir)
        self.record_dir = record_dir

    def on_predict_end(self, trainer, pl_module) -> None:
        super().on_predict_end(trainer, pl_module)
        written = [str(dst) for _, dst in self.report.written]
        record = {"written": written, "totals": self.totals, "planned": len(self.report.planned)}
        (Path(self.record_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_predict_on_two_processes_writes_every_image_exactly_once(tmp_path, monkeypatch):
    sizes = [(32, 32), (40, 24), (21, 35), (32, 32), (17, 18)]  # (W, H), odd count: shards of 3 and 2
    for split, domain in (("train", "A"), ("train", "B"), ("test", "B")):
        (tmp_path / "data" / f"{split}{domain}").mkdir(parents=True)
        generate_image(split, domain, 0, 32).save(tmp_path / "data" / f"{split}{domain}" / "0.png")
    inputs = []
    for i, size in enumerate(sizes):
        path = tmp_path / "data" / "testA" / ("sub" if i % 2 else "") / f"img{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_image("test", "A", i, 32).resize(size).save(path)
        inputs.append(path)
    out, record = tmp_path / "translated", tmp_path / "record"
    record.mkdir()
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dm = UnpairedDataModule(root=str(tmp_path / "data"), load_size=32, crop_size=32, num_workers=0)
    trainer = tiny_trainer(tmp_path, devices=2, strategy="ddp_spawn",
                           callbacks=[RecordingWriter(str(out), str(record))])
    trainer.predict(tiny_module(val_metrics=False), datamodule=dm, return_predictions=False)

    ranks = [json.loads((record / f"rank{r}.json").read_text()) for r in range(2)]
    assert sorted(len(r["written"]) for r in ranks) == [2, 3]
    assert not set(ranks[0]["written"]) & set(ranks[1]["written"])  # no image written twice
    expected = {str(out / p.relative_to(tmp_path / "data" / "testA").with_suffix(".png")) for p in inputs}
    assert set(ranks[0]["written"]) | set(ranks[1]["written"]) == expected  # none missed
    assert all(r["totals"] == {"written": 5, "skipped": 0, "failed": 0} and r["planned"] == 5 for r in ranks)
    for src in inputs:
        with Image.open(out / src.relative_to(tmp_path / "data" / "testA").with_suffix(".png")) as img:
            assert img.size == Image.open(src).size and img.mode == "RGB"  # any size in, same size out


# ------------------------------------------------------------------------------ entrypoint runs
@pytest.mark.slow
def test_entrypoint_tiny_is_quiet_names_the_run_and_tests_the_best_fid_checkpoint(tiny_cut_run):
    res, run = tiny_cut_run.res, tiny_cut_run.run
    assert res.returncode == 0 and run is not None, res.stderr[-3000:]
    assert noisy_lines(res.stderr) == [], res.stderr
    # outputs/<date>/<what differs from the defaults>/<time>
    assert run.parent.name == ("callbacks=best_fid,data.num_test=4,data.num_train=8,data.size=32,debug=tiny,"
                               "model.objective.num_patches=16,model.sampler.mlp_dim=16")
    assert re.fullmatch(r"\d\d-\d\d-\d\d", run.name)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "epoch001-step0000008.ckpt" in names and "last.ckpt" in names
    best = [n for n in names if n.startswith("best-fid-")]
    assert best and all(re.fullmatch(r"best-fid-epoch00\d-step000000[48]-fid\d+\.\d\d\.ckpt", n) for n in best)
    assert "test of the best val/fid" in res.stdout
    table = read_csv(run / "test_results.csv")
    assert len(table) == 1 and Path(table[0]["checkpoint"]).name in best
    assert float(table[0]["test/fid"]) > 0 and float(table[0]["test/score"]) >= 0
    log_file = (run / "train.log").read_text()
    assert "cutlight run finished" in log_file and "test results table" in log_file  # the summary, in the log


@pytest.mark.slow
def test_folder_run_grayscale_is_quiet_validates_and_translates(tmp_path):
    from cutlight import translate_folder
    from cutlight.data import ensure_builtin_dataset

    root = ensure_builtin_dataset(size=32, num_train=8, num_test=4, cache_dir=str(tmp_path / "cache"))
    run = tmp_path / "run"
    res = run_entrypoint(["debug=tiny", "data=folder", f"data.root={root}", "data.input_nc=1", "data.output_nc=1",
                          f"hydra.run.dir={run}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert noisy_lines(res.stderr) == [], res.stderr  # no DataLoader worker / pin_memory warnings
    fids = [float(r["val/fid"]) for r in read_csv(run / "csv" / "metrics.csv") if r.get("val/fid")]
    assert len(fids) == 2 and all(0 < f < float("inf") for f in fids)
    report = translate_folder(str(run / "checkpoints" / "last.ckpt"), root / "testA", tmp_path / "out",
                              device="cpu", progress=False)
    assert len(report.written) == 4 and not report.failed
    for _, dst in report.written:
        with Image.open(dst) as img:
            assert img.mode == "L" and img.size == (32, 32)


@pytest.mark.slow
def test_debug_fast_dev_run_writes_no_checkpoint(tmp_path):
    run = tmp_path / "run"
    res = run_entrypoint([*TINY_ARGS, "debug=fast_dev_run", "model=small", f"hydra.run.dir={run}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "cutlight run finished" in res.stdout
    assert not list(run.rglob("*.ckpt")) and not (run / "csv").exists()
    assert (run / ".hydra" / "config.yaml").exists() and (run / "config_resolved.yaml").exists()  # saved anyway


def test_quiet_filter_drops_only_lightning_tips(caplog):
    import logging

    from cutlight.cli.train import _quiet

    _quiet()
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger=rank_zero.name):
        rank_zero.info("💡 Tip: For seamless cloud logging, try installing something")
        rank_zero.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


# ------------------------------------------------------------------------------ choosing a checkpoint by the score
def test_builtin_val_split_is_its_own_and_test_keeps_the_test_images(tmp_path):
    dm = tiny_data(tmp_path, num_val=3)
    dm.setup("fit")
    dm.setup("test")
    root = Path(dm.val_dataset_a.paths[0]).parents[1]
    assert root.name == "shapes-32px-6train-3val-4test-v3"
    assert [Path(p).parent.name for p in (dm.val_dataset_a.paths[0], dm.val_dataset_b.paths[0])] == ["valA", "valB"]
    assert [Path(p).parent.name for p in (dm.test_dataset_a.paths[0], dm.test_dataset_b.paths[0])] == ["testA", "testB"]
    assert len(dm.val_dataset_a) == 3 and len(dm.test_dataset_a) == 4
    val = torch.stack([dm.val_dataset_a[i]["image"] for i in range(3)])
    test = torch.stack([dm.test_dataset_a[i]["image"] for i in range(3)])
    train = torch.stack([dm.train_dataset[i]["A"] for i in range(3)])
    assert not any(torch.equal(v, t) for v in val for t in (*test, *train))  # other images than test and train
    old = tiny_data(tmp_path)  # num_val=0: validation on the test images, the folder name of before
    old.setup("fit")
    assert Path(old.val_dataset_a.paths[0]).parent.name == "testA"
    assert Path(old.val_dataset_a.paths[0]).parents[1].name == "shapes-32px-6train-4test-v3"
    framed = tiny_data(tmp_path, num_val=3, frame=True)  # make train's data: version 4, scored inside the frame
    framed.setup("fit")
    assert Path(framed.val_dataset_a.paths[0]).parents[1].name == "shapes-32px-6train-3val-4test-v4"
    a = torch.stack([framed.val_dataset_a[i]["image"] for i in range(3)])
    assert framed.translation_score(a, a)["content_iou"] == 1 and framed.translation_score(a, a)["style"] == 0


def test_score_every_n_steps_keeps_the_best_checkpoint_and_tests_it(tmp_path):
    from cutlight.cli.train import _test_checkpoint
    from cutlight.lightning.callbacks import ImageGrid
    from cutlight.lightning.resume import AtomicCheckpoint

    torch.manual_seed(0)
    model, dm = tiny_module(), tiny_data(tmp_path, num_train=6, num_val=3)  # 6 batches per epoch, 2 epochs
    score = TranslationScore(every_n_steps=2)
    best = AtomicCheckpoint(dirpath=tmp_path / "ckpt", filename="best-step{step:03d}-score{val/score:.4f}",
                            auto_insert_metric_name=False, monitor="val/score", mode="max", save_top_k=1,
                            monitor_every_n_steps=2)
    grid = ImageGrid(every_n_steps=0, num_images=2, dirpath=str(tmp_path / "images"))
    trainer = tiny_trainer(tmp_path, max_epochs=-1, limit_val_batches=0, logger=CSVLogger(tmp_path),
                           log_every_n_steps=1, enable_checkpointing=True, callbacks=[best, score, grid])
    trainer.fit(model, datamodule=dm)
    series = score.train_time_val["val/score"]
    assert [step for step, _ in series] == [2, 4, 6, 8, 10, 12]  # batches, not optimizer steps
    assert len(score.history) == 1 + 6  # the untrained generator first
    step, value = max(series, key=lambda p: (p[1], -p[0]))  # the first of equal scores is kept
    assert best.best_model_score.item() == pytest.approx(value)
    assert Path(best.best_model_path).name == f"best-step{step:03d}-score{value:.4f}.ckpt"
    rows = read_csv(next(tmp_path.glob("lightning_logs/version_*/metrics.csv")))
    logged = [(int(r["step"]), float(r["val/score"])) for r in rows if r.get("val/score")]
    assert [step for step, _ in logged] == [step for step, _ in series]  # one row per scoring, at its step
    assert [v for _, v in logged] == pytest.approx([v for _, v in series])
    train_rows = [r for r in rows if r.get("train/loss_nce")]
    assert [int(r["step"]) for r in train_rows] == list(range(1, 13))  # the losses keep their own steps

    ckpt, words = _test_checkpoint(trainer)
    assert ckpt == best.best_model_path and words.startswith("best val/score")
    results = trainer.test(model, datamodule=dm, ckpt_path=ckpt, verbose=False)[0]
    assert score.test_scores["score"] == pytest.approx(results["test/score"])
    assert grid.last_path == tmp_path / "images" / f"tested_{Path(ckpt).stem}.png"
    assert grid.last_path.is_file()
    final_state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in final_state.items())  # test loaded the checkpoint


def test_periodic_score_and_checkpoint_arguments_are_checked():
    from cutlight.lightning.resume import AtomicCheckpoint

    with pytest.raises(ValueError, match="every_n_steps must be an integer >= 0"):
        TranslationScore(every_n_steps=-1)
    with pytest.raises(ValueError, match="max_images must be an integer >= 1"):
        TranslationScore(max_images=0)
    with pytest.raises(ValueError, match="needs a monitor"):
        AtomicCheckpoint(monitor_every_n_steps=10)
    with pytest.raises(ValueError, match="monitor_every_n_steps must be an integer >= 0"):
        AtomicCheckpoint(monitor="val/score", monitor_every_n_steps=-5)


def test_make_train_chooses_by_score_on_its_own_validation_images():
    """experiment=builtin_cpu: the score is computed exactly at the steps where the best checkpoint is compared,
    on a validation split that is not the test split, and the best checkpoint is tested."""
    from hydra import compose, initialize_config_module

    import cutlight.cli.train  # noqa: F401  (resolvers)

    with initialize_config_module(config_module="cutlight.conf", version_base="1.3"):
        cfg = compose("train", overrides=["experiment=builtin_cpu"])
    every = cfg.callbacks.translation_score.every_n_steps
    assert every > 0 and cfg.callbacks.best_score.monitor_every_n_steps == every
    assert cfg.callbacks.best_score.monitor == "val/score" and cfg.callbacks.best_score.mode == "max"
    assert cfg.data.num_val > 0 and cfg.test_after_fit is True
