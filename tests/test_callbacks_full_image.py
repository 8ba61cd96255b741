"""FullImageTranslation, called directly: the whole source image translated at its own (odd) size, the panel,
``val/nce`` through the module's objective, reproducible pictures, and its line of the end-of-run summary."""

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from cutlight.lightning.callbacks import FullImageTranslation
from fake_trainer import FakeModule, fake_trainer


class RecordingObjective:
    """The method contract's ``image_metrics``: records what the callback passes, by role."""

    def __init__(self):
        self.calls = []

    def image_metrics(self, nets, source, translation, target, patches):
        self.calls.append((sorted(nets), tuple(source.shape), tuple(translation.shape), tuple(target.shape), patches))
        return {"nce": torch.tensor(2.5), "nce_idt": torch.tensor(3.5)}


def _module(noise: float = 0.0) -> FakeModule:
    torch.manual_seed(0)
    module = FakeModule(noise=noise)
    module.objective = RecordingObjective()
    return module


def _datamodule():
    source, target = torch.rand(1, 3, 13, 18) * 2 - 1, torch.rand(1, 3, 20, 24) * 2 - 1  # (1, C, H, W), odd sizes
    return SimpleNamespace(full_images=lambda: (source, target))


def test_full_image_at_its_own_size_with_nce_and_summary(tmp_path):
    callback, module = FullImageTranslation(nce_patches=8, dirpath=str(tmp_path)), _module()
    trainer = fake_trainer(_datamodule(), batches=6)
    assert callback.summary() == {}
    callback.on_validation_epoch_end(trainer, module)
    assert module.logged == {"val/nce": 2.5, "val/nce_idt": 3.5}
    # the objective got the networks by role, the padded source (to the size multiple 4), its translation and the
    # padded target
    assert module.objective.calls == [(["generator"], (1, 3, 16, 20), (1, 3, 16, 20), (1, 3, 20, 24), 8)]
    assert Image.open(tmp_path / "translation_step_000006.png").size == (18, 13)  # the source's own size
    panel = Image.open(tmp_path / "full_step_000006.png")
    assert panel.size == (18 + 4 + 18 + 4 + round(24 * 13 / 20), 13)  # source | translation | target at its height
    assert callback.summary() == {"full image (source | translation | target)": str(tmp_path / "full_step_000006.png")}
    assert module.training


def test_full_image_pictures_are_reproducible_and_leave_the_training_rng_alone(tmp_path):
    callback, module = FullImageTranslation(dirpath=str(tmp_path)), _module(noise=0.5)  # a generator drawing noise
    trainer = fake_trainer(_datamodule(), batches=1)
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    callback.write(trainer, module, with_metrics=False)
    assert torch.equal(torch.rand(1), expected)  # the training stream is where it was
    first = np.asarray(Image.open(tmp_path / "translation_step_000001.png"))
    trainer.fit_loop.total_batch_idx = 1
    callback.write(trainer, module, with_metrics=False)
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "translation_step_000002.png")))


def test_final_picture_only_when_trained_since_the_last(tmp_path):
    callback, module = FullImageTranslation(dirpath=str(tmp_path)), _module()
    trainer = fake_trainer(_datamodule(), batches=3)
    callback.on_validation_epoch_end(trainer, module)
    callback.on_train_end(trainer, module)  # nothing trained since: no second picture
    assert len(list(tmp_path.glob("full_step_*.png"))) == 1
    callback.on_train_batch_end(trainer, module, None, None, 3)
    trainer.fit_loop.total_batch_idx = 3
    callback.on_train_end(trainer, module)
    assert sorted(p.name for p in tmp_path.glob("full_step_*.png")) == ["full_step_000003.png", "full_step_000004.png"]


def test_no_picture_for_datamodules_without_full_images(tmp_path):
    callback, module = FullImageTranslation(dirpath=str(tmp_path)), _module()
    callback.on_validation_epoch_end(fake_trainer(SimpleNamespace()), module)
    assert not any(tmp_path.iterdir()) and module.logged == {} and callback.summary() == {}
