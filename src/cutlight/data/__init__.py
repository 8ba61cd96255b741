"""Data for unpaired translation: image loading, transforms, datasets, DataModules, built-in data.

```
folder.py         list_images (recursive, sorted, logged skips), load_image: the one image loader (every mode)
checks.py         checking image files before training (verify=header/full), sizes from headers
settings.py       type checks of the DataModules' settings (paths, flags, channel counts) naming the key
transforms.py     TrainTransform (preprocess modes, random crop/flip, [-1, 1]), EvalTransform (resize only)
datasets.py       UnpairedImageDataset (training pairs), SingleFolderDataset (validation images)
direction.py      orient: AtoB / BtoA as a swap of the two domains, for every DataModule
shapes.py         the synthetic "shapes" world: layouts, rendering, shapes_score
builtin.py        generation and cache of the built-in dataset, score_domains
single_image.py   SinCUT: ZoomAndPatchDataset (zoomed patches of one image), FullImageDataset, load_full_image
builtin_pair.py   the built-in single-image pair (a landscape photo and a painting), generated on first use
datamodule.py     UnpairedDataModule, BuiltinDataModule   } the only modules here that need Lightning
single_image_datamodule.py  SingleImageDataModule         } (imported lazily)
```
"""

from cutlight.data.builtin import ensure_builtin_dataset, score_domains
from cutlight.data.datasets import SingleFolderDataset, UnpairedImageDataset
from cutlight.data.direction import DIRECTIONS, orient
from cutlight.data.folder import IMAGE_EXTENSIONS, list_images, load_image
from cutlight.data.shapes import shapes_score
from cutlight.data.transforms import PREPROCESS_CHOICES, EvalTransform, TrainTransform

_LIGHTNING = {"UnpairedDataModule": "datamodule", "BuiltinDataModule": "datamodule",
              "SingleImageDataModule": "single_image_datamodule"}


def __getattr__(name: str):
    if name in _LIGHTNING:
        import importlib

        return getattr(importlib.import_module(f"cutlight.data.{_LIGHTNING[name]}"), name)
    raise AttributeError(f"module 'cutlight.data' has no attribute {name!r}")


__all__ = [
    "DIRECTIONS",
    "IMAGE_EXTENSIONS",
    "PREPROCESS_CHOICES",
    "BuiltinDataModule",
    "EvalTransform",
    "SingleFolderDataset",
    "SingleImageDataModule",
    "TrainTransform",
    "UnpairedDataModule",
    "UnpairedImageDataset",
    "ensure_builtin_dataset",
    "list_images",
    "load_image",
    "orient",
    "score_domains",
    "shapes_score",
]
