"""Hydra training entrypoint: ``python -m cutlight.cli.train [group=option ...] [key=value ...]`` (``cutlight-train``).

Composes ``train.yaml`` of the package ``cutlight.conf`` (the repository's ``conf/``, shipped in the wheel; groups
data/, objective/, model/, trainer/, logger/, callbacks/, experiment/, debug/; ``loss=`` is refused with the
group's new name, objective=),
instantiates the datamodule, the CUTModule, callbacks and loggers from their ``_target_`` nodes, trains, optionally
tests (``test_after_fit=true``: the best checkpoint when a callback keeps one by a ``val/`` metric, else the final
weights), and
prints where the run's outputs are (also into the run's log file). This is the only module that sees a DictConfig.

Runs are named after what differs from the defaults: a run's folder is ``outputs/<date>/<overrides>/<time>``
(``<overrides>`` = Hydra's ``override_dirname``: the experiment and the command-line overrides, without the data
folders, other path-like values cut to their last part by ``run_name``: one folder level),
which names it in TensorBoard and the CSV files; its W&B run is named ``<overrides> <date> <time>``.

Bad values fail before training with their config key (``model.optimizer.lr='abc' is invalid: expected ...``).
Resuming (``resume=<run folder>``, ``ckpt_path=<file>`` or ``ckpt_path=last``) checks the checkpoint first
(errors name the file and what is wrong with it) and continues the same run: in the run's own folder with
``resume`` (metrics appended, the same W&B run), or in a new folder that links to the old one (``resumed_from``)
and continues its ``csv/metrics.csv``.

Stops and refusals (issue 28): one training process per run folder (``cutlight.cli.run_lock``); Ctrl-C / SIGTERM
save ``last.ckpt`` at the current step, print the summary, mark ``summary.json`` ``interrupted`` and exit 130 /
143 (``cutlight.lightning.interrupt``); a fit that applied no update or ended skipping non-finite iterations
fails (``NothingTrainedError``); ``seed``, the training length and ``trainer.devices`` are checked before anything
is built (``_check_before_training``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from datetime import datetime
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities import rank_zero_only

from ..checks import ConfigValueError, check_int
from ..lightning.interrupt import GracefulInterrupt, TrainingInterrupted
from ..lightning.reliability import NothingTrainedError, training_problem
from ..lightning.rundir import RESULTS_CSV, RESULTS_MD
from ..specs import UntrustedCodeError, check_specs, spec_targets, trusting_code
from .run_name import run_name  # also registers the ${cutlight.run_name:...} resolver of conf/train.yaml
from .run_record import log_to_files

log = logging.getLogger("cutlight.cli.train")  # not __name__: "__main__" under python -m


def _instantiate(node: DictConfig, key: str, **kwargs):
    """``instantiate(node)``; a bad value's ``ConfigValueError`` comes out with its full config key (``key.``...)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, ConfigValueError):
            raise cause.prefixed(key) from None
        raise


def _instantiate_all(node: DictConfig | None, key: str) -> list:
    """Instantiate every ``_target_`` child of a group node (``logger``, ``callbacks``); null entries are off."""
    if not node:
        return []
    return [_instantiate(child, f"{key}.{name}") for name, child in node.items()
            if child is not None and "_target_" in child]


