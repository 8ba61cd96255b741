"""The LightningDataModules: ``UnpairedDataModule`` (training pairs from two folders, validation from two test
folders) and ``BuiltinDataModule`` (the same over the generated built-in dataset).

Machine-dependent loader settings default to ``None`` = chosen for the trainer they run under (any DataModule can
use :func:`loader_settings`): ``num_workers`` is Lightning's suggestion for the CPU count and the number of local
processes (``suggested_max_num_workers``, at most 8; 0 on a CPU-only run where that suggestion is 1, since the
compute already uses every core), ``pin_memory`` is on only when the trainer runs on CUDA.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
from lightning_fabric.utilities.data import suggested_max_num_workers
from PIL import Image
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from cutlight.checks import ConfigValueError, check_choice, check_int
from cutlight.data.builtin import builtin_root, ensure_builtin_dataset
from cutlight.data.datasets import SidedBatches, SingleFolderDataset, UnpairedImageDataset
from cutlight.data.direction import check_direction, orient
from cutlight.data.folder import CHANNEL_CHOICES, MAX_IMAGE_PIXELS, list_images
from cutlight.data.image_checks import VERIFY_CHOICES, ImageCheckError, check_images, mixed_sizes
from cutlight.data.resumable import ResumableLoader
from cutlight.data.settings import check_channels, check_flag, check_path
from cutlight.data.shapes import shapes_score
from cutlight.data.transforms import TrainTransform

logger = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 8


def loader_settings(trainer: pl.Trainer | None, num_workers: int | None, pin_memory: bool | None) -> dict:
    """DataLoader keywords ``num_workers``, ``persistent_workers``, ``pin_memory`` with ``None`` = automatic (see
    the module docstring); ``trainer`` is the one the DataModule is attached to (``None``: one CPU process)."""
    cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
    if num_workers is None:
        suggested = suggested_max_num_workers(trainer.num_devices if trainer is not None else 1)
        num_workers = 0 if suggested <= 1 and not cuda else min(suggested, MAX_AUTO_WORKERS)
    return {"num_workers": num_workers, "persistent_workers": num_workers > 0,
            "pin_memory": cuda if pin_memory is None else pin_memory}


class UnpairedDataModule(pl.LightningDataModule):
    """Unpaired A -> B data.

    Folders come either from ``root`` in the standard layout (``root/trainA``, ``root/trainB`` for training,
    ``root/testA``, ``root/testB`` for validation) or from explicit ``dir_a``/``dir_b`` (and optionally
    ``val_dir_a``/``val_dir_b``); explicit folders override the ones derived from ``root``. Validation is absent
    (``val_dataloader()`` returns ``[]``) when the test folders derived from ``root`` do not exist; explicit
    validation folders must exist.

    Files are checked in ``setup`` before any batch is loaded (``verify``: ``header`` reads each file's header and
    last bytes, ``full`` decodes every image, ``none`` skips the check; see :mod:`cutlight.data.image_checks`): all bad
    training, validation and test files are reported at once in one :class:`~cutlight.data.image_checks.ImageCheckError`.
    ``max_image_pixels`` refuses larger images (decompression bombs; Pillow's default limit, about 9459 x 9459;
    a larger value also raises Pillow's own limit for this process). With ``preprocess="none"`` and
    ``batch_size > 1`` the training images of each domain must share one size (after rounding down to multiples
    of 4): ``setup`` reads their headers and names two files that differ (:meth:`check_batch_sizes`).

    Training (``train_dataloader``): a :class:`~cutlight.data.resumable.ResumableLoader` over
    :class:`UnpairedImageDataset`, shuffled unless ``serial_batches`` (as in the reference implementation,
    ``serial_batches`` means "in order"), ``drop_last=True``, persistent workers when ``num_workers > 0``; its
    order and per-sample randomness come from the seed, the epoch and the position alone, so a run resumed from a
    mid-epoch checkpoint continues with exactly the batches it would have seen. Batches: ``{"A": (B, input_nc, crop, crop), "B": (B, output_nc, crop, crop),
    "A_path": list[str], "B_path": list[str]}``.

    Validation (``val_dataloader``): a list of two loaders, ``[A images to translate, real B images]``, each over
    a :class:`SingleFolderDataset` resized to ``crop_size`` (no shuffle, no drop_last). Batches:
    ``{"image": (B, C, crop, crop), "path": list[str], "index": (B,)}``. Under an initialized
    ``torch.distributed`` process group each loader uses Lightning's ``UnrepeatedDistributedSampler`` (rank ``r``
    of ``W`` gets images ``r, r + W, ...``), so every image is seen exactly once across ranks (no padding
    duplicates in FID/KID; ranks may run one batch more or less) and Lightning does not replace it. Fewer images
    than processes raise ``ValueError``. :meth:`num_eval_images` says how many images each side of the validation
    or test split holds (without decoding them), for checks before the first step (FID/KID need 2 per side).

    Test (``test_dataloader``): one loader over the test split, the source images' batches then the target's
    (``"side"``: 0 or 1; one loader, so ``trainer.test`` returns one result). Prediction (``predict_dataloader``): the
    source test images (``test_dir_a``, else the validation source folder) at their own size, one per batch,
    ``{"image": (1, C, H, W), "path": [str], "index": (1,)}``; under DDP Lightning shards it without duplicates.

    Loaders: ``num_workers`` / ``pin_memory`` ``None`` = automatic (:func:`loader_settings`).
    """

    def __init__(
        self,
        root: str | None = None,
        dir_a: str | None = None,
        dir_b: str | None = None,
        val_dir_a: str | None = None,
        val_dir_b: str | None = None,
        test_dir_a: str | None = None,
        test_dir_b: str | None = None,
        direction: str = "AtoB",
        batch_size: int = 1,
        val_batch_size: int = 8,
        num_workers: int | None = None,
        load_size: int = 286,
        crop_size: int = 256,
        preprocess: str = "resize_and_crop",
        flip: bool = True,
        serial_batches: bool = False,
        input_nc: int = 3,
        output_nc: int = 3,
        max_dataset_size: int | None = None,
        max_val_images: int | None = None,
        pin_memory: bool | None = None,
        verify: str = "header",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        super().__init__()
        check_direction(direction)
        root, dir_a, dir_b, val_dir_a, val_dir_b, test_dir_a, test_dir_b = (
            check_path(name, value) for name, value in (
                ("root", root), ("dir_a", dir_a), ("dir_b", dir_b), ("val_dir_a", val_dir_a),
                ("val_dir_b", val_dir_b), ("test_dir_a", test_dir_a), ("test_dir_b", test_dir_b)))
        flip, serial_batches = check_flag("flip", flip), check_flag("serial_batches", serial_batches)
        pin_memory = check_flag("pin_memory", pin_memory, optional=True)
        if (dir_a is None) != (dir_b is None):
            raise ValueError(f"give both dir_a and dir_b or neither; got dir_a={dir_a!r}, dir_b={dir_b!r}")
        if (val_dir_a is None) != (val_dir_b is None):
            raise ValueError(
                f"give both val_dir_a and val_dir_b or neither; got val_dir_a={val_dir_a!r}, val_dir_b={val_dir_b!r}"
            )
        if (test_dir_a is None) != (test_dir_b is None):
            raise ValueError(
                f"give both test_dir_a and test_dir_b or neither; got test_dir_a={test_dir_a!r}, "
                f"test_dir_b={test_dir_b!r}"
            )
        if root is None and dir_a is None:
            raise ValueError(
                "no training data: give root (with trainA/, trainB/ and optionally testA/, testB/) "
                "or explicit dir_a and dir_b"
            )
        for name, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size),
                            ("max_image_pixels", max_image_pixels)):
            check_int(name, value, low=1)
        check_int("num_workers", num_workers, low=0, optional=True)
        for name, value in (("max_dataset_size", max_dataset_size), ("max_val_images", max_val_images)):
            check_int(name, value, low=1, optional=True)
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc)):
            check_channels(name, value, CHANNEL_CHOICES, "L, RGB, RGBA images")
        check_choice("verify", verify, VERIFY_CHOICES)
        self.train_transform = TrainTransform(preprocess, load_size, crop_size, flip, input_nc)  # fail early
        if Image.MAX_IMAGE_PIXELS is not None and max_image_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = max_image_pixels  # a larger limit is meant for Pillow's own check too
        self.save_hyperparameters()
        base = Path(root).expanduser() if root is not None else None
        self.direction = direction
        # from here on "a" is the source domain, "b" the target (see the class docstring)
        self.dir_a, self.dir_b = orient(direction, Path(dir_a).expanduser() if dir_a is not None else base / "trainA",
                                        Path(dir_b).expanduser() if dir_b is not None else base / "trainB")
        self.val_explicit = val_dir_a is not None
        if self.val_explicit:
            self.val_dir_a, self.val_dir_b = orient(direction, Path(val_dir_a).expanduser(),
                                                    Path(val_dir_b).expanduser())
        elif base is not None:
            self.val_dir_a, self.val_dir_b = orient(direction, base / "testA", base / "testB")
        else:
            self.val_dir_a = self.val_dir_b = None
        self.test_explicit = test_dir_a is not None
        self.test_dir_a, self.test_dir_b = (orient(direction, Path(test_dir_a).expanduser(),
                                                   Path(test_dir_b).expanduser())
                                            if self.test_explicit else (self.val_dir_a, self.val_dir_b))
        input_nc, output_nc = orient(direction, input_nc, output_nc)
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
        self.test_dataset_a: SingleFolderDataset | None = None
        self.test_dataset_b: SingleFolderDataset | None = None
        self.predict_dataset: SingleFolderDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        """Build what ``stage`` needs: ``train_dataset`` (fit), ``val_dataset_a`` / ``val_dataset_b`` (when the
        validation folders exist), ``test_dataset_a`` / ``test_dataset_b`` (test; the validation datasets unless
        test folders are given) and ``predict_dataset`` (predict). ``None``: all of them."""
        train = val = test = None
        if stage in (None, "fit") and self.train_dataset is None:
            train = UnpairedImageDataset(self.dir_a, self.dir_b, **self.train_kwargs,
                                         max_image_pixels=self.max_image_pixels)
        if stage != "predict" and self.val_dataset_a is None and self._has_validation():
            val = self._eval_pair(self.val_dir_a, self.val_dir_b)
        if stage in (None, "test") and self.test_dataset_a is None and self.test_explicit:
            test = self._eval_pair(self.test_dir_a, self.test_dir_b)
        self.check_files(train, [*(val or []), *(test or [])])  # every bad file at once, before any batch
        self.check_shards([*(val or []), *(test or [])])
        if train is not None:
            self.check_batch_sizes(train)
            self.train_dataset = train
        if val is not None:
            self.val_dataset_a, self.val_dataset_b = val
        if test is not None:
            self.test_dataset_a, self.test_dataset_b = test
        elif stage in (None, "test") and self.test_dataset_a is None:
            self.test_dataset_a, self.test_dataset_b = self.val_dataset_a, self.val_dataset_b
        if stage in (None, "predict") and self.predict_dataset is None and self.test_dir_a is not None:
            if self.test_explicit or self.test_dir_a.is_dir():
                self.predict_dataset = SingleFolderDataset(self.test_dir_a, None, self.input_nc)

    def _eval_pair(self, dir_a: Path, dir_b: Path) -> list[SingleFolderDataset]:
        return [SingleFolderDataset(folder, self.val_size, channels, self.max_val_images, self.max_image_pixels)
                for folder, channels in ((dir_a, self.input_nc), (dir_b, self.output_nc))]

    def check_files(self, train: UnpairedImageDataset | None, evaluation: list[SingleFolderDataset]) -> None:
        """Check the files of ``train`` (also against the training crop) and of the ``evaluation`` datasets
        (``verify``); raise one :class:`~cutlight.data.image_checks.ImageCheckError` naming every bad file."""
        transform = self.train_transform

        def big_enough(width: int, height: int) -> str | None:
            try:
                transform.check_size(width, height)
            except ValueError as err:
                return str(err)
            return None

        train_paths = list(dict.fromkeys([*train.paths_a, *train.paths_b])) if train is not None else []
        seen = set(train_paths)
        eval_paths = list(dict.fromkeys(p for d in evaluation for p in d.paths if p not in seen))
        problems = check_images(train_paths, self.verify, self.max_image_pixels, big_enough)
        problems += check_images(eval_paths, self.verify, self.max_image_pixels)
        if problems:
            raise ImageCheckError(problems, len(train_paths) + len(eval_paths), self.verify)

    def check_shards(self, evaluation: list[SingleFolderDataset]) -> None:
        """Under several processes (the attached trainer's ``world_size``) each process validates a shard of every
        evaluation dataset, which must not be empty: ``ValueError`` naming the folder here, in ``setup``, rather
        than at the first validation (which may come epochs into training)."""
        world = int(getattr(self.trainer, "world_size", 1) or 1)
        for dataset in evaluation:
            if len(dataset) < world:
                raise ValueError(
                    f"{len(dataset)} evaluation image(s) in '{dataset.root}' (after data.max_val_images) for {world} "
                    "processes: each process needs at least one; add images, raise data.max_val_images or train "
                    "on fewer devices (trainer.devices)"
                )

    def check_batch_sizes(self, train: UnpairedImageDataset) -> None:
        """With ``preprocess="none"`` and ``batch_size > 1`` the images of a batch keep their own sizes and must
        share one: raise ``ConfigValueError`` (``data.batch_size``) naming two training files of one domain whose
        sizes differ (read from the headers, even with ``verify="none"``), instead of failing in collate."""
        transform = self.train_transform
        if transform.preprocess != "none" or self.batch_size == 1:
            return
        for paths in (train.paths_a, train.paths_b):
            found = mixed_sizes(paths, transform.resized_size)
            if found is not None:
                (first, (w1, h1)), (other, (w2, h2)) = found
                raise ConfigValueError(
                    "data.batch_size", self.batch_size,
                    f"1 with data.preprocess=none when the training images differ in size: '{first}' is {w1}x{h1} "
                    f"but '{other}' is {w2}x{h2} (WxH, after rounding down to multiples of 4), and a batch stacks "
                    "images of one size; set data.batch_size=1, or a preprocess that gives every image one size "
                    "(data.preprocess=resize_and_crop, crop or scale_width, with data.crop_size), or make the "
                    "images one size"
                )

    def num_eval_images(self, split: str = "val") -> tuple[int, int]:
        """``(source, target)``: how many images each side of the validation (``"val"``) or test (``"test"``) split
        holds, after ``max_val_images``; ``(0, 0)`` when there is no such split (validation is then skipped).

        Counts listed files (no image is decoded): those of the datasets ``setup`` built, else of the folders the
        split would use, so it also works before ``setup``. Under DDP these are the totals over all processes
        (each rank's loader gets a shard). Meant for checks before the first step, e.g. in a LightningModule's
        ``setup`` (Lightning runs the DataModule's ``setup`` first): FID/KID need at least 2 images per side.
        """
        check_choice("split", split, ("val", "test"))
        built = (self.val_dataset_a, self.val_dataset_b) if split == "val" else (self.test_dataset_a,
                                                                                 self.test_dataset_b)
        if built[0] is not None:
            return len(built[0]), len(built[1])
        if split == "test" and self.test_explicit:
            folders = (self.test_dir_a, self.test_dir_b)
        else:
            folders = (self.val_dir_a, self.val_dir_b) if self._has_validation() else None
        if folders is None:
            return 0, 0
        return len(list_images(folders[0], self.max_val_images)), len(list_images(folders[1], self.max_val_images))

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
            **self._loader_settings(),
        )

    def val_dataloader(self) -> list[DataLoader]:
        """``[loader over the A test images, loader over the B test images]``, or ``[]`` without validation."""
        if self.val_dataset_a is None:
            return []
        return [self._eval_loader(self.val_dataset_a), self._eval_loader(self.val_dataset_b)]

    def test_dataloader(self) -> DataLoader:
        """One loader over the source test images' batches, then the target's (``{"image", ..., "side": 0 | 1}``,
        see ``SidedBatches``; one loader: ``trainer.test`` gives one result, not one per side): the test split,
        or the validation images without one."""
        if self.test_dataset_a is None:
            raise ValueError(
                "no test images: give test_dir_a and test_dir_b, validation folders (val_dir_a, val_dir_b), or a "
                f"root with testA/ and testB/ (root={self.hparams.root!r})"
            )
        return self._eval_loader(SidedBatches(self.test_dataset_a, self.test_dataset_b, self.val_batch_size),
                                 batch_size=None)

    def predict_dataloader(self) -> DataLoader:
        """The source test images at their own size with their paths, one per batch (sizes may differ)."""
        dataset = self._require(self.predict_dataset, "predict_dataset (needs test or validation folders)")
        settings = self._loader_settings()
        return DataLoader(dataset, batch_size=1, shuffle=False, num_workers=settings["num_workers"],
                          pin_memory=settings["pin_memory"])

    def _loader_settings(self) -> dict:
        return loader_settings(self.trainer, self.num_workers, self.pin_memory)

    def _eval_loader(self, dataset: Dataset, batch_size: int | None = -1) -> DataLoader:
        """``dataset`` in order, each item once over all processes; ``batch_size`` -1: ``val_batch_size``, None: the
        items are batches (``SidedBatches``)."""
        sampler = None
        if dist.is_available() and dist.is_initialized():
            # Lightning's strided, non-padding shard (rank r: r, r + W, ...; every image once, so FID/KID count
            # each image once); a DistributedSampler, so Lightning keeps it instead of injecting a padding one
            world = dist.get_world_size()
            if len(dataset) < world:
                what = (f"image(s) in '{dataset.root}'" if hasattr(dataset, "root") else "batch(es)")
                raise ValueError(f"{len(dataset)} evaluation {what} for {world} processes; each process needs at "
                                 "least one")
            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        batch_size = self.val_batch_size if batch_size == -1 else batch_size
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, drop_last=False,
                          **self._loader_settings())

    @staticmethod
    def _require(dataset: Dataset | None, name: str) -> Dataset:
        if dataset is None:
            raise RuntimeError(f"{name} is not built; call setup() first (the Trainer does this)")
        return dataset


class BuiltinDataModule(UnpairedDataModule):
    """:class:`UnpairedDataModule` over the built-in "shapes" dataset, generated by ``prepare_data()``.

    ``load_size`` and ``crop_size`` default to ``size``; ``preprocess`` defaults to ``crop`` (a no-op crop at
    full size, or a random crop when ``crop_size < size``). Test uses the ``num_test`` test images per domain;
    validation uses ``num_val`` images of a split of their own when ``num_val > 0`` (so that a checkpoint chosen by
    a validation number is scored on other images), else the test images too (both disabled when
    ``num_test == 0``). ``frame``: the framed variant (data version 4, a frame along every image's border that
    holds a short run's layout in place; ``make train``), else version 3.

    ``translation_score`` (the built-in score, used by ``callbacks.TranslationScore``) measures warm flat shapes
    -> cool striped ones on RGB images; it is ``None`` (no score) for ``direction="BtoA"`` or other channel counts.
    """

    def __init__(
        self,
        size: int = 64,
        num_train: int = 400,
        num_test: int = 64,
        cache_dir: str | None = None,
        num_val: int = 0,
        frame: bool = False,
        direction: str = "AtoB",
        batch_size: int = 1,
        val_batch_size: int = 16,
        num_workers: int | None = None,
        load_size: int | None = None,
        crop_size: int | None = None,
        preprocess: str = "crop",
        flip: bool = True,
        serial_batches: bool = False,
        input_nc: int = 3,
        output_nc: int = 3,
        max_dataset_size: int | None = None,
        max_val_images: int | None = None,
        pin_memory: bool | None = None,
        verify: str = "header",
        max_image_pixels: int = MAX_IMAGE_PIXELS,
    ) -> None:
        for name, value in (("size", size), ("num_train", num_train)):
            check_int(name, value, low=1)
        check_int("num_test", num_test, low=0)
        check_int("num_val", num_val, low=0)
        cache_dir = check_path("cache_dir", cache_dir)
        self.size, self.num_train, self.num_test, self.cache_dir = size, num_train, num_test, cache_dir
        self.num_val, self.frame = num_val, check_flag("frame", frame)
        root = builtin_root(size, num_train, num_test, cache_dir, num_val, self.frame)
        split = {}
        if num_val:  # validation on its own split; the test on the test images
            split = {"val_dir_a": str(root / "valA"), "val_dir_b": str(root / "valB"),
                     "test_dir_a": str(root / "testA"), "test_dir_b": str(root / "testB")}
        super().__init__(
            root=str(root), direction=direction, **split,
            batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
            load_size=size if load_size is None else load_size, crop_size=size if crop_size is None else crop_size,
            preprocess=preprocess, flip=flip, serial_batches=serial_batches, input_nc=input_nc,
            output_nc=output_nc, max_dataset_size=max_dataset_size, max_val_images=max_val_images,
            pin_memory=pin_memory, verify=verify, max_image_pixels=max_image_pixels,
        )
        if direction != "AtoB" or (input_nc, output_nc) != (3, 3):
            self.translation_score = None  # the score is defined for RGB A -> B only

    def prepare_data(self) -> None:
        """Generate the PNGs into the cache (no-op when present)."""
        ensure_builtin_dataset(self.size, self.num_train, self.num_test, self.cache_dir, self.num_val, self.frame)

    def setup(self, stage: str | None = None) -> None:
        self.prepare_data()  # idempotent; covers setup() called without prepare_data()
        super().setup(stage)

    def num_eval_images(self, split: str = "val") -> tuple[int, int]:
        """See :meth:`UnpairedDataModule.num_eval_images` (the dataset is generated first when it is not yet)."""
        self.prepare_data()
        return super().num_eval_images(split)

    def translation_score(self, real_a, fake_b) -> dict[str, float]:
        """The dataset's translation metric (:func:`shapes_score`, inside the frame when framed), used by
        ``callbacks.TranslationScore``."""
        return shapes_score(real_a, fake_b, frame=self.frame)
