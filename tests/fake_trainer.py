"""A stand-in for ``pl.Trainer`` and a LightningModule in the callbacks' unit tests: just the attributes the
callbacks read, so each callback is called directly, hook by hook, without a training loop."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


def fake_trainer(datamodule=None, callbacks=(), batches: int = 0, **extra) -> SimpleNamespace:
    """``batches``: training batches done (``cutlight.lightning.rundir.batches_done``)."""
    return SimpleNamespace(
        datamodule=datamodule, callbacks=list(callbacks), loggers=[], is_global_zero=True, sanity_checking=False,
        callback_metrics={}, fit_loop=SimpleNamespace(total_batch_idx=batches - 1),
        state=SimpleNamespace(fn="validate"), ckpt_path=None, **extra)


class FakeModule(nn.Module):
    """A one-conv "translation module": ``forward`` translates (B, C, H, W) -> (B, C, H, W); ``log`` and
    ``log_dict`` record what a callback logs."""

    size_multiple = 4

    def __init__(self, channels: int = 3, noise: float = 0.0) -> None:
        super().__init__()
        self.generator = nn.Conv2d(channels, channels, 3, padding=1)
        self.noise = noise
        self.logged: dict[str, float] = {}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def nets(self) -> dict[str, nn.Module]:
        return {"generator": self.generator}

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.generator(x))
        return y + self.noise * torch.randn_like(y) if self.noise else y

    def visuals(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"input A": real_a, "translation G(A)": self(real_a), "target domain B": real_b}

    def predict_step(self, batch, batch_idx):
        return {"image": self(batch["image"]), "path": batch.get("path")}

    def log(self, key: str, value, **kwargs) -> None:
        self.logged[key] = float(value)

    def log_dict(self, values: dict, **kwargs) -> None:
        self.logged.update({k: float(v) for k, v in values.items()})
