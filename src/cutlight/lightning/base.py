"""``TranslationModule``: the one LightningModule of every method.

The method is its objective (``cutlight.objectives``, see ``objectives/contract.py``): the module builds the
objective's networks by role from the model nodes ``generator`` / ``discriminator`` / ``sampler`` (keywords,
``_target_`` specs or ``nn.Module`` instances) and registers each under its role's name (state-dict prefixes
``generator.``, ``gen_a.``, ...), runs ``objective.iteration`` with the optimizers the objective declares, and
does the rest the same way for every method:

- manual optimization with one Adam per declared optimizer (``cutlight.optim``; the module's ``optimizer``
  keywords, under the objective's own per optimizer), the epoch-based schedule (constant, then linear decay)
  stepped at each epoch end, scaled by a linear warm-up over the first ``warmup_iters`` iterations when that
  hyperparameter is > 0 (``cutlight.optim.apply_warmup``); training stops when the schedule ends (the trainer's
  ``max_epochs`` is capped at ``n_epochs + n_epochs_decay``; -1 or None mean "the schedule");
- validation FID/KID through a ``cutlight.metrics.Evaluator`` (real statistics computed once per fit);
- a test stage: ``trainer.test`` scores the datamodule's test loaders (``[source images, real target images]``)
  the same way, logs ``test/fid``, ``test/kid``, ``test/kid_std`` and adds a row (checkpoint, time, every
  ``test/*`` metric, e.g. the built-in score from ``callbacks.TranslationScore``) to ``test_results.csv`` /
  ``test_results.md`` in ``results_dir`` (default: the run directory, ``cutlight.lightning.rundir.run_dir``);
- translation with the role the objective names for A -> B (``translator``): ``forward`` and ``predict_step``
  (any image size); channels-last inputs; ``torch.compile``;
- logging: ``train/<loss>`` per batch, ``train/lr``, ``val/fid``, ``val/kid``, ``val/kid_std``, and ``step`` =
  training batches done, so logger x-axes and checkpoint names count batches (see ``rundir``);
- checks at setup that the datamodule's ``input_nc`` / ``output_nc`` (after its ``direction``) match the generator.
- reliability (``cutlight.lightning.reliability``): every iteration's losses and gradients are checked for NaN /
  infinity (hyperparameter ``nonfinite``: ``{"policy": "stop" | "skip", "max_skips": N}``; a non-finite generator
  never gets validation numbers logged); checkpoints carry the RNG states and the data position, so a run resumed
  from any checkpoint, also mid-epoch, continues exactly as it would have; the training crop is checked against
  the networks before the first step (``data.crop_size``), and so is what validation needs
  (``datamodule.num_eval_images``: FID/KID at least 2 images per side, grids one: ``ValidationDataError``).
- checkpoints also say, under ``"cutlight_networks"``, which role translates A -> B (and B -> A) and each role's
  constructor keywords (``_target_`` included), so the generators load without the objective.

Networks are built eagerly in ``__init__`` (DDP wrapping, optimizer creation and checkpoint loading need every
parameter before the first step).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from ..checkpoint import CheckpointError, read_checkpoint, state_dict_mismatch
from ..checks import ConfigValueError, check_input_size, check_int, check_settings
from ..data.resumable import note_batch
from ..inference import pad_to_multiple, translate_tensor
from ..metrics import Evaluator
from ..objectives import CUTObjective, Objective, build_networks
from ..objectives.contract import optimizer_parameters
from ..optim import apply_warmup, build_optimizers, check_adam_kwargs
from ..specs import build, check_specs, code_trusted, trusting_code
from .reliability import NonFiniteError, NonFiniteGuard, restore_resume_state, resume_loggers, resume_state
from .rundir import batches_done, log_step, now, run_dir, write_test_results

log = logging.getLogger(__name__)

DEFAULT_METRICS = {"fid": True, "kid": True, "feature": 2048, "antialias": True, "kid_subset_size": 1000,
                   "extractor": "inception"}


class ValidationDataError(ValueError):
    """The validation or test split cannot give what its metrics need (too few images per side)."""


def plain(value: Any) -> Any:
    """Hyperparameters as plain Python containers (checkpoints load with ``weights_only=True``)."""
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (hasattr(value, "__iter__") and not isinstance(value, (str, bytes))):
        return [plain(v) for v in value]
    return value


def network(spec: dict | nn.Module | None, default: type, name: str, **extra) -> nn.Module:
    """A network from a spec (``{"_target_": "pkg.Class", **kwargs}``, ``default`` without ``_target_``), or the
    ``nn.Module`` instance itself."""
    if isinstance(spec, nn.Module):
        return spec
    return build(spec, default, name, **extra)


class TranslationModule(pl.LightningModule):
    """Any method (see the module docstring) with manual optimization.

    Args:
        generator: keywords of the generator role(s) (``ResnetGenerator`` unless the objective's role says another
            class), or ``{"_target_": "pkg.Class", ...}`` for another generator class (it must follow the generator
            protocol: ``forward(x)``, ``forward_with_features(x, layers)``, ``encode(x, layers)``,
            ``feature_channels(layers)``, ``input_nc``, ``output_nc``, ``size_multiple``), or an ``nn.Module``
            instance for a method with one generator (not saved in the hyperparameters: pass it again to
            ``load_from_checkpoint``). ``input_nc`` / ``output_nc`` are those of the A -> B generator; a B -> A
            generator gets them swapped.
        discriminator: keywords of the discriminator role(s) (``PatchDiscriminator`` by default), a ``_target_``
            spec, or an instance (any image -> logits). A two-domain method sets each one's ``input_nc``.
        sampler: keywords of the MLP-head role(s) other than ``in_channels`` (taken from the generator), a
            ``_target_`` spec (called with ``in_channels=...``), or an instance; unused by methods without heads.
        objective: the method: keywords of ``default_objective`` (``CUTObjective`` here), or a ``_target_`` spec
            of any ``cutlight.objectives.Objective`` (the ``objective`` config group).
        optimizer: ``torch.optim.Adam`` keywords for every optimizer the objective declares (defaults: lr 2e-4,
            betas (0.5, 0.999), ``fused: null`` = fused on CUDA and CPU); an objective may set its own per optimizer.
        n_epochs / n_epochs_decay: constant learning rate, then linear decay to zero; training stops after both.
        warmup_iters: scale the learning rate linearly from 1/warmup_iters to 1 over the first ``warmup_iters``
            iterations (0: off, the papers' recipe; see ``cutlight.optim.apply_warmup``).
        val_metrics: ``True`` (FID/KID when the Inception weights are present), a dict of settings (see
            ``DEFAULT_METRICS``; ``extractor`` may be a ``_target_`` spec), or ``False``.
        channels_last: keep networks and inputs in channels-last memory format.
        compile: ``torch.compile`` the networks in place (state-dict keys unchanged).
        nonfinite: what a NaN / infinite loss or gradient does (``NonFiniteGuard`` keywords): ``policy`` ``stop``
            (default: raise ``NonFiniteError``, the bad update not applied) or ``skip`` (drop the iteration, stop
            after ``max_skips`` in a row; default 10).

    Batches: ``{"A": (B, C, H, W), "B": (B, C, H, W)}`` in [-1, 1] for training; validation batches come from
    two loaders, ``{"image": ...}`` of A images to translate (index 0) and real B images (index 1).
    """

    default_objective: type[Objective] = CUTObjective

    def __init__(
        self,
        generator: dict | nn.Module | None = None,
        discriminator: dict | nn.Module | None = None,
        sampler: dict | nn.Module | None = None,
        objective: dict | None = None,
        optimizer: dict | None = None,
        n_epochs: int = 200,
        n_epochs_decay: int = 200,
        warmup_iters: int = 0,
        val_metrics: dict | bool | None = True,
        channels_last: bool = False,
        compile: bool = False,
        nonfinite: dict | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.evaluator: Evaluator | None = None  # a plain object: never in state dicts or DDP buckets
        self._metrics_unavailable = False  # val_metrics=True without Inception weights: warned once
        self.results_dir: str | None = None  # where on_test_end writes test_results.*; None: the run directory
        self.results_paths: tuple | None = None  # (csv, md) written by the last trainer.test
        self._guard: NonFiniteGuard | None = None
        self._resume: dict | None = None  # checkpoint["cutlight"] of a resumed fit, applied at train start
        self._resumed_loggers = False
        self._trust_code = code_trusted()  # the validation extractor, built later, is trusted as the networks were
        check_specs(plain(val_metrics), "val_metrics")  # refused now, not when validation first runs

        check_settings("optimizer", check_adam_kwargs, plain(optimizer or {}))
        nonfinite = plain(nonfinite or {})
        check_settings("nonfinite", lambda kw: NonFiniteGuard(**kw), nonfinite)
        check_int("n_epochs", n_epochs, low=0)
        check_int("n_epochs_decay", n_epochs_decay, low=0)
        check_int("warmup_iters", warmup_iters, low=0)
        if n_epochs + n_epochs_decay < 1:
            raise ConfigValueError("n_epochs", n_epochs, "n_epochs + n_epochs_decay >= 1 (the training length)")
        specs = {"generator": generator, "discriminator": discriminator, "sampler": sampler}
        specs = {k: v if isinstance(v, nn.Module) else plain(v or {}) for k, v in specs.items()}
        self.save_hyperparameters({
            **{k: v for k, v in specs.items() if not isinstance(v, nn.Module)},
            "objective": plain(objective or {}), "optimizer": plain(optimizer or {}), "n_epochs": n_epochs,
            "n_epochs_decay": n_epochs_decay, "warmup_iters": warmup_iters, "val_metrics": plain(val_metrics),
            "channels_last": channels_last, "compile": compile, "nonfinite": nonfinite,
        })
        self.objective = network(plain(objective or {}), self.default_objective, "objective")
        self.check_objective(self.objective)
        for group in self.objective.optimizers().values():
            if group.settings:  # the objective's own Adam keywords for this optimizer, over the module's
                check_settings("optimizer", check_adam_kwargs, {**plain(optimizer or {}), **plain(group.settings)})
        nets, self.network_configs = build_networks(self.objective, specs)
        for role, net in nets.items():
            if not role.isidentifier() or hasattr(type(self), role) or role == "objective":
                raise ValueError(f"{type(self.objective).__name__} names a network {role!r}, which is not a free "
                                 f"attribute name of {type(self).__name__}; rename the role")
            self.add_module(role, net)
        self.role_names = tuple(nets)
        self.finish_networks(*nets.values())

    def check_objective(self, objective: nn.Module) -> None:
        """Raise ``TypeError`` unless ``objective`` follows the method contract (a subclass may ask for more)."""
        if not isinstance(objective, Objective):
            raise TypeError(f"the objective must be a cutlight.objectives.Objective (networks by role, optimizers, "
                            f"one iteration); got {type(objective).__name__}")

    # ------------------------------------------------------------------ networks by role
    @property
    def nets(self) -> dict[str, nn.Module]:
        """Role -> network, as the objective declares them."""
        return {role: getattr(self, role) for role in self.role_names}

    def translator_role(self, direction: str = "AtoB") -> str:
        """The role that translates ``direction`` (``AtoB`` or ``BtoA``)."""
        translators = self.objective.translators()
        if direction not in translators:
            raise ValueError(f"{type(self.objective).__name__} has no generator for direction {direction!r}; it "
                             f"translates {', '.join(translators)}")
        return translators[direction]

    @property
    def translator(self) -> nn.Module:
        """The A -> B generator: what validation, prediction and export use."""
        return getattr(self, self.translator_role("AtoB"))

    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) in [-1, 1] -> (B, C_out, H, W), the direction validated and predicted (A -> B)."""
        return self.translator(x)

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opts = self.optimizers()
        optimizers = dict(zip(self.objective.optimizers(), opts if isinstance(opts, list) else [opts], strict=True))
        real = {"A": self.prepare(batch["A"]), "B": self.prepare(batch["B"])}
        losses = self.objective.iteration(self.nets, real, optimizers, backward=self.manual_backward)
        batch_size = real["A"].shape[0]
        self.log_losses(losses, batch_size=batch_size)
        for name, key in self.objective.progress.items():
            if key in losses:
                self.log(f"train/{name}", losses[key], prog_bar=True, logger=False, batch_size=batch_size)

    # ------------------------------------------------------------------ shared setup
    def finish_networks(self, *nets: nn.Module) -> None:
        """Channels-last memory format and ``module.compile()`` (state-dict keys unchanged) per the hparams."""
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)
        if self.hparams.compile:
            for net in nets:
                net.compile()

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    @property
    def size_multiple(self) -> int:
        """``translate`` needs H and W divisible by this: the A -> B generator's (1 when it does not say)."""
        return int(getattr(self.translator, "size_multiple", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``translate`` for any H and W: reflect-padded at the bottom and right to ``size_multiple`` and cropped
        back (a no-op at training sizes), so full-size images of any shape validate and predict."""
        h, w = x.shape[-2:]
        return self.translate(self.prepare(pad_to_multiple(x, self.size_multiple)))[..., :h, :w]

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        """One Adam (with the schedule) per optimizer the objective declares, in its order."""
        params = optimizer_parameters(self.objective, self.nets)
        groups = {name: (params[name], {**self.hparams.optimizer, **plain(group.settings)})
                  for name, group in self.objective.optimizers().items()}
        optimizers, schedulers = build_optimizers(groups, self.hparams.n_epochs, self.hparams.n_epochs_decay,
                                                  device=self.device)
        self.guard.attach(optimizers, [f"{name}-side" for name in groups])
        return optimizers, schedulers

    # ------------------------------------------------------------------ reliability
    @property
    def guard(self) -> NonFiniteGuard:
        """The non-finite guard, configured by the ``nonfinite`` hyperparameter."""
        if self._guard is None:
            self._guard = NonFiniteGuard(**(self.hparams.get("nonfinite") or {}))
        return self._guard

    def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        self.guard.note_loss(loss)  # the next optimizer step skips its update when this loss is not finite
        super().manual_backward(loss, *args, **kwargs)

    def input_networks(self) -> list[tuple[nn.Module, int]]:
        """(network, input channels) of the networks that see training crops: every generator and discriminator
        role (a discriminator that does not say its ``input_nc`` sees the A -> B generator's outputs)."""
        roles = self.objective.roles()
        out_nc = int(getattr(self.translator, "output_nc", 3))
        nets = []
        for name, net in self.nets.items():
            if roles[name].kind == "generator":
                nets.append((net, int(getattr(net, "input_nc", 3))))
            elif roles[name].kind == "discriminator":
                nets.append((net, int(getattr(net, "input_nc", out_nc))))
        return nets

    def _last_good_checkpoint(self) -> str:
        paths = [getattr(cb, "last_model_path", "") or getattr(cb, "best_model_path", "")
                 for cb in self.trainer.checkpoint_callbacks]
        paths = [p for p in paths if p]
        return f"'{paths[0]}'" if paths else "none was written"

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # the position a checkpoint written after this batch resumes from (see cutlight.data.resumable)
        last = batch_idx + 1 >= self.trainer.num_training_batches
        note_batch(self.trainer.train_dataloader, self.current_epoch, batch_idx, last)
        # the 0-based index of this batch over the run (batches_done counts it already here; restored on resume)
        apply_warmup(self.optimizers(), self.lr_schedulers(), batches_done(self.trainer) - 1,
                     int(self.hparams.get("warmup_iters") or 0))
        if self._resumed_loggers:
            resume_loggers(self.trainer)
            self._resumed_loggers = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["cutlight"] = resume_state(self, self.guard)
        roles = self.objective.roles()
        checkpoint["cutlight_networks"] = {
            "translators": dict(self.objective.translators()),  # direction -> role
            "heads": {r: role.features_of for r, role in roles.items() if role.features_of},  # head -> generator
            "nce_layers": plain(getattr(self.objective, "nce_layers", [])),
            "configs": plain(self.network_configs),  # role -> constructor keywords with _target_ (None: instance)
        }

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, trust_code: bool | None = None,
                             **kwargs: Any) -> TranslationModule:
        """Lightning's ``load_from_checkpoint`` (same arguments), with the checkpoint's hyperparameters (and an
        ``hparams_file``) checked by the trust rule of ``cutlight.specs`` before anything is built or imported:
        unless ``trust_code=True`` (or ``cutlight.specs.set_trust_code()``), every ``_target_`` must name a class
        of cutlight's networks, objectives or feature extractors, or a module prefix of ``CUTLIGHT_TRUSTED_MODULES``
        (raises ``cutlight.specs.UntrustedCodeError``, naming it). Keyword overrides are the caller's own."""
        with trusting_code(trust_code):
            if not code_trusted():
                if not isinstance(checkpoint_path, (str, os.PathLike)) or not os.path.isfile(checkpoint_path):
                    raise CheckpointError(f"cannot check {checkpoint_path!r} before loading it: pass a local file "
                                          "path, or trust_code=True for a source you trust")
                ckpt = read_checkpoint(checkpoint_path)  # weights_only: tensors and plain containers
                if isinstance(ckpt, dict):
                    check_specs({"hyper_parameters": ckpt.get("hyper_parameters")}, f"checkpoint '{checkpoint_path}'")
                hparams_file = kwargs.get("hparams_file")
                if hparams_file is not None:
                    import yaml

                    with open(hparams_file) as f:
                        check_specs(yaml.safe_load(f) or {}, f"hparams_file '{hparams_file}'")
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)

    def check_instances_given(self, checkpoint: dict) -> None:
        """Raise ``CheckpointError`` when ``checkpoint`` was trained with a network passed as an ``nn.Module``
        instance (its constructor is not in the checkpoint) and this module built that role from its default spec
        instead: ``load_from_checkpoint`` needs the instance again (otherwise a raw ``Missing key(s)``)."""
        saved = (checkpoint.get("cutlight_networks") or {}).get("configs") or {}
        missing = [role for role, config in saved.items()
                   if config is None and (self.network_configs or {}).get(role) is not None]
        if missing:
            given = ", ".join(f"{role}=<the same {role}>" for role in missing)
            raise CheckpointError(f"this checkpoint was trained with {', '.join(missing)} passed as an nn.Module "
                                  f"instance, which checkpoints do not store: pass {given} again, e.g. "
                                  f"{type(self).__name__}.load_from_checkpoint(path, {missing[0]}=MyNet(...))")

    def check_checkpoint(self, checkpoint: dict, path: object) -> None:
        """Raise ``CheckpointError`` naming ``path`` and the keys and shapes that differ when the weights of
        ``checkpoint`` do not fit this module (another architecture or method)."""
        mismatch = state_dict_mismatch(self.state_dict(), checkpoint.get("state_dict", {}))
        if mismatch:
            raise CheckpointError(f"checkpoint '{path}' was written for another architecture or method "
                                  f"({type(self).__name__} with these hyperparameters does not fit it): {mismatch}")

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.check_instances_given(checkpoint)
        if self._trainer is not None and self.strict_loading:  # trainer.fit / validate(ckpt_path=...)
            self.check_checkpoint(checkpoint, self._trainer.ckpt_path)
        self._resume = checkpoint.get("cutlight")

    def on_train_start(self) -> None:
        if self._resume is not None:  # after the loader is built (it draws nothing from the global RNG)
            restore_resume_state(self, self.guard, self._resume)
            self._resume, self._resumed_loggers = None, True

    @property
    def total_epochs(self) -> int:
        return self.hparams.n_epochs + self.hparams.n_epochs_decay

    def on_train_epoch_end(self) -> None:
        for scheduler in self.lr_schedulers():
            scheduler.step()

    def log_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """``train/<name>`` for every loss term, ``train/lr`` of the generator side; first the non-finite check
        (raises ``NonFiniteError``, or skips the logging of a skipped iteration)."""
        loop = self.trainer.fit_loop.epoch_loop
        where = f"step {batches_done(self.trainer)} (epoch {self.current_epoch}, batch {loop.batch_idx})"
        if not self.guard.after_iteration(losses, where, self._last_good_checkpoint()):
            self.log("train/nonfinite_skips", float(self.guard.skipped), batch_size=batch_size)
            log_step(self)  # the row of the skipped batch, at its step like every other row
            return
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=batch_size)
        self.log("train/lr", self.optimizers()[0].param_groups[0]["lr"], batch_size=batch_size)
        log_step(self)

    # ------------------------------------------------------------------ validation metrics
    def _build_evaluator(self) -> None:
        cfg = self.hparams.val_metrics
        if self.evaluator is not None or cfg in (None, False) or self._metrics_unavailable:
            return
        settings = {**DEFAULT_METRICS, **(cfg if isinstance(cfg, dict) else {})}
        if not settings.get("fid") and not settings.get("kid"):  # {fid: false, kid: false}: off, like false
            return
        try:
            with trusting_code(self._trust_code):
                self.evaluator = Evaluator(**settings)
        except RuntimeError as err:  # the standard Inception weights are not on this machine
            if settings.get("weights_path"):
                raise
            self._metrics_unavailable = True
            log.warning("validation without FID/KID: %s. Run `make fid-weights` (or `python -m "
                        "cutlight.metrics.inception_weights`) once to enable them.", str(err).split(";")[0])

    def _check_channels(self) -> None:
        """The datamodule's source/target channels (after its ``direction``) are the generator's in/out channels."""
        dm, gen = getattr(self.trainer, "datamodule", None), self.translator
        pairs = [(getattr(dm, k, None), getattr(gen, k, None)) for k in ("input_nc", "output_nc")]
        if any(want is not None and have is not None and want != have for want, have in pairs):
            (data_in, gen_in), (data_out, gen_out) = pairs
            raise ValueError(
                f"the data gives {data_in}-channel source and {data_out}-channel target images "
                f"(direction={getattr(dm, 'direction', 'AtoB')!r}) but the generator maps {gen_in} to {gen_out} "
                f"channels; build it with input_nc={data_in}, output_nc={data_out} and the discriminator with "
                f"input_nc={data_out} (Hydra: model.generator.input_nc={data_in} model.generator.output_nc="
                f"{data_out} model.discriminator.input_nc={data_out})"
            )

    def setup(self, stage: str) -> None:
        if stage == "fit":  # training ends with the schedule (the learning rate is zero after it)
            loop = self.trainer.fit_loop
            if loop.max_epochs is None or loop.max_epochs < 0 or loop.max_epochs > self.total_epochs:
                loop.max_epochs = self.total_epochs
        if stage in ("fit", "validate"):
            self.check_crop_size(self.trainer.datamodule)
        if stage in ("fit", "validate", "test"):
            self._build_evaluator()
            self._check_eval_images(stage)
        self._check_channels()

    def _check_eval_images(self, stage: str) -> None:
        """Before the first step: the validation (``fit`` / ``validate``) or test split holds what its metrics need,
        counted without loading (``datamodule.num_eval_images``): FID/KID at least 2 images per side, image grids
        one. ``ValidationDataError`` gives both counts, the folders and the settings to change."""
        dm = getattr(self.trainer, "datamodule", None)
        if not callable(getattr(dm, "num_eval_images", None)):
            return
        split = "val" if stage in ("fit", "validate") else "test"
        n_a, n_b = dm.num_eval_images(split)
        if (n_a, n_b) == (0, 0):  # no such split: nothing runs on it
            return
        need, what = (2, "FID/KID need at least 2 images per side") if self.evaluator is not None else \
            (1, "validation and its image grids need at least one image per side")
        if min(n_a, n_b) >= need:
            return
        key = "test" if split == "test" and getattr(dm, "test_explicit", False) else "val"  # as num_eval_images
        folders = [getattr(dm, f"{key}_dir_{side}", None) or getattr(dm, f"path_{side}", None) for side in "ab"]
        cap = getattr(dm, "max_val_images", None)
        fixes = [f"add images to the {split} folders"]
        if cap is not None and cap != float("inf"):
            fixes.append(f"raise data.max_val_images (now {cap})")
        if self.evaluator is not None:
            fixes.append("or turn the metrics off with model.val_metrics=false")
        raise ValidationDataError(
            f"the {split} split has {n_a} source image(s) ({folders[0]}) and {n_b} target image(s) ({folders[1]}): "
            f"{what}, and would fail at the first validation, after training. Fix: {'; '.join(fixes)}")

    def check_crop_size(self, datamodule: object) -> None:
        """Raise ``ConfigValueError`` naming ``data.crop_size`` unless every network of ``input_networks`` takes
        the datamodule's ``crop_size`` (probed on the meta device; nothing to check without a ``crop_size``)."""
        crop = getattr(datamodule, "crop_size", None)
        if crop is not None:
            nets = self.input_networks()
            multiple = max([int(getattr(n, "size_multiple", 1)) for n, _ in nets] or [1])
            check_input_size("data.crop_size", crop, nets, multiple)

    def on_fit_start(self) -> None:
        # real statistics are computed once per fit: drop any left by an earlier fit or ``trainer.validate``
        if self.evaluator is not None:
            self.evaluator.reset(reals=True)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Loader 0: source images to translate; loader 1: real target images (fed once per fit)."""
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        if dataloader_idx == 0:
            fake = self(batch["image"])
            self._val_finite = self._val_finite & torch.isfinite(fake).all()  # read once, at the epoch end
            self.evaluator.update(fake, real=False)
        elif not self._reals_fed:
            self.evaluator.update(batch["image"], real=True)

    def on_validation_epoch_start(self) -> None:
        self._reals_fed = self.evaluator is not None and self.evaluator.has_reals
        self._val_finite = torch.ones((), dtype=torch.bool, device=self.device)

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None or self.trainer.sanity_checking:
            return
        finite = self.trainer.strategy.reduce_boolean_decision(bool(self._val_finite), all=True)
        if not finite:  # FID of black (NaN -> 0) images would look like a number: log none
            self.evaluator.reset(reals=False)
            message = (f"the generator produced non-finite (NaN or infinite) images in validation at step "
                       f"{batches_done(self.trainer)}: no val/* metrics logged")
            if self.trainer.state.fn == "fit" and self.guard.policy == "stop":
                raise NonFiniteError(f"{message}. Training stopped (model.nonfinite.policy=stop). Last good "
                                     f"checkpoint: {self._last_good_checkpoint()}.")
            log.error(message)
            return
        values = self.evaluator.compute()  # a collective under DDP: every rank calls it
        self.evaluator.reset(reals=False)
        self.log_dict({f"val/{k}": v.float() for k, v in values.items()}, sync_dist=False)
        if self.trainer.state.fn == "fit":
            log_step(self)  # at "batches done", like the training rows (Lightning would use the batch index)

    # ------------------------------------------------------------------ test
    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        """As ``validation_step``, on the test batches: source images (``batch["side"]`` 0, or loader 0) and real
        target images (side 1, or loader 1). cutlight's data modules give one loader with ``side`` (one result)."""
        self.validation_step(batch, batch_idx, int(batch.get("side", dataloader_idx)))

    def on_test_epoch_start(self) -> None:
        if self.evaluator is not None:
            self.evaluator.reset(reals=True)  # the test split's reals, not the validation ones
        self._reals_fed = False
        self._val_finite = torch.ones((), dtype=torch.bool, device=self.device)

    def on_test_epoch_end(self) -> None:
        if self.evaluator is None:
            return
        if not self.trainer.strategy.reduce_boolean_decision(bool(self._val_finite), all=True):
            self.evaluator.reset(reals=True)
            log.error("the generator produced non-finite (NaN or infinite) images in the test: no test/* metrics")
            return
        values = self.evaluator.compute()  # a collective under DDP
        self.evaluator.reset(reals=True)  # a later validation computes its own reals again
        self.log_dict({f"test/{k}": v.float() for k, v in values.items()}, sync_dist=False)

    def on_test_end(self) -> None:
        """One row per ``trainer.test`` in ``test_results.csv`` / ``.md``: checkpoint, time, ``test/*`` metrics."""
        if not self.trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in sorted(self.trainer.callback_metrics.items()) if k.startswith("test/")}
        row = {"checkpoint": self.trainer.ckpt_path or "weights in memory", "time": now(), **metrics}
        self.results_paths = write_test_results(self.results_dir or run_dir(self.trainer), row)
        log.info("test results: %s", self.results_paths[1])

    @torch.no_grad()
    def visuals(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Labelled image columns for grids (each (N, C, H, W) in [-1, 1]): the source, its translation and an
        example of the target domain. The first column is the source and the second its translation (the image
        grid's progress picture follows the second); the objective may give its own (``Objective.visuals``)."""
        columns = self.objective.visuals(self.nets, self.prepare(real_a), self.prepare(real_b))
        if columns is not None:
            return columns
        return {"input A": real_a, "translation G(A)": self(real_a), "target domain B": real_b}

    # ------------------------------------------------------------------ prediction
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Translate ``batch["image"]`` of any H, W (padded to ``size_multiple``, cropped back): returns
        ``{"image": (B, C_out, H, W) float32 in [-1, 1] (clamped: generators without a final tanh, e.g. SinCUT's, may leave the range), "path":
        [...] or None}`` (see ``TranslationWriter``)."""
        return {"image": translate_tensor(self, batch["image"]).clamp(-1, 1), "path": batch.get("path")}
