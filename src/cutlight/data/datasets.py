"""Folder datasets: unpaired (A, B) training pairs and a deterministic single-folder validation set."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset, default_collate

from cutlight.data.folder import MAX_IMAGE_PIXELS, list_images, load_image
from cutlight.data.transforms import EvalTransform, TrainTransform


class UnpairedImageDataset(Dataset):
    """Unpaired images from two folders, for training A -> B.

    The epoch length is ``max(|A|, |B|)``. Item ``i`` is ``A[i % |A|]`` together with ``B[i % |B|]`` when
    ``serial_batches`` is true, otherwise with a B image drawn uniformly at random with torch's RNG (seeded per
    DataLoader worker by PyTorch, so ``seed_everything`` makes the pairing reproducible). A and B get independent
    random crops and flips (see :class:`~cutlight.data.transforms.TrainTransform`).

    Args:
        dir_a, dir_b: folders searched recursively for images (see :func:`~cutlight.data.folder.list_images`).
        load_size, crop_size, preprocess, flip: the training transform.
        serial_batches: pair A and B by index instead of drawing B at random.
        input_nc, output_nc: channel count (1, 3 or 4: L, RGB, RGBA) of the A and of the B images.
        max_dataset_size: keep only the first N files (sorted by path) of each domain.
        max_image_pixels: refuse larger images (see :func:`~cutlight.data.folder.load_image`).

    Returns (``dataset[i]``): ``{"A": (input_nc, H, W), "B": (output_nc, H, W)`` float32 in [-1, 1],
    ``"A_path": str, "B_path": str}``.
    """

    def __init__(
        self,
        dir_a: str | os.PathLike,
        dir_b: str | os.PathLike,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        serial_batches: bool = False,
        input_nc: int = 3,
        output_nc: int = 3,
        max_dataset_size: int | None = None,
        max_image_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> None:
        self.max_image_pixels = max_image_pixels
        self.paths_a = list_images(dir_a, max_dataset_size)
        self.paths_b = list_images(dir_b, max_dataset_size)
        self.serial_batches = serial_batches
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.transform_a = TrainTransform(preprocess, load_size, crop_size, flip, input_nc)
        self.transform_b = TrainTransform(preprocess, load_size, crop_size, flip, output_nc)

    def __len__(self) -> int:
        return max(len(self.paths_a), len(self.paths_b))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of length {len(self)}")
        path_a = self.paths_a[index % len(self.paths_a)]
        if self.serial_batches:
            index_b = index % len(self.paths_b)
        else:
            index_b = int(torch.randint(len(self.paths_b), (1,)).item())
        path_b = self.paths_b[index_b]
        real_a = self.transform_a(load_image(path_a, self.input_nc, self.max_image_pixels), str(path_a))  # (C, H, W)
        real_b = self.transform_b(load_image(path_b, self.output_nc, self.max_image_pixels), str(path_b))
        return {"A": real_a, "B": real_b, "A_path": str(path_a), "B_path": str(path_b)}


class SingleFolderDataset(Dataset):
    """Deterministic images of one folder (validation / evaluation / prediction): resize to ``size`` x ``size``
    (``size=None``: each image at its own size), no crop or flip.

    Args:
        folder: searched recursively; files sorted by relative path (``root`` keeps the folder).
        size: output side length, or None.
        channels: 1, 3 or 4 (L, RGB, RGBA).
        max_images: keep only the first N files.
        max_image_pixels: refuse larger images (see :func:`~cutlight.data.folder.load_image`).

    Returns (``dataset[i]``): ``{"image": (channels, size, size)`` float32 in [-1, 1], ``"path": str,
    "index": int}``.
    """

    def __init__(
        self, folder: str | os.PathLike, size: int | None, channels: int = 3, max_images: int | None = None,
        max_image_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> None:
        self.max_image_pixels = max_image_pixels
        self.root = Path(folder).expanduser()
        self.paths = list_images(folder, max_images)
        self.channels = channels
        self.transform = EvalTransform(size, channels)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str | int]:
        path = self.paths[index]
        image = self.transform(load_image(path, self.channels, self.max_image_pixels))  # (C, size, size)
        return {"image": image, "path": str(path), "index": index}


class SidedBatches(Dataset):
    """The batches of two evaluation datasets, the first's then the second's, as the items of one dataset:
    item i is ``{"image": (B, C, H, W), ..., "side": 0 | 1}`` (0: the source images, 1: the target images), a
    batch never mixing the two (their channels and sizes may differ). One loader (``DataLoader(batch_size=None)``)
    instead of two, so that ``trainer.test`` reports one result column; under DDP a sampler shards the batches,
    so every image is still seen once."""

    def __init__(self, first: Dataset, second: Dataset, batch_size: int) -> None:
        self.datasets = (first, second)
        self.batches = [(side, range(start, min(start + batch_size, len(ds))))
                        for side, ds in enumerate(self.datasets) for start in range(0, len(ds), batch_size)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict:
        side, indices = self.batches[index]
        batch = default_collate([self.datasets[side][i] for i in indices])
        batch["side"] = side
        return batch
