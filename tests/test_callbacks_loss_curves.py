"""LossCurves, called directly: what it collects during training and the picture it draws at the end (with the
sweep report's curve plot, ``cutlight.reports.curves``)."""

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from cutlight.lightning.callbacks import LossCurves
from fake_trainer import FakeModule, fake_trainer


def test_loss_curves_collects_train_and_val_series_and_draws_them(tmp_path):
    score = SimpleNamespace(train_time_val={"val/score": [(10, 0.3), (30, 0.5)]})  # like TranslationScore
    callback, module = LossCurves(smooth=5, dirpath=str(tmp_path / "plots")), FakeModule()
    trainer = fake_trainer(callbacks=[score])
    for step in range(1, 41):
        trainer.fit_loop.total_batch_idx = step - 1
        trainer.callback_metrics = {"train/loss_nce": torch.tensor(5.0 - step / 10), "train/loss_d": torch.tensor(0.5),
                                    "perf/sec_per_iter": torch.tensor(0.1)}
        callback.on_train_batch_end(trainer, module, None, None, step - 1)
        if step % 20 == 0:
            trainer.callback_metrics = {"val/fid": torch.tensor(100.0 / step), "val/kid_std": torch.tensor(0.1)}
            callback.on_validation_end(trainer, module)
    series = callback.series(trainer)
    assert list(series) == ["train/loss_d", "train/loss_nce", "val/fid", "val/score"]  # losses, then validation
    assert series["train/loss_nce"][0] == list(range(1, 41)) and series["val/fid"] == ([20, 40], [5.0, 2.5])
    assert series["val/score"] == ([10, 30], [0.3, 0.5])  # scores computed during training join the panels
    assert callback.summary() == {}  # nothing drawn yet
    callback.on_train_end(trainer, module)
    assert callback.path == tmp_path / "plots" / "loss_curves.png"
    image = np.asarray(Image.open(callback.path).convert("RGB"))
    assert image.shape[1] > 3 * 300 and image.shape[0] > 2 * 200  # 3 panels a row, 2 rows (4 keys)
    assert callback.summary() == {"loss curves": str(callback.path)}


def test_loss_curves_draws_nothing_without_training_losses(tmp_path):
    callback = LossCurves(dirpath=str(tmp_path))
    callback.on_train_end(fake_trainer(), FakeModule())
    assert callback.path is None and not any(tmp_path.iterdir())
