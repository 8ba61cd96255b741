"""Shared builders for tests: tiny networks and data so Lightning runs take seconds on a CPU."""

from __future__ import annotations

import pytorch_lightning as pl

TINY_MODEL = dict(
    generator={"ngf": 8, "n_blocks": 1},
    discriminator={"ndf": 8, "n_layers": 2},
    sampler={"mlp_dim": 16},
    objective={"num_patches": 16},
    n_epochs=1,
    n_epochs_decay=1,
    val_metrics={"extractor": "tiny", "feature": 16},
)


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
