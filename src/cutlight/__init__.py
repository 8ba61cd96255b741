"""cutlight: contrastive unpaired image-to-image translation (CUT, FastCUT) for PyTorch Lightning.

The core (``cutlight.networks``, ``cutlight.losses``, ``cutlight.objectives``) is plain PyTorch; ``CUTModule`` and
``UnpairedDataModule`` (which need Lightning) are imported lazily from the package root.
"""

from .losses import PatchNCELoss, discriminator_loss, generator_loss, multilayer_patch_nce, patch_nce_loss
from .networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from .objectives import CUTObjective

__version__ = "0.1.0"  # the one source of truth: pyproject.toml reads it (tool.setuptools.dynamic)

_LAZY = {
    "CUTModule": ("cutlight.lightning", "CUTModule"),
    "CycleGANModule": ("cutlight.lightning", "CycleGANModule"),
    "TranslationModule": ("cutlight.lightning", "TranslationModule"),
    "UnpairedDataModule": ("cutlight.data", "UnpairedDataModule"),
    "BuiltinDataModule": ("cutlight.data", "BuiltinDataModule"),
    "SingleImageDataModule": ("cutlight.data", "SingleImageDataModule"),
    "load_generator": ("cutlight.inference", "load_generator"),
    "translate": ("cutlight.inference", "translate"),
    "translate_folder": ("cutlight.translate", "translate_folder"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'cutlight' has no attribute {name!r}")


__all__ = [
    "CUTObjective",
    "PatchDiscriminator",
    "PatchNCELoss",
    "PatchSampler",
    "ResnetGenerator",
    "discriminator_loss",
    "generator_loss",
    "multilayer_patch_nce",
    "patch_nce_loss",
    *_LAZY,
]