def _resume_checkpoint(cfg: DictConfig, out: Path) -> tuple[str | None, dict]:
    """The checkpoint a run resumes from (``resume`` / ``ckpt_path``), checked, and its content; ``(None, {})`` for a
    fresh start."""
    from ..lightning.resume import find_last_checkpoint, read_resume_checkpoint

    resume, ckpt_path = cfg.get("resume"), cfg.get("ckpt_path")
    if resume:
        if not (Path(resume).expanduser() / "checkpoints").is_dir():
            raise ConfigValueError("resume", resume, "a run folder holding checkpoints/ (outputs/<date>/<time>)")
        ckpt_path = ckpt_path or "last"
    if not ckpt_path:
        return None, {}
    if ckpt_path == "last":
        folder = (Path(resume).expanduser() if resume else out) / "checkpoints"
        removed = _remove_unfinished_saves(folder)
        found = find_last_checkpoint(folder)
        if found is None:
            if resume:
                seen = (f"only {', '.join(removed)}: a save that never finished (stopped or out of space while "
                        "writing the first checkpoint; now removed), so nothing to resume: start the run again "
                        "without resume=" if removed else f"none in {folder}")
                raise ConfigValueError("resume", resume, f"a run folder holding a readable checkpoint; {seen}")
            log.info("ckpt_path=last: no checkpoint in %s yet, starting from scratch", folder)
            return None, {}
        path, ckpt = found
    else:
        path = Path(ckpt_path).expanduser()
        ckpt = read_resume_checkpoint(path)
    log.info("resuming from %s (%s)", path, _checkpoint_position(ckpt))
    return str(path), ckpt


def _checkpoint_position(ckpt: dict) -> str:
    """``epoch 6, step 28``: where a checkpoint stands, its step counted in training batches as everywhere else
    (checkpoint names, logs); Lightning's ``global_step`` counts optimizer steps (two per CUT iteration)."""
    from ..lightning.rundir import checkpoint_batches

    batches = checkpoint_batches(ckpt)
    step = f"step {batches}" if batches is not None else f"optimizer step {ckpt.get('global_step')}"
    return f"epoch {ckpt.get('epoch')}, {step}"


def _remove_unfinished_saves(folder: Path) -> list[str]:
    """Remove the ``*.ckpt.tmp`` left in ``folder`` by a save that never finished (a kill, a full disk) before
    this run writes anything (on a full disk they hold the space it needs); say what was removed."""
    from ..lightning.resume import remove_stale_temporaries

    if rank_zero_only.rank != 0:
        return []
    removed = remove_stale_temporaries(folder)
    if removed:
        log.warning("removed %s from %s: unfinished checkpoint save(s) of an earlier run", ", ".join(removed), folder)
    return removed


def _check_before_training(cfg: DictConfig) -> None:
    """Config values that Lightning would only trip over later (or never, training nothing): ``seed``, the
    training length, ``trainer.devices`` against this machine. ``ConfigValueError`` names the key."""
    check_int("seed", cfg.get("seed"), optional=True)
    trainer = cfg.get("trainer") or {}
    max_epochs = trainer.get("max_epochs")
    if max_epochs is not None and check_int("trainer.max_epochs", max_epochs, low=-1) == 0:
        raise ConfigValueError("trainer.max_epochs", 0, "an integer >= 1, or -1 / null for the model's schedule "
                               "(model.n_epochs + model.n_epochs_decay): 0 trains nothing")
    max_steps = trainer.get("max_steps")
    if max_steps is not None and check_int("trainer.max_steps", max_steps, low=-1) == 0:
        raise ConfigValueError("trainer.max_steps", 0, "an integer >= 1 (optimizer steps), or -1: 0 trains nothing")
    limit = trainer.get("limit_train_batches")
    if limit is not None and not isinstance(limit, bool) and limit == 0:
        raise ConfigValueError("trainer.limit_train_batches", limit, "a number > 0: 0 trains nothing")
    _check_devices(trainer)


