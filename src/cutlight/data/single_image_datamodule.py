"""``SingleImageDataModule``: SinCUT's data (one source image, one target image) as a LightningDataModule.

Training batches are random zoomed patches of both images (:class:`~cutlight.data.single_image.ZoomAndPatchDataset`);
validation and prediction use the whole images at their own resolution
(:class:`~cutlight.data.single_image.FullImageDataset`): loader 0 holds the source image to translate, loader 1 the
target image, as in :class:`~cutlight.data.UnpairedDataModule`. The pictures and PatchNCE terms of the full
translation are made by the ``cutlight.lightning.callbacks.FullImageTranslation`` callback (through :meth:`full_images`);
FID/KID on one image mean nothing, so the SinCUT configs turn them off (``model.val_metrics: false``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from cutlight.checks import ConfigValueError, check_choice, check_int, check_number
from cutlight.data.builtin_pair import ensure_builtin_pair, pair_root
from cutlight.data.settings import check_channels, check_flag, check_path
from cutlight.data.single_image import FullImageDataset, ZoomAndPatchDataset, resolve_image_path


def _checked_path(key: str, path: str | os.PathLike) -> Path:
    """``resolve_image_path`` with errors that name the argument and its config key (``data.<key>``)."""
    try:
        return resolve_image_path(path)
    except (OSError, ValueError) as err:  # missing file / folder without exactly one image
        raise type(err)(f"{key} (data.{key}): {err}") from err


class SingleImageDataModule(pl.LightningDataModule):
    """One A image -> one B image (SinCUT, Park et al. 2020, section 4.3).

    Args:
        image_a, image_b: the source and the target image (files, or folders holding exactly one image, as in the
            reference's ``trainA/one.png`` layout). Both ``None``: the built-in pair (a landscape "photo" and a
            landscape "painting", see ``cutlight.data.builtin_pair``), generated in ``prepare_data``.
        cache_dir: where the built-in pair is generated (default ``$CUTLIGHT_CACHE`` or ``~/.cache/cutlight``).
        load_size, crop_size, random_scale_max, flip, length: the training patches (see ``ZoomAndPatchDataset``):
            images whose short side is below ``load_size`` are scaled up to it, zoom factors per axis are drawn in
            [1 / random_scale_max, 1], ``crop_size`` patches, ``length`` samples per epoch.
        batch_size, num_workers, pin_memory: the training DataLoader (validation and prediction: one image per
            batch, since the two images may differ in size).
        input_nc, output_nc: channels (1 or 3) of the A and the B image.
        max_dataset_size: at most this many training samples per epoch, rounded up to whole batches (the
            reference's ``--max_dataset_size``, whose loader stops at the first batch that reaches it); ``None``:
            ``length``. As in :class:`~cutlight.data.UnpairedDataModule` (where it keeps the first N files of each
            domain) it caps the samples of an epoch, so ``debug=tiny`` fits every data module.
        max_val_images: at most this many validation images per side, as in ``UnpairedDataModule``; here each side
            has one image, which any value keeps (accepted so that one setting fits every data module).

    Batches: training ``{"A": (B, input_nc, crop, crop), "B": (B, output_nc, crop, crop), "A_path", "B_path"}``;
    validation ``[A loader, B loader]`` and prediction (A) ``{"image": (1, C, H, W), "path": [str], "index": (1,)}``
    at the image's own size (the module pads it to its generator's size multiple and crops back).

    Reproducibility: every training sample is drawn from a seed taken from torch's global RNG (see
    ``ZoomAndPatchDataset``), so ``seed_everything`` fixes the patches for a given ``num_workers``.
    """

    def __init__(
        self,
        image_a: str | None = None,
        image_b: str | None = None,
        cache_dir: str | None = None,
        load_size: int = 1024,
        crop_size: int = 64,
        random_scale_max: float = 3.0,
        flip: bool = True,
        length: int = 100_000,
        batch_size: int = 16,
        num_workers: int = 4,
        input_nc: int = 3,
        output_nc: int = 3,
        pin_memory: bool = False,
        max_dataset_size: int | None = None,
        max_val_images: int | None = None,
    ) -> None:
        super().__init__()
        image_a, image_b = check_path("image_a", image_a), check_path("image_b", image_b)
        cache_dir = check_path("cache_dir", cache_dir)
        if (image_a is None) != (image_b is None):
            raise ValueError(f"give both image_a and image_b (data.image_a, data.image_b), or neither for the "
                             f"built-in pair; got image_a={image_a!r}, image_b={image_b!r}")
        for name, value in (("load_size", load_size), ("crop_size", crop_size), ("batch_size", batch_size),
                            ("length", length)):
            check_int(name, value, low=1)
        check_number("random_scale_max", random_scale_max, low=1.0)
        flip, pin_memory = check_flag("flip", flip), check_flag("pin_memory", pin_memory)
        check_int("num_workers", num_workers, low=0)
        if length < batch_size:
            raise ConfigValueError("length", length, f"at least batch_size: length {length} (samples per epoch) is "
                                   f"smaller than batch_size {batch_size}, so with drop_last=True no batch would be "
                                   "produced")
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc)):
            check_channels(name, value, (1, 3), "L, RGB images")
        for name, value in (("max_dataset_size", max_dataset_size), ("max_val_images", max_val_images)):
            check_int(name, value, low=1, optional=True)
        if max_dataset_size is not None and max_dataset_size < length:  # whole batches, at least one
            length = min(length, -(-max_dataset_size // batch_size) * batch_size)
        self.save_hyperparameters()
        self.builtin = image_a is None
        if self.builtin:
            root = pair_root(cache_dir)
            self.path_a, self.path_b = root / "trainA" / "landscape.png", root / "trainB" / "painting.png"
        else:  # fail before any training starts, naming the config key
            self.path_a, self.path_b = _checked_path("image_a", image_a), _checked_path("image_b", image_b)
        self.cache_dir = cache_dir
        self.patch_kwargs = dict(load_size=load_size, crop_size=crop_size, random_scale_max=random_scale_max,
                                 flip=flip, length=length, input_nc=input_nc, output_nc=output_nc)
        self.input_nc, self.output_nc = input_nc, output_nc
        self.batch_size, self.num_workers, self.pin_memory = batch_size, num_workers, pin_memory
        self.train_dataset: ZoomAndPatchDataset | None = None
        self.full_dataset_a: FullImageDataset | None = None
        self.full_dataset_b: FullImageDataset | None = None

    def prepare_data(self) -> None:
        """Generate the built-in pair into the cache (no-op when present or when images are given)."""
        if self.builtin:
            ensure_builtin_pair(self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Decode the images once: the patch dataset (training) and the full images (validation, prediction)."""
        self.prepare_data()  # idempotent; covers setup() called without prepare_data()
        if self.train_dataset is None and stage in (None, "fit"):
            self.train_dataset = ZoomAndPatchDataset(self.path_a, self.path_b, **self.patch_kwargs)
        if self.full_dataset_a is None:
            self.full_dataset_a = FullImageDataset([self.path_a], self.input_nc)
            self.full_dataset_b = FullImageDataset([self.path_b], self.output_nc)

    def full_images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(source (1, input_nc, H_a, W_a), target (1, output_nc, H_b, W_b)) in [-1, 1], at their own sizes."""
        if self.full_dataset_a is None:
            self.setup("validate")
        return self.full_dataset_a[0]["image"][None], self.full_dataset_b[0]["image"][None]

    def num_eval_images(self, split: str = "val") -> tuple[int, int]:
        """``(source, target)`` images per side of the validation split: ``(1, 1)`` (the two images); ``(0, 0)``
        for ``"test"`` (no test split). The same method as ``UnpairedDataModule.num_eval_images``: FID/KID, which
        need at least 2 images per side, cannot be computed here."""
        check_choice("split", split, ("val", "test"))
        return (1, 1) if split == "val" else (0, 0)

    def train_dataloader(self) -> DataLoader:
        """``length`` fresh random patch pairs per epoch (in index order: every item is a new random draw)."""
        if self.train_dataset is None:
            raise RuntimeError("train_dataset is not built; call setup('fit') first (the Trainer does this)")
        return DataLoader(self.train_dataset, batch_size=self.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=self.pin_memory)

    def val_dataloader(self) -> list[DataLoader]:
        """``[the full A image, the full B image]``, one image per loader."""
        return [self._full_loader(self.full_dataset_a), self._full_loader(self.full_dataset_b)]

    def predict_dataloader(self) -> DataLoader:
        """The full A image: ``trainer.predict(model, datamodule=dm)`` translates it at its own size."""
        return self._full_loader(self.full_dataset_a)

    @staticmethod
    def _full_loader(dataset: Dataset | None) -> DataLoader:
        """One image per batch. Under DDP Lightning's padding ``DistributedSampler`` gives every rank the image (an
        unpadded shard would leave ranks > 0 with an empty loader, which Lightning refuses)."""
        if dataset is None:
            raise RuntimeError("the full images are not loaded; call setup() first (the Trainer does this)")
        return DataLoader(dataset, batch_size=1, shuffle=False)
