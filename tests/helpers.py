"""Shared builders for tests: tiny networks, data and feature extractor so Lightning runs take seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

import warm

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# Tolerance policy (tests/README.md explains it; every numeric comparison in the suite follows it)
#
# 1. Exactness claims (our networks equal the reference layouts, our iteration equals the straightforward one,
#    reference weights load and compute the same function) are proven in float64 with tight tolerances.
# 2. float32 checks compare against a float64 (or an independent float32) result with
#    ``atol = k * eps(dtype) * max|expected|``, ``k`` one of the constants below, chosen by the depth of the
#    computation (about 4 * layers * sqrt(terms per dot product), rounded up to a power of two). Never a
#    constant tuned on one machine: fp32 round-off depends on the CPU's kernels (vector width, oneDNN algorithm,
#    thread count); ``tests/run_kernel_matrix.sh`` runs the numeric tests under several of them.
# 3. Optimizer steps in float32 are compared by their losses and gradients before the step, never by weights
#    after Adam (Adam turns a round-off sign flip of a near-zero gradient into a full 2 * lr difference).
# 4. Identical computations (same ops, same shapes, same inputs) are compared exactly (``rtol=0, atol=0``).
# ---------------------------------------------------------------------------------------------------------------
K_OP = 16  # one elementwise op or a short reduction (a loss formula)
K_LAYER = 256  # one layer: a conv / norm / resampling over a few hundred terms
K_NETWORK = 4096  # a whole network forward or backward (tens of layers, dot products of up to a few thousand)


def scaled_atol(expected: torch.Tensor, k: float, dtype: torch.dtype | None = None) -> float:
    """``k * eps(dtype) * max|expected|`` (``k * eps`` for an all-zero ``expected``); ``dtype``: the precision
    of the computation under test (default: ``expected``'s)."""
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    return k * torch.finfo(dtype or expected.dtype).eps * (scale or 1.0)


def assert_scaled_close(actual: torch.Tensor, expected: torch.Tensor, k: float, msg: str = "") -> None:
    """``actual`` equals ``expected`` up to ``k`` units of round-off of the less precise of the two, at the scale
    of ``expected`` (see the policy above); ``expected`` is the reference (float64 where one is available)."""
    eps = max(torch.finfo(actual.dtype).eps, torch.finfo(expected.dtype).eps)
    dtype = actual.dtype if torch.finfo(actual.dtype).eps == eps else expected.dtype
    atol = scaled_atol(expected, k, dtype)
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol, rtol=0,
                               msg=lambda m: f"{msg}{': ' if msg else ''}{m} (k={k}, atol={atol:.3g})")


class TinyFeatureExtractor(nn.Module):
    """Small fixed random feature net for fast tests: uint8 (B, 3, H, W), any H, W -> float64 (B, num_features).

    Deterministic (weights from a seeded generator, float64 math); not a perceptual metric. Selected in configs
    by ``val_metrics.extractor: {_target_: helpers.TinyFeatureExtractor, num_features: 16}``.
    """

    def __init__(self, num_features: int = 16, seed: int = 0) -> None:
        super().__init__()
        self.num_features = num_features
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(num_features, 3, 4, 4, generator=g, dtype=torch.float64) / 4)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        if imgs.dtype != torch.uint8 or imgs.dim() != 4 or imgs.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W); got {imgs.dtype} {tuple(imgs.shape)}")
        x = imgs.to(torch.float64) / 127.5 - 1  # (B, 3, H, W) in [-1, 1]
        x = F.adaptive_avg_pool2d(x, 16)  # (B, 3, 16, 16)
        x = F.conv2d(x, self.weight, stride=4)  # (B, F, 4, 4)
        return torch.tanh(x).mean(dim=(2, 3))  # (B, F)


TINY_EXTRACTOR = {"_target_": "helpers.TinyFeatureExtractor", "num_features": 16}

TINY_MODEL = dict(
    generator={"ngf": 8, "n_blocks": 1},
    discriminator={"ndf": 8, "n_layers": 2},
    sampler={"mlp_dim": 16},
    objective={"num_patches": 16},
    n_epochs=1,
    n_epochs_decay=1,
    val_metrics={"extractor": TINY_EXTRACTOR},
)

# debug=tiny keeps the data group; on the built-in data the tests also make the generated dataset itself small
TINY_DATA = ["debug=tiny", "data.size=32", "data.num_train=8", "data.num_test=4"]
TINY_ARGS = [*TINY_DATA, "model.objective.num_patches=16", "model.sampler.mlp_dim=16"]  # CUT


def tiny_module(**overrides):
    from cutlight import CUTModule

    kwargs = {**TINY_MODEL, **overrides}
    return CUTModule(**kwargs)


def tiny_data(tmp_path, size=32, num_train=6, num_test=4, **kw):
    from cutlight import BuiltinDataModule

    return BuiltinDataModule(size=size, num_train=num_train, num_test=num_test, cache_dir=str(tmp_path / "cache"),
                             val_batch_size=4, **kw)


def tiny_trainer(tmp_path, **kw):
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    default_root_dir=str(tmp_path))
    return pl.Trainer(**{**defaults, **kw})


def run_entrypoint(args, tmp_path, timeout=300, module="cutlight.cli.train", env=None):
    """``python -m cutlight.cli.train ARGS`` in ``tmp_path`` with a private data cache, a minimal environment and
    the code under test first on the path (``warm.start_env``), then tests/ (for ``helpers.TinyFeatureExtractor``)."""
    env = warm.start_env({"PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "CUTLIGHT_CACHE": str(tmp_path / "cache"),
                          "PATH": "/usr/bin:/bin", "HOME": str(Path.home()), **(env or {})})
    return warm.run_module(module, args, cwd=tmp_path, env=env, timeout=timeout)


class PlainGenerator(nn.Module):
    """A user-defined generator that follows cutlight's generator protocol (3x3 convs; layer i = output of conv i),
    for testing ``_target_`` selection: ``generator: {_target_: helpers.PlainGenerator, width: 6}``."""

    size_multiple = 1

    def __init__(self, input_nc: int = 3, output_nc: int = 3, width: int = 8) -> None:
        super().__init__()
        self.input_nc, self.output_nc = input_nc, output_nc
        self.convs = nn.ModuleList([nn.Conv2d(input_nc, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1),
                                    nn.Conv2d(width, output_nc, 3, padding=1)])

    def forward_with_features(self, x, layers):
        feats = {}
        for i, conv in enumerate(self.convs):
            x = conv(x) if i == len(self.convs) - 1 else torch.relu(conv(x))
            feats[i] = x
        return torch.tanh(x), [feats[i] for i in layers]

    def forward(self, x):
        return self.forward_with_features(x, [])[0]

    def encode(self, x, layers):
        return self.forward_with_features(x, layers)[1]

    def feature_channels(self, layers):
        return [self.convs[i].out_channels for i in layers]