def _check_devices(trainer: DictConfig) -> None:
    """``trainer.devices`` against the machine: CPU processes need the DDP strategy that tolerates unused
    parameters (``trainer=ddp_cpu``); GPUs must exist."""
    devices, accel = trainer.get("devices"), str(trainer.get("accelerator") or "auto")
    strategy = str(trainer.get("strategy") or "auto")
    if devices in (None, "auto", -1, "-1"):
        return
    if isinstance(devices, bool):
        return  # Lightning's own message names it
    if isinstance(devices, int):
        count = devices
    elif isinstance(devices, str) and "," not in devices:
        try:
            count = int(devices)
        except ValueError:
            return
    else:  # a list of device indices: [0, 1] or "0,1"
        items = devices.split(",") if isinstance(devices, str) else list(devices)
        count = len([d for d in items if str(d).strip()])
    gpus = torch.cuda.device_count()
    on_cpu = accel == "cpu" or (accel == "auto" and gpus == 0)
    if on_cpu and count > 1 and strategy == "auto":
        raise ConfigValueError(
            "trainer.devices", devices,
            f"1 with trainer.accelerator={accel} and the default strategy: {count} CPU processes under Lightning's "
            "default DDP fail at the first step (cutlight's networks leave parameters unused in one of the two "
            f"steps). For CPU processes use trainer=ddp_cpu trainer.devices={count}")
    if accel in ("gpu", "cuda") and count > gpus:
        raise ConfigValueError("trainer.devices", devices,
                               f"at most {gpus}, the CUDA GPUs of this machine"
                               + ("; without a GPU use trainer=cpu" if gpus == 0 else ""))


def _continue_run(path: str, ckpt: dict, out: Path) -> dict:
    """Prepare ``out`` for continuing the run that wrote ``ckpt`` (linked when it is not that run's own folder, see
    the module docstring); returns the checkpoint's ``cutlight`` section (run folder, logger ids)."""
    info = ckpt.get("cutlight") or {}
    old = Path(info.get("run_dir") or Path(path).resolve().parent.parent)
    if old.resolve() != out.resolve():
        _link_previous_run(old, out)
    return info


def _link_previous_run(old: Path, out: Path) -> None:
    """A resumed run in a new folder: link ``out/resumed_from`` to the old run and continue its metrics CSV."""
    if rank_zero_only.rank != 0:  # DDP: the files are rank 0's to write
        return
    link = out / "resumed_from"
    if old.is_dir() and not link.exists() and not link.is_symlink():
        os.symlink(old.resolve(), link, target_is_directory=True)
    old_csv, new_csv = old / "csv" / "metrics.csv", out / "csv" / "metrics.csv"
    if old_csv.is_file() and not new_csv.exists():  # the resumed run drops the rows it trains again
        new_csv.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(old_csv, new_csv)
    log.info("continuing run %s in %s (link: %s)", old, out, link)


def _continue_wandb_run(cfg: DictConfig, resumed: dict) -> None:
    """Resuming: log into the W&B run the checkpoint was written by (its id; ``resume="allow"``), unless the
    config names a run id itself."""
    run_id = (resumed.get("loggers") or {}).get("WandbLogger")
    if run_id and (cfg.get("logger") or {}).get("wandb") and not cfg.logger.wandb.get("id"):
        with open_dict(cfg):
            cfg.logger.wandb.id, cfg.logger.wandb.resume = run_id, "allow"


def _save_config(cfg: DictConfig, out: Path) -> None:
    """``config_resolved.yaml``; a resumed run keeps it and adds ``config_resolved.resume<N>.yaml``."""
    if rank_zero_only.rank != 0:  # DDP: rank 0 writes it
        return
    path, n = out / "config_resolved.yaml", 0
    while path.exists():
        n += 1
        path = out / f"config_resolved.resume{n}.yaml"
    OmegaConf.save(cfg, path, resolve=True)


def _name_wandb_run(cfg: DictConfig) -> None:
    """W&B: a single run is named after its overrides and the time (``debug=tiny,seed=1 2024-05-01 12:00:00``;
    ``defaults ...`` without overrides); multirun jobs share a group (the sweep folder), are named after their
    overrides, and each gets its own run (the jobs of a local multirun share one process)."""
    if not (cfg.get("logger") or {}).get("wandb") or not HydraConfig.initialized():
        return  # no W&B logger (absent or logger.wandb=null), or not run by Hydra
    hc = HydraConfig.get()
    with open_dict(cfg):
        wb = cfg.logger.wandb
        if hc.mode == RunMode.MULTIRUN:
            wb.group = wb.group or Path(hc.sweep.dir).name
            wb.name = wb.name or (run_name(hc.job.override_dirname) or f"job{hc.job.num}")
        wb.name = wb.name or f"{run_name(hc.job.override_dirname) or 'defaults'} {datetime.now():%Y-%m-%d %H:%M:%S}"
    if hc.mode == RunMode.MULTIRUN:
        import wandb

        if wandb.run is not None:  # the previous job's run: WandbLogger would silently log this job into it
            wandb.finish()


