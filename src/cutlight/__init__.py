"""cutlight: contrastive unpaired image-to-image translation (CUT, FastCUT) for PyTorch Lightning.

Layers, each importing only the ones below it (checked by import-linter, ``[tool.importlinter]`` in pyproject.toml):

```
cli/          the commands train, translate, evaluate, export, analyze, report (Hydra: train only)
lightning/    TranslationModule and the method modules, callbacks/ (one file each), run folders, resuming
inference/    using a trained generator without the training config: loading, any-size translation, folders of
              files, FID/KID of folders, the HTML gallery, export, the analysis figures
reports/      what runs left on disk: metrics CSV, summary.json, sweep tables and figures (the curve plot)
core          networks/, losses.py, objectives/, optim.py, data/, metrics/, and the helpers checks.py (argument
              checks), specs.py (``_target_`` specs: the one dotted-path importer), checkpoint.py (reading
              checkpoint files), viz.py (similarity maps, feature PCA)
```

The core is plain PyTorch (Lightning for the DataModules only); ``CUTModule``, the DataModules and the inference
functions are imported lazily from the package root.
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
    "translate_folder": ("cutlight.inference", "translate_folder"),
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
