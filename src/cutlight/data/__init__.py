"""Data for unpaired translation: folder datasets, transforms, the LightningDataModule, a built-in dataset.

```
folder.py      list_images (recursive, sorted, logged skips), load_image (decode + channel conversion)
transforms.py  TrainTransform (preprocess modes, random crop/flip, [-1, 1]), EvalTransform (resize only)
datasets.py    UnpairedImageDataset (training pairs), SingleFolderDataset (validation images)
sampler.py     UnpaddedDistributedSampler (strided DDP shards for evaluation, no duplicates)
datamodule.py  UnpairedDataModule (root/trainA|trainB|testA|testB or explicit folders)
shapes.py      the synthetic "shapes" world: layouts, rendering, shapes_score
builtin.py     generation/cache of the built-in dataset, BuiltinDataModule, score_domains
```
"""

from cutlight.data.builtin import BuiltinDataModule, ensure_builtin_dataset, score_domains
from cutlight.data.datamodule import UnpairedDataModule
from cutlight.data.datasets import SingleFolderDataset, UnpairedImageDataset
from cutlight.data.folder import IMAGE_EXTENSIONS, list_images, load_image
from cutlight.data.sampler import UnpaddedDistributedSampler
from cutlight.data.shapes import shapes_score
from cutlight.data.transforms import PREPROCESS_CHOICES, EvalTransform, TrainTransform

__all__ = [
    "IMAGE_EXTENSIONS",
    "PREPROCESS_CHOICES",
    "BuiltinDataModule",
    "EvalTransform",
    "SingleFolderDataset",
    "TrainTransform",
    "UnpaddedDistributedSampler",
    "UnpairedDataModule",
    "UnpairedImageDataset",
    "ensure_builtin_dataset",
    "list_images",
    "load_image",
    "score_domains",
    "shapes_score",
]