class _NoTips(logging.Filter):
    """Drops Lightning's "💡 Tip: try installing ..." advertisements (one per fit and per checkpoint callback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def _quiet() -> None:
    """Lightning's tips off; torch's ``LeafSpec`` deprecation, which Lightning's own code triggers on every fit
    with recent torch, silenced (nothing a user can change)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _test_checkpoint(trainer: pl.Trainer) -> tuple[str | None, str]:
    """(checkpoint for ``trainer.test``, which weights that is, in words): the best checkpoint kept by the first
    ModelCheckpoint that monitors a ``val/`` metric (``val/fid``: callbacks=best_fid; ``val/score``: make train),
    else None, the weights in memory (those at the end of training)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    monitors = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)
                and (cb.monitor or "").startswith("val/")]
    for cb in monitors:
        if cb.best_model_path:
            return cb.best_model_path, (f"best {cb.monitor} ({float(cb.best_model_score):.4g}) checkpoint "
                                        f"{cb.best_model_path}")
    if monitors:
        return None, (f"final weights (the checkpoint callback monitoring {monitors[0].monitor} kept none: "
                      f"{monitors[0].monitor} was never computed during training)")
    return None, "final weights (no checkpoint monitors a val/ metric; callbacks=best_fid keeps the best val/fid one)"


def _check_accelerator(cfg: DictConfig) -> None:
    """A GPU trainer (``trainer=gpu``, which the GPU experiments select) on a machine without CUDA: stopped before
    anything is built, with the ways out (Lightning's own ``No supported gpu backend found!`` names neither)."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="") or "")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigValueError("trainer.accelerator", accelerator,
                               "a device this machine has: no CUDA GPU found. Add trainer=cpu to train on the CPU "
                               "(slow at the GPU experiments' sizes), or debug=tiny for a smoke test (it selects "
                               "trainer=cpu)")


def _check_logger_packages(cfg: DictConfig) -> None:
    """``logger=tensorboard`` needs tensorboard (or tensorboardX), which only the ``tensorboard`` and ``dev`` extras
    install: say which extra, before anything is built (Lightning's error names neither)."""
    import importlib.util

    node = (cfg.get("logger") or {}).get("tensorboard")
    if not node or "TensorBoardLogger" not in str(node.get("_target_", "")):
        return
    if not any(importlib.util.find_spec(m) is not None for m in ("tensorboard", "tensorboardX")):
        raise ConfigValueError("logger", "tensorboard", "an installed TensorBoard: pip install 'cutlight[tensorboard]' "
                               "(or pip install tensorboard); logger=csv and logger=wandb need nothing more")


def train(cfg: DictConfig) -> dict[str, float]:
    """Train from a composed config; returns the final callback metrics as floats (with ``test/*`` after a test)."""
    _quiet()
    interrupt = GracefulInterrupt()
    interrupt.install()  # Ctrl-C / SIGTERM: stop now before training, save last.ckpt during it
    try:
        return _train(cfg, interrupt)
    except (KeyboardInterrupt, SystemExit):  # a second signal (Lightning turns KeyboardInterrupt into exit 1)
        if interrupt.forced is not None:
            raise TrainingInterrupted(interrupt.forced, at_once=True) from None
        raise
    finally:
        interrupt.uninstall()


