"""CycleGAN and the one-sided baselines in the trainer: Hydra entrypoint, checkpoints with the image pools,
generators by direction, and the errors for bad settings."""

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from cutlight import CycleGANModule, load_generator
from helpers import (
    K_NETWORK,
    TINY_DATA,
    TINY_EXTRACTOR,
    assert_scaled_close,
    run_entrypoint,
    tiny_data,
    tiny_trainer,
)

TINY_CYCLEGAN = dict(generator={"ngf": 8, "n_blocks": 1}, discriminator={"ndf": 8, "n_layers": 2},
                     objective={"pool_size": 3}, n_epochs=1, n_epochs_decay=1,
                     val_metrics={"extractor": TINY_EXTRACTOR})


def test_cyclegan_trains_checkpoints_its_pools_and_loads_by_direction(tmp_path):
    torch.manual_seed(0)
    model = CycleGANModule(**TINY_CYCLEGAN)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=4, enable_checkpointing=True,
                           callbacks=[ckpt])
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    assert torch.isfinite(trainer.callback_metrics["train/loss_cycle_a"])
    assert 0 < float(trainer.callback_metrics["val/fid"]) < 1e4
    assert len(model.objective.pool_a.images) == 3  # pool_size 3, 4 iterations of batch 1
    path = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(path, weights_only=True)["cutlight_networks"]  # which role translates, how each is built
    assert saved["translators"] == {"AtoB": "gen_a", "BtoA": "gen_b"} and not saved["configs"]["gen_b"]["antialias"]
    reloaded = CycleGANModule.load_from_checkpoint(path)
    for name in ("pool_a", "pool_b"):  # the pools come back with the checkpoint (a resumed run keeps them)
        saved, got = getattr(model.objective, name).images, getattr(reloaded.objective, name).images
        assert len(saved) == len(got) and all(torch.equal(a, b) for a, b in zip(saved, got))
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(load_generator(path, direction="AtoB")(x), model.gen_a.eval()(x), rtol=0, atol=0)
        torch.testing.assert_close(load_generator(path, direction="BtoA")(x), model.gen_b.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown direction 'sideways'"):
        load_generator(path, direction="sideways")
    with pytest.raises(ValueError, match="holds two generators"):
        load_generator(path)


@pytest.mark.numeric
def test_cyclegan_grid_columns():
    model = CycleGANModule(**TINY_CYCLEGAN).eval()
    a, b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    cols = model.visuals(a, b)
    assert list(cols) == ["A", "G_A(A)", "G_B(G_A(A))", "B", "G_B(B)"]
    with torch.no_grad():
        assert_scaled_close(cols["G_B(G_A(A))"], model.gen_b(model.gen_a(a)), K_NETWORK)


def test_cyclegan_bad_settings_are_named():
    with pytest.raises(ValueError, match="lambda_identity=0.5 needs equal channel counts.*input_nc=1 and output_nc=3"):
        CycleGANModule(**{**TINY_CYCLEGAN, "generator": {"ngf": 8, "n_blocks": 1, "input_nc": 1, "output_nc": 3}})
    model = CycleGANModule(**{**TINY_CYCLEGAN, "objective": {"lambda_identity": 0.0},
                              "generator": {"ngf": 8, "n_blocks": 1, "input_nc": 1, "output_nc": 3}})
    assert (model.gen_b.input_nc, model.disc_b.input_nc, model.disc_a.input_nc) == (3, 1, 3)
    with pytest.raises(ValueError, match="needs a CycleGANObjective"):
        CycleGANModule(**{**TINY_CYCLEGAN, "objective": {"_target_": "cutlight.objectives.CUTObjective"}})


@pytest.mark.slow
def test_cyclegan_and_baselines_train_through_the_entrypoint(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_entrypoint(["-m", *TINY_DATA, "objective=gcgan,distancegan,selfdistance", "data.batch_size=2",
                          "trainer.limit_train_batches=2", f"hydra.sweep.dir={sweep}"], tmp_path, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_entrypoint([*TINY_DATA, "model=cyclegan", "trainer.limit_train_batches=2",
                          f"hydra.run.dir={tmp_path / 'cyclegan'}"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "G_A(A) | G_B(G_A(A))" in res.stdout
    runs = sorted(p for p in sweep.iterdir() if (p / "checkpoints" / "last.ckpt").is_file())
    assert len(runs) == 3, runs
    for run in [*runs, tmp_path / "cyclegan"]:
        header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
        assert "val/fid" in header and "train/loss_g" in header, (run, header)
