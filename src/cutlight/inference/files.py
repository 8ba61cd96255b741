"""Image files in, image files out: the inputs, the output plan, atomic writes and the folder translation.

``translate_folder`` is what ``cutlight-translate`` (``python -m cutlight.cli.translate``) runs; the options named
below are that command's (``translate_folder`` takes them as keyword arguments).

Inputs: each PATH is an image file, a folder (searched recursively) or a glob pattern (quote it; ``**`` recurses).
Images are read by ``cutlight.data.load_image`` with the generator's ``input_nc`` channels (EXIF orientation,
palette, 16-bit and alpha handled as in training), scaled to [-1, 1] like validation images.

Sizes: by default the output has the input's size (reflect-padded to the generator's ``size_multiple``, cropped
back). ``--size N`` first resizes so that the *longer* side is N; ``--short-side N`` so that the *shorter* side is
N; both keep the aspect ratio (the other side rounded to the nearest pixel, bicubic antialiased as in training);
the output then has the resized size.

Outputs: ``DIR/<path relative to the input folder, or to a glob's fixed prefix>/<stem>.<ext>`` (PNG by default).
Two inputs that would give one output name (``x.jpg`` and ``x.png``; compared case-insensitively) stop the run
before anything is written, naming them; ``--keep-suffix`` names outputs ``x.jpg.png``, which never collide.
Existing output files are skipped (counted), never overwritten, unless ``--overwrite``; files are written under a
temporary name and renamed, so an interrupted run leaves no truncated image and can simply be rerun. Files under
DIR are never taken as inputs. An image that cannot be read or translated is reported with its reason; the rest
are translated (``TranslationReport`` lists what was written, skipped and failed).
"""

from __future__ import annotations

import glob
import logging
import os
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from ..data.folder import is_image_file, list_images, load_image
from ..data.transforms import resize, to_normalized_tensor
from .loading import load_generator
from .tensors import batches_by_size, tensor_to_image, translate_tensor

logger = logging.getLogger(__name__)

FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF"}
_SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_LOAD_ERRORS = (OSError, ValueError)