def _train(cfg: DictConfig, interrupt: GracefulInterrupt) -> dict[str, float]:
    _check_accelerator(cfg)
    _check_logger_packages(cfg)
    _check_before_training(cfg)
    threads = check_int("torch_threads", cfg.get("torch_threads"), low=1, optional=True)
    if threads:
        torch.set_num_threads(threads)
    pl.seed_everything(cfg.seed, workers=True)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, ckpt = _resume_checkpoint(cfg, out)  # a bad resume= / ckpt_path= fails before anything is written
    with trusting_code(True if cfg.get("trust_code") else None):  # what the checkpoint names: cutlight.specs rule,
        typed = spec_targets(OmegaConf.to_container(cfg.model, resolve=True))  # or what the user typed again
        check_specs({k: ckpt.get(k) for k in ("hyper_parameters", "cutlight_networks")}, f"checkpoint '{ckpt_path}'",
                    allowed=typed)
    datamodule = _instantiate(cfg.data, "data")
    with trusting_code():  # the config the user typed is the user's own code
        model = _instantiate(cfg.model, "model")
    if ckpt_path and hasattr(model, "check_checkpoint"):  # another architecture: refused before the folder is linked
        model.check_checkpoint(ckpt, ckpt_path)
    resumed = _continue_run(ckpt_path, ckpt, out) if ckpt_path else {}
    del ckpt
    _save_config(cfg, out)
    _continue_wandb_run(cfg, resumed)
    _name_wandb_run(cfg)

    if hasattr(model, "check_crop_size"):  # crop size against the networks, before the data files are checked
        model.check_crop_size(datamodule)
    callbacks = _instantiate_all(cfg.get("callbacks"), "callbacks") + [interrupt]
    loggers = _instantiate_all(cfg.get("logger"), "logger")
    trainer: pl.Trainer = _instantiate(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers or False)
    # one config tree per run: the composed config (W&B: the run's config panel), not also the module's and the
    # datamodule's hyperparameters, which are the same values flattened
    model._log_hyperparams = datamodule._log_hyperparams = False
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    before = {}
    if cfg.get("validate_before_fit") and not ckpt_path:
        # FID/KID of the untrained generator: the "before" numbers (reals are recomputed at fit start)
        before = {k: float(v) for k, v in trainer.validate(model, datamodule=datamodule, verbose=False)[0].items()}
    spawned = _trains_in_children(trainer)
    if spawned:
        interrupt.train_in_children()
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except TrainingInterrupted as stop:
        if trainer.is_global_zero:
            _report_summary(trainer, out, _final_metrics(trainer), before, title=f"cutlight run {stop}")
        raise
    except Exception:
        # ddp_spawn: the training processes stopped on the signal this process got too (their TrainingInterrupted
        # reaches this one as a failed child process); reported below
        if not (spawned and interrupt.requested is not None):
            raise
    # (a signal as the children were ending: they finished and saved; it is still reported)
    if spawned and (stop := interrupt.children_stopped(_checkpoint_dir(trainer, out))) is not None:
        _report_summary(trainer, out, _final_metrics(trainer), before, title=f"cutlight run {stop}")
        raise stop from None
    metrics = _final_metrics(trainer)
    _check_trained(trainer, model, out, metrics, before, resumed=bool(ckpt_path))
    tested = None
    if cfg.get("test_after_fit") and not trainer.fast_dev_run:
        ckpt, tested = _test_checkpoint(trainer)
        log.info("testing the %s", tested)
        model.results_dir = str(out)
        results = trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
        metrics.update({k: float(v) for k, v in results[0].items()})
    if trainer.is_global_zero:
        _report_summary(trainer, out, metrics, before, tested)
    for logger in loggers:
        if hasattr(logger, "log_image") and trainer.is_global_zero:  # W&B: close the run (next one starts fresh)
            logger.experiment.finish()
    return metrics


def _trains_in_children(trainer: pl.Trainer) -> bool:
    """``ddp_spawn`` / ``ddp_fork``: the fit runs in processes this one starts, not in this one."""
    return type(getattr(trainer.strategy, "launcher", None)).__name__ == "_MultiProcessingLauncher"


