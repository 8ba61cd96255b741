"""Logger-agnostic callbacks: image grids, full-image translations (SinCUT), loss-curve plots, timing/memory and the
built-in dataset's score.

Pictures are always written as PNG files under the run's own directory (``dirpath``, else
``cutlight.lightning.rundir.run_dir``: the first logger's version folder, e.g. ``lightning_logs/version_3/images``,
never the current directory) and, when the trainer has loggers that accept images (W&B's ``log_image``,
TensorBoard's ``add_image``), logged there too. Steps are training batches done (``rundir.batches_done``).
``TranslationWriter`` (``trainer.predict``) writes translated image files.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid, save_image

from .lightning.prediction import TranslationWriter
from .lightning.rundir import batches_done, log_step
from .lightning.rundir import output_dir as run_dir

__all__ = ["ImageGrid", "LossCurves", "PerfMonitor", "TranslationScore", "TranslationWriter"]

log = logging.getLogger(__name__)


def log_image(trainer: pl.Trainer, key: str, image_u8: torch.Tensor, step: int) -> None:
    """Send a (3, H, W) uint8 image to every logger that takes images."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # W&B
            logger.log_image(key=key, images=[image_u8.permute(1, 2, 0).cpu().numpy()], step=step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
            logger.experiment.add_image(key, image_u8, global_step=step)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) with C in {1, 3, 4} -> (N, 3, H, W) for display (grayscale repeated, alpha dropped)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


