"""TranslationScore, called directly: the datamodule's score of the validation and test translations, its
history, and its lines of the end-of-run summary."""

from types import SimpleNamespace

import torch

from cutlight.lightning.callbacks import TranslationScore
from fake_trainer import FakeModule, fake_trainer


def _datamodule(n: int = 5):
    images = [{"image": torch.rand(3, 8, 8) * 2 - 1} for _ in range(n)]

    def translation_score(real_a, fake_b):  # a stand-in: how far the translation moved, and a constant
        return {"content_iou": float((real_a - fake_b).abs().mean()), "style": 0.5, "score": 0.25}

    return SimpleNamespace(val_dataset_a=images, test_dataset_a=images[:2], translation_score=translation_score)


def test_score_history_test_scores_and_summary():
    torch.manual_seed(0)
    callback, module = TranslationScore(max_images=3), FakeModule()
    trainer = fake_trainer(_datamodule())
    assert callback.summary() == {}  # nothing scored yet: nothing to report
    callback.on_train_start(trainer, module)  # the "before" score
    with torch.no_grad():
        module.generator.weight.zero_()  # "training": now every translation is tanh(bias)
    callback.on_validation_epoch_end(trainer, module)
    assert len(callback.history) == 2 and callback.history[0] != callback.history[1]
    assert module.logged["val/style"] == 0.5 and module.logged["val/content_iou"] == callback.history[1]["content_iou"]
    assert module.training  # scored in eval mode, left as it was
    callback.on_test_epoch_end(trainer, module)
    assert module.logged["test/score"] == 0.25 and callback.test_scores["score"] == 0.25
    lines = callback.summary()
    first, last = callback.history[0]["content_iou"], callback.history[1]["content_iou"]
    assert lines["built-in score, validation images (before training -> end)"].startswith(
        f"content_iou {first:.3f} -> {last:.3f}, style 0.500 -> 0.500")
    assert lines["built-in score, test images, tested weights"] == (
        f"content_iou {callback.test_scores['content_iou']:.3f}, style 0.500, score 0.250")


def test_every_n_steps_scores_during_training_without_logging_through_the_module():
    callback, module = TranslationScore(max_images=2, every_n_steps=2), FakeModule()
    trainer = fake_trainer(_datamodule(), batches=3)
    callback.on_train_batch_end(trainer, module, None, None, 2)
    assert callback.train_time_val == {}  # 3 batches: not a multiple of 2
    trainer.fit_loop.total_batch_idx = 3  # 4 batches done
    callback.on_train_batch_end(trainer, module, None, None, 3)
    assert [step for step, _ in callback.train_time_val["val/score"]] == [4]
    assert float(trainer.callback_metrics["val/score"]) == 0.25  # what a checkpoint's monitor reads
    assert module.logged == {}


def test_no_score_without_a_scoring_datamodule():
    callback, module = TranslationScore(), FakeModule()
    callback.on_validation_epoch_end(fake_trainer(SimpleNamespace()), module)
    assert callback.history == [] and module.logged == {} and callback.summary() == {}