def _checkpoint_dir(trainer: pl.Trainer, out: Path) -> Path:
    """Where the checkpoint callback that keeps ``last.ckpt`` writes (the run's checkpoints folder)."""
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "save_last", False) and getattr(callback, "dirpath", None):
            return Path(callback.dirpath)
    return out / "checkpoints"


def _final_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}


def _check_trained(trainer: pl.Trainer, model: pl.LightningModule, out: Path, metrics: dict[str, float],
                   before: dict[str, float], resumed: bool) -> None:
    """No silent success: a fit that applied no update, or that ended skipping non-finite iterations, prints its
    summary and fails (``NothingTrainedError``)."""
    guard = getattr(model, "guard", None)
    # ddp_spawn / ddp_fork train in child processes: this process's guard saw no iteration, so it cannot judge
    judged = guard is not None and not trainer.fast_dev_run and not _trains_in_children(trainer)
    problem = training_problem(guard, resumed) if judged else None
    if problem:
        if trainer.is_global_zero:
            _report_summary(trainer, out, metrics, before, title="cutlight run FAILED (trained nothing usable)")
        raise NothingTrainedError(f"{problem}. Run folder: {out}")


def _report_summary(trainer: pl.Trainer, out: Path, metrics: dict[str, float], before: dict[str, float],
                    tested: str | None = None, title: str = "cutlight run finished") -> None:
    """The end-of-run summary on stdout and, as one record, in the run's log file (Hydra's ``<run>/train.log``)."""
    text = _summary(trainer, out, metrics, before, tested, title)
    print(text, flush=True)
    log_to_files(log.makeRecord(log.name, logging.INFO, __file__, 0, text.strip("\n"), None, None))  # printed once


