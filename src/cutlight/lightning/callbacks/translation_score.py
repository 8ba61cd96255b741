"""``TranslationScore``: the datamodule's own score of the translation (the built-in data's content / style)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch

from ..rundir import batches_done, log_step

log = logging.getLogger(__name__)


class TranslationScore(pl.Callback):
    """At each validation end, scores the translation of the validation A images with the datamodule's
    ``translation_score(real_a, fake_b) -> dict`` (the built-in dataset defines one) and logs ``val/<name>``;
    at each test end the same on the test A images, logged as ``test/<name>`` (so it is in ``trainer.test``'s
    results and the module's results table).

    Args:
        max_images: score the first that many images of the split.
        every_n_steps: also score the validation images every that many training batches (0: only at
            validations). Cheap (no FID: one generator pass over ``max_images`` images), so a checkpoint can be
            chosen by ``val/score`` often: ``AtomicCheckpoint(monitor="val/score", mode="max",
            monitor_every_n_steps=<the same N>)``.
    """

    def __init__(self, max_images: int = 64, every_n_steps: int = 0):
        for name, value, low in (("max_images", max_images, 1), ("every_n_steps", every_n_steps, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"TranslationScore {name} must be an integer >= {low}; got {value!r}")
        self.max_images = max_images
        self.every_n_steps = every_n_steps
        self.history: list[dict[str, float]] = []  # validation scores in order: before training first
        self.test_scores: dict[str, float] | None = None  # the last trainer.test's
        self.train_time_val: dict[str, list[tuple[int, float]]] = {}  # every_n_steps scores: key -> (step, value)

    @torch.no_grad()
    def score(self, trainer, pl_module, split: str = "val") -> dict[str, float] | None:
        dm = trainer.datamodule
        score_fn = getattr(dm, "translation_score", None)
        dataset = getattr(dm, f"{split}_dataset_a", None)
        if score_fn is None or dataset is None:
            return None
        n = min(self.max_images, len(dataset))
        real_a = torch.stack([dataset[i]["image"] for i in range(n)]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        fake_b = torch.cat([pl_module(chunk).float() for chunk in real_a.split(16)])
        pl_module.train(was_training)
        if not torch.isfinite(fake_b).all():  # no score for NaN images (they would look black, not missing)
            log.error("translation score not computed: the generator produced non-finite images")
            return None
        scores = score_fn(real_a.cpu(), fake_b.cpu())
        if split == "val":
            self.history.append(scores)
        return scores

    def on_train_start(self, trainer, pl_module) -> None:
        scores = self.score(trainer, pl_module)  # "before" numbers: the untrained (or resumed) generator
        if scores:
            log.info("translation score before training: %s", {k: round(v, 4) for k, v in scores.items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.every_n_steps or batches_done(trainer) % self.every_n_steps:
            return
        scores = self.score(trainer, pl_module)  # every rank: the same images and weights, the same numbers
        if not scores:
            return
        step = batches_done(trainer)
        metrics = {f"val/{k}": float(v) for k, v in scores.items()}
        # Not through pl_module.log: Lightning would repeat a value logged from this hook (and its step) in every
        # later row of the training logs. callback_metrics, on every rank, is what a checkpoint's monitor reads.
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)  # rank zero only (the loggers' own rule)
        for k, v in metrics.items():
            self.train_time_val.setdefault(k, []).append((step, v))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        scores = self.score(trainer, pl_module)
        if scores:
            pl_module.log_dict({f"val/{k}": float(v) for k, v in scores.items()}, rank_zero_only=True)
            if trainer.state.fn == "fit":
                log_step(pl_module)

    def summary(self) -> dict[str, str]:
        """The end-of-run summary's lines: the validation score before training and at the end, and the test
        score of the tested weights (after ``trainer.test``)."""
        terms = ("content_iou", "style", "score")
        lines = {}
        if len(self.history) > 1:
            first, last = self.history[0], self.history[-1]
            lines["built-in score, validation images (before training -> end)"] = ", ".join(
                f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in terms)
        elif self.history:  # only the "before" numbers: no validation and no every_n_steps score after them
            lines["built-in score, validation images, before training"] = ", ".join(
                f"{k} {self.history[0][k]:.3f}" for k in terms) + (
                "; none after it (no validation ran, and the run was shorter than "
                f"every_n_steps={self.every_n_steps} batches)" if self.every_n_steps else
                "; none after it (no validation ran)")
        if self.test_scores:
            lines["built-in score, test images, tested weights"] = ", ".join(
                f"{k} {self.test_scores[k]:.3f}" for k in terms)
        return lines

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        scores = self.score(trainer, pl_module, "test")
        if scores:
            self.test_scores = scores
            pl_module.log_dict({f"test/{k}": float(v) for k, v in scores.items()}, rank_zero_only=True)
