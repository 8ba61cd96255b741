"""Hydra training entrypoint: ``python -m cutlight.train [group=option ...] [key=value ...]``.

Composes ``conf/train.yaml`` (groups data/, model/, loss/, trainer/, logger/, callbacks/, experiment/, debug/),
instantiates the datamodule, the CUTModule, callbacks and loggers from their ``_target_`` nodes, trains, and
prints where the run's outputs are. This is the only module that sees a DictConfig.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("cutlight.train")

CONF_DIR = os.environ.get("CUTLIGHT_CONF_DIR", str(Path(__file__).resolve().parents[2] / "conf"))

if not OmegaConf.has_resolver("add"):
    OmegaConf.register_new_resolver("add", lambda *xs: sum(xs))


def _instantiate_all(node: DictConfig | None) -> list:
    """Instantiate every ``_target_`` child of a group node (``logger``, ``callbacks``); null entries are off."""
    if not node:
        return []
    return [instantiate(child) for child in node.values() if child is not None and "_target_" in child]


def _name_wandb_run(cfg: DictConfig) -> None:
    """W&B: multirun jobs share a group (the sweep folder), are named after their overrides, and each gets its
    own run (the jobs of a local multirun share one process)."""
    if not (cfg.get("logger") or {}).get("wandb") or not HydraConfig.initialized():
        return  # no W&B logger (absent or logger.wandb=null), or not run by Hydra
    hc = HydraConfig.get()
    with open_dict(cfg):
        wb = cfg.logger.wandb
        if hc.mode == RunMode.MULTIRUN:
            wb.group = wb.group or Path(hc.sweep.dir).name
            wb.name = wb.name or (hc.job.override_dirname or f"job{hc.job.num}")
        wb.name = wb.name or Path(hc.runtime.output_dir).name
    if hc.mode == RunMode.MULTIRUN:
        import wandb

        if wandb.run is not None:  # the previous job's run: WandbLogger would silently log this job into it
            wandb.finish()


def train(cfg: DictConfig) -> dict[str, float]:
    """Train from a composed config; returns the final callback metrics as floats."""
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
    _name_wandb_run(cfg)

    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:  # the composed config next to the metrics (W&B: the run's config panel)
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    before = {}
    if cfg.get("validate_before_fit") and not cfg.get("ckpt_path"):
        # FID/KID of the untrained generator: the "before" numbers (reals are recomputed at fit start)
        before = {k: float(v) for k, v in trainer.validate(model, datamodule=datamodule, verbose=False)[0].items()}
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        _print_summary(trainer, out, metrics, before)
    for logger in loggers:
        if hasattr(logger, "log_image") and trainer.is_global_zero:  # W&B: close the run (next one starts fresh)
            logger.experiment.finish()
    return metrics


def _print_summary(trainer: pl.Trainer, out: Path, metrics: dict[str, float], before: dict[str, float]) -> None:
    """The run's outputs and numbers; the final image grid comes last (the line to open first)."""
    from .callbacks import ImageGrid, LossCurves, TranslationScore

    lines = ["", "=" * 72, f"cutlight run finished: {out.resolve()}"]
    grid = None
    for cb in trainer.callbacks:
        if isinstance(cb, ImageGrid) and cb.last_path:
            grid = cb
        if isinstance(cb, LossCurves) and cb.path:
            lines.append(f"  loss curves:        {cb.path}")
        if isinstance(cb, TranslationScore) and cb.history:
            first, last = cb.history[0], cb.history[-1]
            lines.append("  built-in score (before training -> after): " + ", ".join(
                f"{k} {first[k]:.3f} -> {last[k]:.3f}" for k in ("content_iou", "style", "score")))
    for logger in trainer.loggers:
        if logger.log_dir and (Path(logger.log_dir) / "metrics.csv").exists():
            lines.append(f"  metrics CSV:        {Path(logger.log_dir) / 'metrics.csv'}")
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.dirpath:
        lines.append(f"  checkpoints:        {ckpt.dirpath}")
    for key in ("val/fid", "val/kid"):
        if key in before and key in metrics:
            lines.append(f"  {key} (before training -> after): {before[key]:.4g} -> {metrics[key]:.4g}")
    shown = {k: v for k, v in metrics.items() if k.startswith(("val/", "perf/"))}
    if shown:
        lines.append("  final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
    if grid is not None:
        lines.append(f"  image grids:        {grid.last_path.parent}")
        if grid.progress_path:
            lines.append(f"  progress (G(A) at every grid step): {grid.progress_path}")
        lines.append("=" * 72)
        lines.append(f"final image grid (input | translation | target-domain example): {grid.last_path}")
    else:
        lines.append("=" * 72)
    print("\n".join(lines), flush=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
