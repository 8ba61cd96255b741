"""Hydra training entrypoint: ``python -m cutlight.train [group=option ...] [key=value ...]``.

Composes ``train.yaml`` of the package ``cutlight.conf`` (the repository's ``conf/``, shipped in the wheel; groups
data/, model/, loss/, trainer/, logger/, callbacks/, experiment/, debug/),
instantiates the datamodule, the CUTModule, callbacks and loggers from their ``_target_`` nodes, trains, and
prints where the run's outputs are. This is the only module that sees a DictConfig.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("cutlight.train")


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
    # one config tree per run: the composed config (W&B: the run's config panel), not also the module's and the
    # datamodule's hyperparameters, which are the same values flattened
    model._log_hyperparams = datamodule._log_hyperparams = False
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    before = {}
    if cfg.get("validate_before_fit") and not cfg.get("ckpt_path"):
        # FID/KID of the untrained generator: the "before" numbers (reals are recomputed at fit start)
        before = {k: float(v) for k, v in trainer.validate(model, datamodule=datamodule, verbose=False)[0].items()}
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        _print_and_log_summary(trainer, out, metrics, before)
    for logger in loggers:
        if hasattr(logger, "log_image") and trainer.is_global_zero:  # W&B: close the run (next one starts fresh)
            logger.experiment.finish()
    return metrics


def _print_summary(trainer: pl.Trainer, out: Path, metrics: dict[str, float], before: dict[str, float]) -> None:
    from .callbacks import FullImageTranslation, ImageGrid, LossCurves, TranslationScore

    lines = ["", "=" * 72, f"cutlight run finished: {out.resolve()}"]
    for cb in trainer.callbacks:
        if isinstance(cb, ImageGrid) and cb.last_path:
            lines.append(f"  image grids ({' | '.join(cb.columns)}): {cb.last_path.parent}")
        if isinstance(cb, FullImageTranslation) and cb.last_path:
            lines.append(f"  full image (source | translation | target): {cb.last_path}")
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
    lines.append("=" * 72)
    print("\n".join(lines), flush=True)


def _print_and_log_summary(trainer: pl.Trainer, out: Path, metrics: dict[str, float], before: dict[str, float]) -> None:
    """``_print_summary`` on the terminal and, unchanged, in the run's log file (Hydra's ``<run>/<job name>.log``):
    the file handlers of the root logger get it as one record, the console handler does not (no double print)."""
    import contextlib
    import io
    import sys

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        _print_summary(trainer, out, metrics, before)
    text = buffer.getvalue()
    sys.stdout.write(text)
    sys.stdout.flush()
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, text.rstrip("\n"), None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


@hydra.main(version_base="1.3", config_path="pkg://cutlight.conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get(cfg.get("optimized_metric") or "", None)


if __name__ == "__main__":
    main()