def _summary(trainer: pl.Trainer, out: Path, metrics: dict[str, float], before: dict[str, float],
             tested: str | None = None, title: str = "cutlight run finished") -> str:
    """The end-of-run summary: the run's files and numbers, then what each callback reports (its ``summary()``:
    label -> text), in the callbacks' order."""
    lines = ["", "=" * 72, f"{title}: {out.resolve()}"]
    for logger in trainer.loggers:
        if logger.log_dir and (Path(logger.log_dir) / "metrics.csv").exists():
            lines.append(f"  metrics CSV:        {Path(logger.log_dir) / 'metrics.csv'}")
    guard = getattr(trainer.lightning_module, "guard", None)
    if guard is not None and guard.skipped:  # model.nonfinite.policy=skip: say how many updates were dropped
        lines.append(f"  non-finite iterations skipped: {guard.skipped} (train/nonfinite_skips)"
                     + (f"; the last {guard.consecutive} in a row: the run ended diverging" if guard.consecutive
                        else ""))
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.dirpath:
        lines.append(f"  checkpoints:        {ckpt.dirpath}")
    for key in ("val/fid", "val/kid"):
        if key in before and key in metrics:
            lines.append(f"  {key} (before training -> after): {before[key]:.4g} -> {metrics[key]:.4g}")
    shown = {k: v for k, v in metrics.items() if k.startswith(("val/", "perf/"))}
    if shown:
        lines.append("  final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
    note = _fid_feature_note(trainer.lightning_module, metrics)
    if note:
        lines.append(f"  {note}")
    if tested:
        lines.append(f"  test of the {tested}")
        shown = {k: v for k, v in metrics.items() if k.startswith("test/")}
        lines.append("  test: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
        if (out / RESULTS_MD).exists():
            lines.append(f"  test results table: {out / RESULTS_MD} (and {RESULTS_CSV})")
    for cb in trainer.callbacks:
        if callable(getattr(cb, "summary", None)):
            lines += [f"  {label + ':':<19} {text}" for label, text in cb.summary().items()]
    lines.append("=" * 72)
    return "\n".join(lines)


def _fid_feature_note(model, metrics: dict[str, float]) -> str:
    """A caveat for FID/KID computed on other Inception features than the standard 2048-d pool (``debug=tiny``:
    the first block's 64), so that such a number is not read as a standard FID."""
    settings = getattr(getattr(model, "hparams", None), "val_metrics", None)
    feature = settings.get("feature", 2048) if isinstance(settings, dict) else 2048
    if feature == 2048 or not any(k.endswith(("/fid", "/kid")) for k in metrics):
        return ""
    return (f"FID/KID above: on Inception's {feature}-d features (model.val_metrics.feature={feature}), not "
            "comparable with the standard 2048-d FID")


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix (bad value, bad file, diverged run): reported by their message alone
    (Hydra still marks the job failed, and ``cutlight.cli.run_record.RunRecord`` records the error)."""
    from omegaconf.errors import MissingMandatoryValue  # e.g. data=folder without data.root: names the key

    from ..checkpoint import CheckpointError
    from ..data.folder import ImageFileError
    from ..data.image_checks import ImageCheckError
    from ..lightning.base import ValidationDataError
    from ..lightning.reliability import NonFiniteError, NothingTrainedError
    from .run_lock import RunLockError

    return (ConfigValueError, MissingMandatoryValue, ImageCheckError, ImageFileError, CheckpointError,
            NonFiniteError, NothingTrainedError, ValidationDataError, RunLockError, FileNotFoundError,
            NotADirectoryError, UntrustedCodeError)


def _end_interrupted(cfg: DictConfig, err: BaseException) -> SystemExit:
    """A run stopped by a signal (or ``sys.exit``) ends the process without Hydra's job end: close its
    ``summary.json`` here (``interrupted`` / ``failed``, never left ``running``) and return the exit to raise
    (130 SIGINT, 143 SIGTERM)."""
    from .run_record import record_end

    if isinstance(err, TrainingInterrupted):
        code, fields = err.exit_code, {"signal": err.signal_name, "step": err.step, "checkpoint": err.checkpoint,
                                        "error": str(err)}
        print(f"{err}" + (f"; continue with resume={Path(cfg.output_dir).resolve()}" if err.checkpoint else ""),
              file=sys.stderr, flush=True)
    elif isinstance(err, KeyboardInterrupt):
        code, fields = 130, {"signal": "SIGINT", "error": "KeyboardInterrupt (stopped at once, nothing saved)"}
    else:  # SystemExit
        code, fields = err.code, {"error": f"exited with status {err.code}"}
    state = "interrupted" if "signal" in fields else ("finished" if code in (0, None) else "failed")
    try:
        record_end(cfg.output_dir, state, **fields)
    except Exception as e:  # noqa: BLE001 - the exit status must still be right
        log.error("could not update summary.json: %s", e)
    return SystemExit(code)


@hydra.main(version_base="1.3", config_path="pkg://cutlight.conf", config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except _expected_errors() as err:  # the message says it all: no traceback through Lightning's loops
        raise err.with_traceback(None) from None
    except (TrainingInterrupted, KeyboardInterrupt, SystemExit) as err:
        raise _end_interrupted(cfg, err) from None
    return metrics.get(cfg.get("optimized_metric") or "", None)


RENAMED_GROUPS = {"loss": "objective"}  # the config groups renamed in 0.2 (loss= was an alias of nothing)


def renamed_group_error(argv: list[str]) -> str | None:
    """The message for a command-line override of a renamed config group (``loss=cut``), or None."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key in RENAMED_GROUPS:
            new = RENAMED_GROUPS[key]
            return (f"cutlight-train: error: the config group {key}= is now {new}= (write {new}={value}; in configs: "
                    f"'- override /{new}: ...', and the node is still model.objective)")
    return None


def main() -> float | None:
    """``cutlight-train``: Hydra's command line, after refusing renamed config groups with their new name."""
    message = renamed_group_error(sys.argv[1:])
    if message:
        print(message, file=sys.stderr)
        raise SystemExit(2)
    return _hydra_main()


if __name__ == "__main__":
    main()