@dataclass
class TranslationReport:
    """What ``translate_folder`` did. Usable as a path (``os.fspath(report)`` is ``output_dir``).

    ``written`` / ``skipped`` (output existed) are ``(input, output)`` pairs; ``failed`` are ``(input, reason)``.
    """

    output_dir: Path
    planned: list[tuple[Path, Path]] = field(default_factory=list, repr=False)
    written: list[tuple[Path, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def __fspath__(self) -> str:
        return os.fspath(self.output_dir)

    @property
    def pairs(self) -> list[tuple[Path, Path]]:
        """(input, output) of every output file now present (written or skipped), in input order."""
        present = set(self.written) | set(self.skipped)
        return [pair for pair in self.planned if pair in present]

    def summary(self) -> str:
        lines = [f"{len(self.written)} written, {len(self.skipped)} skipped (output exists; --overwrite replaces), "
                 f"{len(self.failed)} failed -> {self.output_dir}"]
        lines += [f"  failed: {src}: {reason}" for src, reason in self.failed]
        return "\n".join(lines)


def output_size(width: int, height: int, size: int | None = None, short_side: int | None = None) -> tuple[int, int]:
    """(width, height) after ``--size`` (longer side = size) or ``--short-side`` (shorter side = short_side),
    aspect ratio kept, the other side rounded (at least 1); unchanged when both are None."""
    if size is not None and short_side is not None:
        raise ValueError(f"give size or short_side, not both (got size={size}, short_side={short_side})")
    target = size if size is not None else short_side
    if target is None:
        return width, height
    if not isinstance(target, int) or target < 1:
        raise ValueError(f"size / short_side must be a positive integer, got {target!r}")
    side = max(width, height) if size is not None else min(width, height)
    return max(1, round(width * target / side)), max(1, round(height * target / side))


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading parts without wildcards."""
    fixed = []
    for part in Path(pattern).parts:
        if any(c in part for c in "*?["):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def resolve_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> list[tuple[Path, Path]]:
    """``(file, relative name)`` for every input image, in order, without duplicates or files under ``exclude``.

    Each input is an image file (named by its file name), a folder (its images, recursively, named relative to
    it) or a glob pattern (matching image files, named relative to the pattern's fixed leading folder).
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise ValueError("no inputs given")
    skip = Path(exclude).resolve() if exclude is not None else None
    found: dict[Path, tuple[Path, Path]] = {}
    excluded = 0
    for item in items:
        text = os.path.expanduser(os.fspath(item))
        path = Path(text)
        if path.is_dir():
            pairs = [(p, p.relative_to(path)) for p in list_images(path)]
        elif path.is_file():
            pairs = [(path, Path(path.name))]
        elif any(c in text for c in "*?["):
            root = _glob_root(text)
            files = sorted(Path(p) for p in glob.glob(text, recursive=True) if is_image_file(p) and os.path.isfile(p))
            if not files:
                raise FileNotFoundError(f"no image files match the pattern '{text}'")
            pairs = [(p, p.relative_to(root)) for p in files]
        else:
            raise FileNotFoundError(f"input '{text}' is neither an image file, a folder, nor a glob pattern")
        for src, rel in pairs:
            key = src.resolve()
            if skip is not None and key.is_relative_to(skip):
                excluded += 1
            else:
                found.setdefault(key, (src, rel))
    if excluded:
        logger.warning("%d file(s) under the output folder '%s' not taken as inputs", excluded, skip)
    if not found:
        raise ValueError(f"no input images left: all {excluded} found are under the output folder '{skip}'; "
                         "choose an output folder that does not contain the inputs")
    return list(found.values())


def plan_outputs(
    sources: Sequence[tuple[Path, Path]], output_dir: str | os.PathLike, ext: str = "png", keep_suffix: bool = False
) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs; raises ValueError naming them when two inputs map to one output (compared
    case-insensitively) or an output would be its own input."""
    output_dir = Path(output_dir)
    plan, by_name = [], {}
    for src, rel in sources:
        rel = Path(os.path.normpath(rel))  # a glob's "x/../y" stays inside output_dir; one that leaves it is refused
        if rel.is_absolute() or rel.parts[:1] == ("..",):
            raise ValueError(f"input '{src}' would be written outside the output folder '{output_dir}' (its name "
                             f"relative to the input, '{rel}', leaves it: a glob pattern with '..'); nothing was "
                             "written. Give the folder or a pattern without '..' that climbs above its fixed part")
        dst = output_dir / rel.parent / (f"{rel.name}.{ext}" if keep_suffix else f"{rel.stem}.{ext}")
        if dst.exists() and dst.resolve() == src.resolve():
            raise ValueError(f"output '{dst}' would overwrite its own input; choose another output folder")
        by_name.setdefault(dst.as_posix().lower(), []).append(src)
        plan.append((src, dst))
    clashes = {name: srcs for name, srcs in by_name.items() if len(srcs) > 1}
    if clashes:
        shown = "; ".join(f"{', '.join(map(str, srcs))} -> {name}" for name, srcs in list(clashes.items())[:5])
        raise ValueError(
            f"{len(clashes)} output name(s) would be written by more than one input ({shown}); nothing was written. "
            "Use --keep-suffix (keep_suffix=True: outputs named like 'x.jpg.png'), or rename the inputs"
        )
    return plan


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """Create ``output_dir`` if needed and check that a file can be written into it (ValueError naming it when it is
    a file, under a file, read-only or not writable), so that no image is translated only to fail its write."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output '{output_dir}' is a file, not a folder; give a folder (it is created if missing)")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cutlight-write-check-", dir=output_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"cannot write into the output folder '{output_dir}' ({err.strerror or err}); nothing was "
                         "translated. Choose a writable folder") from err


def _prefetch(fn: Callable, items: Iterable, workers: int) -> Iterator[tuple[object, object]]:
    """(item, fn(item) or the exception it raised), in order, computed by up to ``workers`` threads ahead."""

    def attempt(item):
        try:
            return fn(item)
        except _LOAD_ERRORS as err:
            return err

    if workers < 1:
        yield from ((item, attempt(item)) for item in items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append((item, pool.submit(attempt, item)))
            if len(pending) > 2 * workers:
                item, fut = pending.popleft()
                yield item, fut.result()
        while pending:
            item, fut = pending.popleft()
            yield item, fut.result()


def save_image(image, dst: Path, fmt: str) -> None:
    """Write a PIL image as ``fmt`` (a value of :data:`FORMATS`) via a temporary name and rename (no truncated file
    if interrupted)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.partial")
    image.save(tmp, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
    os.replace(tmp, dst)


def translate_folder(
    ckpt: str | os.PathLike | nn.Module,
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    size: int | None = None,
    short_side: int | None = None,
    ext: str = "png",
    overwrite: bool = False,
    keep_suffix: bool = False,
    precision: str | None = None,
    direction: str | None = None,
    workers: int = 2,
    progress: bool = True,
    generator_kwargs: dict | None = None,
    max_images: int | None = None,
    trust_code: bool | None = None,
) -> TranslationReport:
    """Translate image files (see the module docstring for naming, sizes and what is skipped).

    Args:
        ckpt: checkpoint path (see :func:`cutlight.inference.load_generator`) or a ready generator.
        inputs: image file, folder, glob pattern, or a list of them.
        output_dir: default ``<input>_translated`` for a single input folder.
        device: default: the generator's device for a module, else "cuda" when available, else "cpu".
        batch_size: images of equal (resized) size translated together, at most this many.
        size / short_side: resize so the longer / shorter side has this length (aspect kept); default: keep size.
        ext: output format (png, jpg, jpeg, webp, bmp, tif, tiff).
        overwrite: replace existing output files (default: skip them).
        keep_suffix: name outputs ``x.jpg.png`` instead of ``x.png`` (no name collisions).
        precision: None / "fp32", "bf16" or "fp16" (autocast).
        direction: "AtoB" / "BtoA" for CycleGAN checkpoints.
        workers: threads decoding images ahead of the generator (0: in the main thread).
        generator_kwargs: override / supply constructor arguments (a bare state dict's architecture).
        max_images: translate only the first that many inputs, in their sorted order (the reference
            implementation's ``--num_test``); None: all.
        trust_code: let the checkpoint name any generator class (see :func:`cutlight.inference.load_generator`).
    Returns:
        :class:`TranslationReport` (path-like: the output folder).
    Raises:
        ValueError / FileNotFoundError before anything is translated: bad arguments, no inputs, colliding names,
        an input whose output would land outside ``output_dir`` (a glob with ``..``), an output that is a file or
        cannot be written to, an unreadable checkpoint.
    """
    ext = ext.lower().lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"unknown output extension {ext!r}; expected one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    output_size(1, 1, size, short_side)  # validates size / short_side
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"max_images must be an integer >= 1 or None, got {max_images!r}")
    if output_dir is None:
        single = Path(inputs) if isinstance(inputs, (str, os.PathLike)) else None
        if single is None or not single.is_dir():
            raise ValueError("output_dir is required unless the input is a single folder")
        output_dir = single.with_name(single.name + "_translated")
    output_dir = Path(output_dir)
    if isinstance(ckpt, nn.Module):
        generator = ckpt.to(device) if device is not None else ckpt
    else:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        generator = load_generator(ckpt, device, direction, trust_code, **(generator_kwargs or {}))
    in_nc, out_nc = generator.input_nc, generator.output_nc
    if out_nc == 4 and FORMATS[ext] == "JPEG":
        raise ValueError(f"the generator outputs 4 channels (RGBA); {ext} has no alpha: use png, webp or tif")

    plan = plan_outputs(resolve_inputs(inputs, exclude=output_dir), output_dir, ext, keep_suffix)[:max_images]
    check_output_dir(output_dir)
    report = TranslationReport(output_dir, planned=plan)
    todo = []
    for pair in plan:
        (todo if overwrite or not pair[1].exists() else report.skipped).append(pair)
    to_tensor = to_normalized_tensor(in_nc)

    def load(pair: tuple[Path, Path]) -> torch.Tensor:
        image = load_image(pair[0], in_nc)
        return to_tensor(resize(image, *output_size(*image.size, size, short_side)))  # (C, H, W)

    with tqdm(total=len(todo), unit="img", desc="translating", disable=not progress, file=sys.stderr) as bar:

        def loaded() -> Iterator[tuple[tuple[Path, Path], torch.Tensor]]:
            for pair, result in _prefetch(load, todo, workers):
                if isinstance(result, Exception):
                    _failed(report, bar, pair[0], str(result))
                else:
                    yield pair, result

        for batch in batches_by_size(loaded(), batch_size, max_waiting=4 * batch_size):  # bounds the memory held
            _translate_batch(generator, batch, precision, FORMATS[ext], report, bar)
    return report


def _failed(report: TranslationReport, bar, src: Path, reason: str) -> None:
    report.failed.append((src, reason))
    bar.update(1)


def _translate_batch(generator: nn.Module, batch: list[tuple[tuple[Path, Path], torch.Tensor]], precision,
                     fmt: str, report: TranslationReport, bar) -> None:
    """Translate one batch of equal-size images and write each. A batch that fails is retried image by image, so
    each failure has its own reason (and a batch too large for the device memory still gets through)."""
    try:
        y = translate_tensor(generator, torch.stack([t for _, t in batch]), precision)  # (B, C', H, W)
    except (RuntimeError, ValueError) as err:
        if len(batch) > 1:
            for item in batch:
                _translate_batch(generator, [item], precision, fmt, report, bar)
            return
        _failed(report, bar, batch[0][0][0], f"translation failed: {err}")
        return
    for ((src, dst), _), yi in zip(batch, y):
        try:
            save_image(tensor_to_image(yi), dst, fmt)
            report.written.append((src, dst))
        except OSError as err:
            report.failed.append((src, f"cannot write '{dst}': {err}"))
    bar.update(len(batch))
