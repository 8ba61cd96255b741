"""``ImageGrid``: the same fixed validation images translated at every N training batches, as labelled grids."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import save_image

from ..rundir import batches_done
from ..rundir import output_dir as run_dir
from .drawing import labelled_grid, log_image, to_rgb, unused_path

log = logging.getLogger(__name__)



_DOMAIN = re.compile(r"(?<![\w])([AB])(?![\w])")  # a domain letter on its own: "input A", "G(A)", not "G_A"


def oriented_labels(labels: list[str], direction: str = "AtoB") -> list[str]:
    """Column labels in the user's domain names. The module labels its columns in its own terms (``input A``,
    ``translation G(A)``, ``target domain B``); with ``direction="BtoA"`` the data module swapped the domains, so
    its A is the user's B: ``input B | translation G(B) | target domain A``. Generator names (``G_A``) are kept."""
    if direction != "BtoA":
        return labels
    return [_DOMAIN.sub(lambda m: "B" if m.group(1) == "A" else "A", label) for label in labels]


def _direction(trainer: pl.Trainer) -> str:
    return str(getattr(getattr(trainer, "datamodule", None), "direction", "AtoB"))

class ImageGrid(pl.Callback):
    """Every ``every_n_steps`` batches, at the start and at the end of training, translate the same fixed
    validation images and save a labelled grid, one row per image, with the columns of the module's ``visuals``
    (CUT: ``input A | translation G(A) | target domain B``; CycleGAN: ``A | G_A(A) | G_B(G_A(A)) | B | G_B(B)``),
    to ``images/step_XXXXXX.png`` (also sent to the loggers that take images). At the end of training
    ``images/progress.png`` shows the translation column (the second) of every saved step side by side, and
    ``last_path`` is the final grid. A grid is never overwritten: a resumed run reaching a step again writes
    ``step_XXXXXX-resumed1.png``.

    Args:
        every_n_steps: training batches between grids (0: only at the start and the end).
        num_images: rows (the first validation A and B images; the training set's first pairs without validation).
        tile_size: tiles are upscaled by an integer factor to at least this many pixels (nearest neighbour).
        dirpath: folder for the PNGs (default ``<run>/images``).
    """

    def __init__(self, every_n_steps: int = 500, num_images: int = 4, tile_size: int = 192,
                 dirpath: str | None = None):
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.tile_size = tile_size
        self.dirpath = dirpath
        self._fixed: tuple[torch.Tensor, torch.Tensor] | None = None
        self.history: list[tuple[int, torch.Tensor]] = []  # (step, translations (N, 3, H, W) on CPU)
        self.last_path: Path | None = None
        self.progress_path: Path | None = None
        self.columns: list[str] = []
        self._written: set[int] = set()

    def _images(self, trainer: pl.Trainer) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self._fixed is None:
            dm = trainer.datamodule
            a, b = getattr(dm, "val_dataset_a", None), getattr(dm, "val_dataset_b", None)
            if a is None or b is None:
                a = b = getattr(dm, "train_dataset", None)
                if a is None:
                    return None
                with torch.random.fork_rng(devices=[]):  # random crops: leave the training RNG stream alone
                    pick = [a[i] for i in range(min(self.num_images, len(a)))]
                self._fixed = (torch.stack([p["A"] for p in pick]), torch.stack([p["B"] for p in pick]))
            else:
                n = min(self.num_images, len(a), len(b))
                self._fixed = (torch.stack([a[i]["image"] for i in range(n)]),
                               torch.stack([b[i]["image"] for i in range(n)]))
        return self._fixed

    def _scale(self, size: int) -> int:
        return max(1, -(-self.tile_size // size))  # ceil

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        images = self._images(trainer)
        step = batches_done(trainer)
        if images is None or step in self._written:  # this state's grid is already written
            return
        cols = self._save(trainer, module, images, f"step {step}", f"step_{step:06d}", "samples/translations")
        self.history.append((step, cols[1]))
        self._written.add(step)

    def _save(self, trainer: pl.Trainer, module: pl.LightningModule, images: tuple[torch.Tensor, torch.Tensor],
              caption: str, name: str, key: str) -> list[torch.Tensor]:
        """Translate ``images`` with ``module``, save the labelled grid as ``images/<name>.png`` (``last_path``)
        and send it to the loggers; returns the grid's columns (N, 3, H, W) on the CPU."""
        was_training = module.training
        module.eval()
        real_a, real_b = (x.to(module.device) for x in images)
        columns = module.visuals(real_a, real_b)  # label -> (N, C, H, W); the method chooses its columns
        columns = dict(zip(oriented_labels(list(columns), _direction(trainer)), columns.values()))
        module.train(was_training)
        cols = [to_rgb(c.float().clamp(-1, 1)).cpu() for c in columns.values()]
        grid = labelled_grid(cols, list(columns), self._scale(real_a.shape[-1]), caption=caption)
        path = unused_path(run_dir(trainer, self.dirpath, "images") / f"{name}.png")
        save_image(grid.float() / 255, path)
        self.last_path, self.columns = path, list(columns)
        log_image(trainer, key, grid, batches_done(trainer))
        return cols

    def write_progress(self, trainer: pl.Trainer, max_steps: int = 10) -> None:
        """``images/progress.png``: the input column, the translation column at the saved steps of this run (at
        most ``max_steps``, evenly spread, first and last included), then the last column (CUT: a target-domain
        example)."""
        if not self.history or self._fixed is None:
            return
        real_a, real_b = (to_rgb(x.float()) for x in self._fixed)
        n = len(self.history)
        picks = sorted({round(i * (n - 1) / (max_steps - 1)) for i in range(max_steps)}) if n > max_steps else range(n)
        shown = [self.history[i] for i in picks]
        columns = [real_a, *(fake for _, fake in shown), real_b]
        titles = [self.columns[0], *(f"step {step}" for step, _ in shown), *oriented_labels(["B"], _direction(trainer))]
        scale = max(1, self._scale(real_a.shape[-1]) // 2)
        grid = labelled_grid(columns, titles, scale, caption=f"{self.columns[1]} during training")
        path = unused_path(run_dir(trainer, self.dirpath, "images") / "progress.png")
        save_image(grid.float() / 255, path)
        self.progress_path = path

    def on_train_start(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module)  # the untrained (or resumed) generator

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps > 0 and batches_done(trainer) % self.every_n_steps == 0:
            self.write(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self.write(trainer, pl_module)
        if trainer.is_global_zero:
            self.write_progress(trainer)
        if self.last_path is not None:
            log.info("image grids (columns: %s): %s", " | ".join(self.columns), self.last_path.parent)

    def summary(self) -> dict[str, str]:
        """The end-of-run summary's lines: the grids' folder, the progress picture, the last grid."""
        if self.last_path is None:
            return {}
        lines = {"image grids": str(self.last_path.parent)}
        if self.progress_path:
            lines["progress (the translation at every grid step)"] = str(self.progress_path)
        lines[f"final image grid ({' | '.join(self.columns)})"] = str(self.last_path)
        return lines

    @torch.no_grad()
    def on_test_end(self, trainer, pl_module) -> None:
        """The same fixed images translated by the tested weights (``trainer.test(ckpt_path=...)``: that checkpoint,
        e.g. the best one; else the weights in memory), as ``images/tested_<checkpoint name>.png``; it becomes
        ``last_path``, the grid of the weights whose test numbers the run reports."""
        images = self._images(trainer)
        if not trainer.is_global_zero or images is None:
            return
        name = Path(trainer.ckpt_path).stem if trainer.ckpt_path else "final-weights"
        self._save(trainer, pl_module, images, f"tested: {name}", f"tested_{name}", "samples/tested")
