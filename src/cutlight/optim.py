"""The papers' optimizer and learning-rate recipe in plain PyTorch.

CUT, FastCUT and CycleGAN train with Adam (lr 2e-4, betas (0.5, 0.999)) and a learning rate that stays constant
for ``n_epochs`` epochs, then decays linearly towards zero over ``n_epochs_decay`` epochs (stepped once per epoch).
An optional linear warm-up over the first ``warmup_iters`` iterations (:func:`apply_warmup`; 0 in the papers)
scales that schedule from 1/``warmup_iters`` up to 1.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping

import torch

from .checks import ConfigValueError, check_number

ADAM_DEFAULTS = {"lr": 2e-4, "betas": (0.5, 0.999), "fused": None}


def linear_decay(epoch: int, n_epochs: int, n_epochs_decay: int) -> float:
    """LR multiplier after ``epoch`` finished epochs: 1 for ``n_epochs``, then linear towards 0 over
    ``n_epochs_decay`` (the reference's rule: 1 - max(0, epoch + 1 - n_epochs) / (n_epochs_decay + 1))."""
    return 1.0 - max(0, epoch + 1 - n_epochs) / float(n_epochs_decay + 1)


def apply_warmup(optimizers: Iterable[torch.optim.Optimizer], schedulers: Iterable[torch.optim.lr_scheduler.LRScheduler],
                 step: int, warmup_iters: int) -> None:
    """Call before optimization step ``step`` (0-based, counted over the whole run): sets every parameter group's
    learning rate to the schedule's (``scheduler.get_last_lr()``) times ``min(1, (step + 1) / warmup_iters)``.

    A no-op when ``warmup_iters`` is 0 and after the warm-up (at step ``warmup_iters - 1`` the factor is 1, so the
    schedule's rate is back in place; an epoch-end ``scheduler.step()`` during the warm-up sets the unscaled rate,
    which the next call scales again). It depends only on ``step``, so a resumed run gets the same rates.
    """
    if warmup_iters <= 0 or step >= warmup_iters:
        return
    factor = (step + 1) / warmup_iters
    for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
            group["lr"] = lr * factor


def check_adam_kwargs(kwargs: dict) -> dict:
    """The papers' defaults updated with ``kwargs``, each value checked (``ConfigValueError`` naming the key and the
    valid range: a positive finite ``lr``, ``betas`` in [0, 1), non-negative ``eps`` and ``weight_decay``)."""
    kwargs = {**ADAM_DEFAULTS, **dict(kwargs)}
    known = [k for k in inspect.signature(torch.optim.Adam).parameters if k != "params"]
    for key in kwargs:
        if key not in known:
            raise ConfigValueError(key, kwargs[key], f"the name of a torch.optim.Adam keyword ({', '.join(known)})")
    kwargs["lr"] = check_number("lr", kwargs["lr"], low=0, low_open=True, example=ADAM_DEFAULTS["lr"])
    betas = kwargs["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ConfigValueError("betas", betas, "two numbers in [0, 1), e.g. [0.5, 0.999]")
    kwargs["betas"] = tuple(check_number(f"betas[{i}]", b, low=0, high=1, high_open=True) for i, b in enumerate(betas))
    for key in ("eps", "weight_decay"):
        if key in kwargs:
            kwargs[key] = check_number(key, kwargs[key], low=0)
    if kwargs["fused"] not in (None, True, False):
        raise ConfigValueError("fused", kwargs["fused"], "true, false or null (fused on CUDA and CPU)")
    return kwargs


def adam(params: Iterable[torch.nn.Parameter], device: torch.device | str = "cpu", **kwargs) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the papers' defaults; ``kwargs`` override them (``torch.optim.Adam`` keywords,
    checked by :func:`check_adam_kwargs`).

    ``fused=None`` selects the fused implementation on CUDA and CPU (one kernel for all parameters; on CPU about
    8x faster than the per-parameter loop) and PyTorch's default elsewhere.
    """
    kwargs = check_adam_kwargs(kwargs)
    if kwargs["fused"] is None:
        kwargs["fused"] = torch.device(device).type in ("cuda", "cpu")
    return torch.optim.Adam(list(params), **kwargs)


def build_optimizers(
    groups: Mapping[str, tuple[Iterable[torch.nn.Parameter], Mapping]],
    n_epochs: int,
    n_epochs_decay: int,
    device: torch.device | str = "cpu",
) -> tuple[list[torch.optim.Optimizer], list[torch.optim.lr_scheduler.LambdaLR]]:
    """``([opt, ...], [sched, ...])`` in the order of ``groups`` (name -> (parameters, Adam keywords over the
    papers' defaults)), each with the ``linear_decay`` schedule (call ``scheduler.step()`` once per epoch).

    E.g. CUT: ``{"generator": (G and MLP-head parameters, {}), "discriminator": (D parameters, {})}`` (one Adam
    for G and the heads: Adam's state is per parameter, so it equals separate ones with the same settings).
    """
    optimizers = [adam(params, device, **dict(kwargs)) for params, kwargs in groups.values()]
    schedulers = [
        torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: linear_decay(epoch, n_epochs, n_epochs_decay))
        for opt in optimizers
    ]
    return optimizers, schedulers