def unused_path(path: Path) -> Path:
    """``path``, or ``<stem>-resumed<N><suffix>`` with the smallest N not taken: a resumed run never overwrites
    a picture of the run it continues."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-resumed{n}{path.suffix}")
    return candidate


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()  # Pillow without FreeType: the small bitmap font


def labelled_grid(columns: list[torch.Tensor], titles: list[str], scale: int = 1, caption: str | None = None,
                  padding: int = 4) -> torch.Tensor:
    """Tiles in a table with a title over each column (and an optional caption line above the titles).

    Args:
        columns: K tensors (N, 3, H, W) in [-1, 1]: column k shows ``columns[k][i]`` in row i.
        titles: K column titles.
        scale: integer upscaling of every tile (nearest neighbour: pixels stay crisp).

    Returns: (3, H', W') uint8, white background.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    if len(columns) != len(titles):
        raise ValueError(f"got {len(columns)} columns but {len(titles)} titles")
    tiles = torch.stack([c.detach().float().cpu() for c in columns], dim=1).flatten(0, 1)  # (N*K, 3, H, W)
    tiles = ((tiles.clamp(-1, 1) + 1) / 2).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    grid = make_grid(tiles, nrow=len(columns), padding=padding, pad_value=1.0)  # (3, Hg, Wg) in [0, 1]
    body = Image.fromarray((grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    tile_w = columns[0].shape[-1] * scale
    font = _font(max(12, min(24, tile_w // 9)))
    line = font.getbbox("Ag")[3] + 6
    header = line * (2 if caption else 1)
    image = Image.new("RGB", (body.width, body.height + header), "white")
    image.paste(body, (0, header))
    draw = ImageDraw.Draw(image)
    if caption:
        draw.text((padding, 2), caption, fill=(0, 0, 0), font=font)
    for k, title in enumerate(titles):
        left = padding + k * (tile_w + padding)
        width = draw.textlength(title, font=font)
        draw.text((left + max(0.0, (tile_w - width) / 2), header - line + 2), title, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # (3, H', W') uint8




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
        titles = [self.columns[0], *(f"step {step}" for step, _ in shown), "B"]
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


class FullImageTranslation(pl.Callback):
    """Single-image translation (SinCUT): at every validation end, and at the end of training, translate the whole
    source image at its own resolution (``trainer.datamodule.full_images()``, e.g. ``SingleImageDataModule``; a
    no-op for datamodules without it) and

    * save ``images/full_step_XXXXXX.png`` (source | translation | target, the target scaled to the source's
      height) and ``images/translation_step_XXXXXX.png`` (the translation alone, at the source's size), and send
      the panel to loggers that take images (``samples/full_source_translation_target``);
    * log ``val/nce`` and ``val/nce_idt``: PatchNCE of G(source) against the source and of G(target) against the
      target through the module's objective (``evaluation_nce``: unweighted, ``nce_patches`` positions per layer,
      same-image negatives; chance is about log(nce_patches)). ``nce_patches: 0`` or a module without PatchNCE
      heads skips them.

    Generator noise (SinCUT's generator draws fresh noise at every call) and patch positions come from a fixed
    ``seed`` in a forked RNG: successive images differ only by the weights, and training's random stream is left
    as it was. Images are clamped to [-1, 1] for display (SinCUT's generator has no final tanh). The
    discriminator is not used. Rank 0 only.
    """

    KEY = "samples/full_source_translation_target"

    def __init__(self, nce_patches: int = 256, seed: int = 0, dirpath: str | None = None):
        self.nce_patches, self.seed, self.dirpath = nce_patches, seed, dirpath
        self.last_path: Path | None = None
        self._stale = False  # trained since the last picture

    @torch.no_grad()
    def write(self, trainer: pl.Trainer, module: pl.LightningModule, with_metrics: bool) -> dict[str, float]:
        full_images = getattr(trainer.datamodule, "full_images", None)
        if not trainer.is_global_zero or full_images is None:
            return {}
        from .inference import pad_to_multiple, tensor_to_image

        source, target = (x.to(module.device) for x in full_images())  # (1, C, H, W) each, own sizes
        h, w = source.shape[-2:]
        was_training = module.training
        module.eval()
        metrics = {}
        with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            src = pad_to_multiple(source, module.size_multiple)  # the generator's own sizes, for the NCE too
            fake = module(src).float()  # (1, C_out, H', W')
            objective, sampler = getattr(module, "objective", None), getattr(module, "sampler", None)
            if with_metrics and self.nce_patches > 0 and sampler is not None and hasattr(objective, "evaluation_nce"):
                tgt = pad_to_multiple(target, module.size_multiple)
                nce = objective.evaluation_nce(module.generator, sampler, src, fake, self.nce_patches)
                nce_idt = objective.evaluation_nce(module.generator, sampler, tgt, module(tgt).float(),
                                                   self.nce_patches)
                metrics = {"val/nce": float(nce), "val/nce_idt": float(nce_idt)}
        module.train(was_training)
        fake = fake[..., :h, :w].cpu()
        step = batches_done(trainer)
        folder = run_dir(trainer, self.dirpath, "images")
        tensor_to_image(fake[0].clamp(-1, 1)).save(folder / f"translation_step_{step:06d}.png")
        panel = full_image_panel(source.cpu(), fake, target.cpu())
        self.last_path = folder / f"full_step_{step:06d}.png"
        save_image(panel.float() / 255, self.last_path)
        log_image(trainer, self.KEY, panel, step)
        self._stale = False
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stale = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        metrics = self.write(trainer, pl_module, with_metrics=True)
        if metrics:
            pl_module.log_dict(metrics, rank_zero_only=True)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._stale:  # the final weights, unless the last validation showed them
            self.write(trainer, pl_module, with_metrics=False)
        if self.last_path is not None:
            log.info("full-image translations (source | translation | target): %s", self.last_path.parent)


def full_image_panel(source: torch.Tensor, translation: torch.Tensor, target: torch.Tensor, gap: int = 4
                     ) -> torch.Tensor:
    """source | translation | target side by side (the target scaled to the source's height, aspect kept), white
    gaps: (1, C, H, W) images in [-1, 1] (clamped) -> (3, H, W_total) uint8."""
    from .metrics import to_uint8

    h = source.shape[-2]
    width = max(1, round(target.shape[-1] * h / target.shape[-2]))
    target = torch.nn.functional.interpolate(target.float(), size=(h, width), mode="bilinear", antialias=True)
    parts = [to_uint8(x.float(), rgb=True)[0] for x in (source, translation, target)]  # (3, H, W_i) each
    white = torch.full((3, h, gap), 255, dtype=torch.uint8)
    return torch.cat([parts[0], white, parts[1], white, parts[2]], dim=2)


class LossCurves(pl.Callback):
    """Collects ``train/*`` losses each batch and ``val/*`` metrics each validation (and those a callback computed
    during training: ``TranslationScore(every_n_steps=N)``); plots them at the end of training to
    ``plots/loss_curves.png`` (moving average over ``smooth`` batches drawn on top)."""

    def __init__(self, smooth: int = 25, dirpath: str | None = None):
        self.smooth = smooth
        self.dirpath = dirpath
        self.train: dict[str, list[tuple[int, float]]] = {}
        self.val: dict[str, list[tuple[int, float]]] = {}
        self.path: Path | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = batches_done(trainer)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("train/loss"):
                self.train.setdefault(key, []).append((step, float(value)))

    def on_validation_end(self, trainer, pl_module) -> None:
        # after the module's on_validation_epoch_end: this epoch's val/* are in callback_metrics by now
        if trainer.sanity_checking:
            return
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and not key.endswith("_std"):
                self.val.setdefault(key, []).append((batches_done(trainer), float(value)))

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self.train:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        val = {k: list(v) for k, v in self.val.items()}
        for cb in trainer.callbacks:  # scores computed during training (TranslationScore(every_n_steps=N))
            for key, series in getattr(cb, "train_time_val", {}).items():
                val[key] = sorted(val.get(key, []) + series)
        panels = [(k, v) for k, v in sorted(self.train.items())] + sorted(val.items())
        cols = 3
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, (key, series) in zip(axes.flat, panels):
            steps, values = zip(*series)
            ax.plot(steps, values, lw=0.6, alpha=0.4 if key.startswith("train/") else 1.0,
                    marker=None if key.startswith("train/") else "o")
            if key.startswith("train/") and len(values) >= self.smooth:
                k = self.smooth
                avg = torch.tensor(values).unfold(0, k, 1).mean(1).tolist()
                ax.plot(steps[k - 1:], avg, lw=1.5)
            ax.set_title(key)
            ax.set_xlabel("batch")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(panels):]:
            ax.axis("off")
        fig.tight_layout()
        self.path = run_dir(trainer, self.dirpath, "plots") / "loss_curves.png"
        fig.savefig(self.path, dpi=110)
        plt.close(fig)
        import numpy as np
        from PIL import Image

        image = torch.from_numpy(np.array(Image.open(self.path).convert("RGB"))).permute(2, 0, 1)  # (3, H, W)
        log_image(trainer, "plots/loss_curves", image, batches_done(trainer))
        log.info("loss curves: %s", self.path)


class PerfMonitor(pl.Callback):
    """Logs ``perf/sec_per_iter`` (wall time between consecutive training batches) and ``perf/peak_mem_mb``
    (max allocated CUDA memory on GPU, peak process RSS on CPU) every batch.

    Why not Lightning's monitors: ``ThroughputMonitor`` logs windowed rates (batches/s once 100 batches are in
    the window) straight to the loggers, so they reach neither the progress bar nor ``callback_metrics`` (the
    end-of-run summary, sweeps' ``optimized_metric``), needs a ``batch_size_fn`` and warns unless the module
    defines ``flops_per_batch``; ``DeviceStatsMonitor`` logs dozens of per-device keys (CUDA allocator stats;
    CPU utilisation through psutil), not one peak-memory number; ``Timer`` measures whole stages (and enforces
    ``Trainer(max_time=...)``), not iterations. Add any of them next to this one when wanted.
    """

    def __init__(self):
        self._last: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._last = None  # do not count validation / epoch boundaries as iteration time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None:
            pl_module.log("perf/sec_per_iter", now - self._last, prog_bar=True, batch_size=1)
        self._last = now
        pl_module.log("perf/peak_mem_mb", peak_memory_mb(pl_module.device), batch_size=1)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


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

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        scores = self.score(trainer, pl_module, "test")
        if scores:
            self.test_scores = scores
            pl_module.log_dict({f"test/{k}": float(v) for k, v in scores.items()}, rank_zero_only=True)
