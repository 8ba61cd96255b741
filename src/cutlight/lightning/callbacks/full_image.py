"""``FullImageTranslation``: single-image translation (SinCUT) shown at the source's own size, with the method's own metrics (``val/nce``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import save_image

from ...inference import pad_to_multiple, tensor_to_image
from ..rundir import batches_done
from ..rundir import output_dir as run_dir
from .drawing import full_image_panel, log_image

log = logging.getLogger(__name__)


class FullImageTranslation(pl.Callback):
    """Single-image translation (SinCUT): at every validation end, and at the end of training, translate the whole
    source image at its own resolution (``trainer.datamodule.full_images()``, e.g. ``SingleImageDataModule``; a
    no-op for datamodules without it) and

    * save ``images/full_step_XXXXXX.png`` (source | translation | target, the target scaled to the source's
      height) and ``images/translation_step_XXXXXX.png`` (the translation alone, at the source's size), and send
      the panel to loggers that take images (``samples/full_source_translation_target``);
    * log the objective's own metrics of the whole images (``Objective.image_metrics`` by role, as ``val/<name>``;
      SinCUT's: ``val/nce`` and ``val/nce_idt``, the PatchNCE of G(source) against the source and of G(target)
      against the target: unweighted, ``nce_patches`` positions per layer, same-image negatives, chance about
      log(nce_patches)). ``nce_patches: 0`` or a method without any skips them.

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
        source, target = (x.to(module.device) for x in full_images())  # (1, C, H, W) each, own sizes
        h, w = source.shape[-2:]
        was_training = module.training
        module.eval()
        metrics = {}
        with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            src = pad_to_multiple(source, module.size_multiple)  # the generator's own sizes, for the NCE too
            fake = module(src).float()  # (1, C_out, H', W')
            if with_metrics:
                tgt = module.prepare(pad_to_multiple(target, module.size_multiple))
                values = module.objective.image_metrics(module.nets, module.prepare(src), fake, tgt, self.nce_patches)
                metrics = {f"val/{name}": float(value) for name, value in values.items()}
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

    def summary(self) -> dict[str, str]:
        """The end-of-run summary's line: the last full-image panel."""
        return {"full image (source | translation | target)": str(self.last_path)} if self.last_path else {}
