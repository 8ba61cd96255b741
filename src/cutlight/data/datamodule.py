"""The LightningDataModules: ``UnpairedDataModule`` (training pairs from two folders, validation from two test
folders) and ``BuiltinDataModule`` (the same over the generated built-in dataset)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cutlight.checks import ConfigValueError, check_choice, check_int
from cutlight.data.builtin import builtin_root, ensure_builtin_dataset
from cutlight.data.checks import VERIFY_CHOICES, ImageCheckError, check_images
from cutlight.data.datasets import SingleFolderDataset, UnpairedImageDataset
from cutlight.data.folder import CHANNEL_CHOICES, MAX_IMAGE_PIXELS
from cutlight.data.resumable import ResumableLoader
from cutlight.data.sampler import UnpaddedDistributedSampler
from cutlight.data.shapes import shapes_score
from cutlight.data.transforms import TrainTransform

logger = logging.getLogger(__name__)


class UnpairedDataModule(pl.LightningDataModule):
    """Unpaired A -> B data.

    Folders come either from ``root`` in the standard layout (``root/trainA``, ``root/trainB`` for training,
    ``root/testA``, ``root/testB`` for validation) or from explicit ``dir_a``/``dir_b`` (and optionally
    ``val_dir_a``/``val_dir_b``); explicit folders override the ones derived from ``root``. Validation is absent
    (``val_dataloader()`` returns ``[]``) when the test folders derived from ``root`` do not exist; explicit
    validation folders must exist.

    Files are checked in ``setup`` before any batch is loaded (``verify``: ``header`` reads each file's header and
    last bytes, ``full`` decodes every image, ``none`` skips the check; see :mod:`cutlight.data.checks`): all bad
    train and validation files are reported at once in one :class:`~cutlight.data.checks.ImageCheckError`.
    ``max_image_pixels`` refuses larger images (decompression bombs; Pillow's default limit, about 9459 x 9459;
    a larger value also raises Pillow's own limit for this process).

    Training (``train_dataloader``): a :class:`~cutlight.data.resumable.ResumableLoader` over
    :class:`UnpairedImageDataset`, shuffled unless ``serial_batches`` (as in the reference implementation,
    ``serial_batches`` means "in order"), ``drop_last=True``, persistent workers when ``num_workers > 0``; its
    order and per-sample randomness come from the seed and the epoch alone, so a run resumed from a mid-epoch
    checkpoint continues with exactly the batches it would have seen. Batches: ``{"A": (B, input_nc, crop, crop), "B": (B, output_nc, crop, crop),
    "A_path": list[str], "B_path": list[str]}``.

    Validation (``val_dataloader``): a list of two loaders, ``[A images to translate, real B images]``, each over
    a :class:`SingleFolderDataset` resized to ``crop_size`` (no shuffle, no drop_last). Batches:
    ``{"image": (B, C, crop, crop), "path": list[str], "index": (B,)}``. Under an initialized
    ``torch.distributed`` process group each loader uses :class:`UnpaddedDistributedSampler`, so every image is
    seen exactly once across ranks (no padding duplicates in FID/KID) and Lightning does not replace it.
    """

    def __init__(
        self,
        root: str | None = None,
        dir_a: str | None = None,
        dir_b: str | None = None,
        val_dir_a: str | None = None,
        val_dir_b: str | None = None,
        batch_size: int = 1,
        val_batch_size: int = 4,
        num_workers: int = 0,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        serial_batches: bool = False,
        input_nc: int = 3,
        output_nc: int = 3,
        max_dataset_size: int | None = None,
        max_val_images: int | None = None,
        pin_memory: bool = False,
        verify: str = "header",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        if (dir_a is None) != (dir_b is None):
            raise ValueError(f"give both dir_a and dir_b or neither; got dir_a={dir_a!r}, dir_b={dir_b!r}")
        if (val_dir_a is None) != (val_dir_b is None):
            raise ValueError(
                f"give both val_dir_a and val_dir_b or neither; got val_dir_a={val_dir_a!r}, val_dir_b={val_dir_b!r}"
            )
        if root is None and dir_a is None:
            raise ValueError(
                "no training data: give root (with trainA/, trainB/ and optionally testA/, testB/) "
                "or explicit dir_a and dir_b"
            )
        for name, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size),
                            ("max_image_pixels", max_image_pixels)):
            check_int(name, value, low=1)
        check_int("num_workers", num_workers, low=0)
        for name, value in (("max_dataset_size", max_dataset_size), ("max_val_images", max_val_images)):
            check_int(name, value, low=1, optional=True)
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc)):
            if value not in CHANNEL_CHOICES:
                raise ConfigValueError(name, value, f"one of {CHANNEL_CHOICES} (L, RGB, RGBA images)")
        check_choice("verify", verify, VERIFY_CHOICES)
        for name, value in (("load_size", load_size), ("crop_size", crop_size)):
            check_int(name, value, low=1)
        self.train_transform = TrainTransform(preprocess, load_size, crop_size, flip, input_nc)  # fail early
        if max_image_pixels > (Image.MAX_IMAGE_PIXELS or 0) and Image.MAX_IMAGE_PIXELS is not None:
            Image.MAX_IMAGE_PIXELS = max_image_pixels  # a larger limit is meant for Pillow's own check too
        self.save_hyperparameters()
        base = Path(root).expanduser() if root is not None else None
        self.dir_a = Path(dir_a).expanduser() if dir_a is not None else base / "trainA"
        self.dir_b = Path(dir_b).expanduser() if dir_b is not None else base / "trainB"
        self.val_explicit = val_dir_a is not None
        if self.val_explicit:
            self.val_dir_a, self.val_dir_b = Path(val_dir_a).expanduser(), Path(val_dir_b).expanduser()
        elif base is not None:
            self.val_dir_a, self.val_dir_b = base / "testA", base / "testB"
        else:
            self.val_dir_a = self.val_dir_b = None
        self.train_kwargs = dict(
            load_size=load_size, crop_size=crop_size, preprocess=preprocess, flip=flip,
            serial_batches=serial_batches, input_nc=input_nc, output_nc=output_nc,
            max_dataset_size=max_dataset_size,
        )
        self.val_size, self.max_val_images = crop_size, max_val_images
        self.crop_size = crop_size  # what the networks see (TranslationModule checks it against them)
        self.verify, self.max_image_pixels = verify, max_image_pixels
        self.input_nc, self.output_nc, self.serial_batches = input_nc, output_nc, serial_batches
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_dataset: UnpairedImageDataset | None = None
        self.val_dataset_a: SingleFolderDataset | None = None
        self.val_dataset_b: SingleFolderDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build ``train_dataset`` and (when the test folders exist) ``val_dataset_a`` / ``val_dataset_b``, after
        checking every file (``verify``); raises :class:`~cutlight.data.checks.ImageCheckError` listing each bad
        file and why."""
        if self.train_dataset is not None and (self.val_dataset_a is not None or not self._has_validation()):
            return
        train = UnpairedImageDataset(self.dir_a, self.dir_b, **self.train_kwargs,
                                     max_image_pixels=self.max_image_pixels)
        val = None
        if self._has_validation():
            val = [SingleFolderDataset(folder, self.val_size, channels, self.max_val_images, self.max_image_pixels)
                   for folder, channels in ((self.val_dir_a, self.input_nc), (self.val_dir_b, self.output_nc))]
        self.check_files(train, val or [])
        self.train_dataset = train
        if val:
            self.val_dataset_a, self.val_dataset_b = val

    def check_files(self, train: UnpairedImageDataset, val: list[SingleFolderDataset]) -> None:
        """Check every training and validation file at once (see ``verify``); raise one error listing them all."""
        transform = self.train_transform

        def big_enough(width: int, height: int) -> str | None:
            try:
                transform.check_size(width, height)
            except ValueError as err:
                return str(err)
            return None

        train_paths = list(dict.fromkeys([*train.paths_a, *train.paths_b]))
        seen = set(train_paths)
        val_paths = list(dict.fromkeys(p for d in val for p in d.paths if p not in seen))
        problems = check_images(train_paths, self.verify, self.max_image_pixels, big_enough)
        problems += check_images(val_paths, self.verify, self.max_image_pixels)
        if problems:
            raise ImageCheckError(problems, len(train_paths) + len(val_paths), self.verify)

    def _has_validation(self) -> bool:
        if self.val_dir_a is None:
            return False
        if self.val_explicit:
            return True  # missing explicit folders raise in SingleFolderDataset
        exists = [self.val_dir_a.is_dir(), self.val_dir_b.is_dir()]
        if exists == [True, False] or exists == [False, True]:
            logger.warning(
                "validation disabled: '%s' exists but '%s' does not",
                *((self.val_dir_a, self.val_dir_b) if exists[0] else (self.val_dir_b, self.val_dir_a)),
            )
        return all(exists)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (unless ``serial_batches``) batches of unpaired A and B images, dropping the last partial batch."""
        dataset = self._require(self.train_dataset, "train_dataset")
        if len(dataset) < self.batch_size:
            raise ValueError(
                f"the training set has {len(dataset)} image(s), fewer than batch_size {self.batch_size}; "
                "with drop_last=True no batch would be produced"
            )
        return ResumableLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=not self.serial_batches,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def val_dataloader(self) -> list[DataLoader]:
        """``[loader over the A test images, loader over the B test images]``, or ``[]`` without validation."""
        if self.val_dataset_a is None:
            return []
        return [self._eval_loader(self.val_dataset_a), self._eval_loader(self.val_dataset_b)]

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        distributed = dist.is_available() and dist.is_initialized()
        return DataLoader(
            dataset,
            batch_size=self.val_batch_size,
            shuffle=False,
            sampler=UnpaddedDistributedSampler(dataset) if distributed else None,
            drop_last=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    @staticmethod
    def _require(dataset: Dataset | None, name: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"{name} is not built; call setup() first (the Trainer does this)")
        return dataset


class BuiltinDataModule(UnpairedDataModule):
    """:class:`UnpairedDataModule` over the built-in "shapes" dataset, generated by ``prepare_data()``.

    ``load_size`` and ``crop_size`` default to ``size``; ``preprocess`` defaults to ``crop`` (a no-op crop at
    full size, or a random crop when ``crop_size < size``). Validation uses the ``num_test`` test images per domain
    (disabled when ``num_test == 0``).
    """

    def __init__(
        self,
        size: int = 64,
        num_train: int = 400,
        num_test: int = 64,
        cache_dir: str | None = None,
        batch_size: int = 1,
        val_batch_size: int = 4,
        num_workers: int = 0,
        load_size: int | None = None,
        crop_size: int | None = None,
        preprocess: str = "crop",
        flip: bool = True,
        serial_batches: bool = False,
        input_nc: int = 3,
        output_nc: int = 3,
        max_dataset_size: int | None = None,
        max_val_images: int | None = None,
        pin_memory: bool = False,
        verify: str = "header",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        for name, value in (("size", size), ("num_train", num_train)):
            check_int(name, value, low=1)
        check_int("num_test", num_test, low=0)
        self.size, self.num_train, self.num_test, self.cache_dir = size, num_train, num_test, cache_dir
        super().__init__(
            root=str(builtin_root(size, num_train, num_test, cache_dir)),
            batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
            load_size=size if load_size is None else load_size, crop_size=size if crop_size is None else crop_size,
            preprocess=preprocess, flip=flip, serial_batches=serial_batches, input_nc=input_nc,
            output_nc=output_nc, max_dataset_size=max_dataset_size, max_val_images=max_val_images,
            pin_memory=pin_memory, verify=verify, max_image_pixels=max_image_pixels,
        )

    def prepare_data(self) -> None:
        """Generate the PNGs into the cache (no-op when present)."""
        ensure_builtin_dataset(self.size, self.num_train, self.num_test, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; covers setup() called without prepare_data()
        super().setup(stage)

    @staticmethod
    def translation_score(real_a, fake_b) -> dict[str, float]:
        """The dataset's translation metric (:func:`shapes_score`), used by ``callbacks.TranslationScore``."""
        return shapes_score(real_a, fake_b)
