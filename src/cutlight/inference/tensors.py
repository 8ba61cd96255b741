"""Tensors through a trained generator: any size in, the same size out, in batches of equal sizes.

```
translate(generator, images)        a tensor batch or PIL images of any size -> outputs of the inputs' sizes
translate_tensor(generator, x)      (B, C, H, W), any H and W -> (B, C', H, W): padded, translated, cropped back
pad_to_multiple(x, multiple)        reflect padding at the bottom and right
batches_by_size(items, batch_size)  (key, tensor) pairs -> lists of pairs whose tensors have one shape
image_to_tensor / tensor_to_image   PIL <-> (C, H, W) in [-1, 1]
```

Any size: inputs are reflect-padded at the bottom and right up to the generator's ``size_multiple`` (4 for the
ResNet generator), translated, and cropped back, so an H x W input gives an H x W output. (Instance norm makes
every output pixel depend on the whole input, padding included: the padded path equals a plain ``generator(x)``
exactly when H and W are already multiples.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import TypeVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..checks import smallest_input_size

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
K = TypeVar("K")


def batches_by_size(
    items: Iterable[tuple[K, torch.Tensor]], batch_size: int, max_waiting: int | None = None
) -> Iterator[list[tuple[K, torch.Tensor]]]:
    """Group ``(key, tensor)`` pairs into batches whose tensors have one shape, at most ``batch_size`` each.

    A batch is yielded as soon as it is full. ``max_waiting`` bounds the pairs held back in other shapes: when a
    pair arrives while more than that many wait in other shapes, the oldest of those groups is yielded first.
    ``0``: consecutive runs of one shape, in input order (nothing is reordered); ``None``: never, every shape is
    grouped until the end (the fewest batches). Groups still waiting at the end come out oldest first. ``items`` is
    consumed lazily, so the pairs can be loaded as they are asked for.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[tuple[int, ...], list[tuple[K, torch.Tensor]]] = {}
    waiting = 0
    for item in items:
        shape = tuple(item[1].shape)
        while max_waiting is not None and waiting - len(groups.get(shape, ())) > max_waiting:
            batch = groups.pop(next(s for s in groups if s != shape))  # the oldest other group
            waiting -= len(batch)
            yield batch
        groups.setdefault(shape, []).append(item)
        waiting += 1
        if len(groups[shape]) == batch_size:
            batch = groups.pop(shape)
            waiting -= len(batch)
            yield batch
    yield from groups.values()


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) at the bottom and right to multiples of ``multiple`` (replicate when the image is
    too small to reflect). Returns (B, C, H', W')."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def _device(generator: nn.Module) -> torch.device:
    param = next(iter(generator.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def _autocast(device: torch.device, precision: str | None):
    if precision not in (None, *PRECISIONS):
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS.get(precision or "fp32")
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


@torch.no_grad()
def translate_tensor(generator: nn.Module, x: torch.Tensor, precision: str | None = None) -> torch.Tensor:
    """(B, input_nc, H, W) in [-1, 1], any H and W -> float32 (B, output_nc, H, W) on ``x``'s device.

    Padded to ``generator.size_multiple`` and cropped back; runs on the generator's device, optionally under
    autocast (``precision`` "bf16" / "fp16"). The generator is used as it is (call ``.eval()`` first).
    Raises ``ValueError`` when the output holds NaN or infinity (such images would be written black).
    """
    if x.dim() != 4:
        raise ValueError(f"expected a (B, C, H, W) image batch; got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    device = _device(generator)
    multiple = int(getattr(generator, "size_multiple", 1))
    padded = pad_to_multiple(x.to(device, torch.float32), multiple)
    try:
        with _autocast(device, precision):
            y = generator(padded)  # (B, output_nc, H', W')
    except (RuntimeError, ValueError) as err:
        smallest = smallest_input_size([(generator, padded.shape[1])], multiple, start=max(padded.shape[-2:]))
        if min(padded.shape[-2:]) < smallest:  # too small, not another failure: say so
            raise ValueError(f"image of {w}x{h} (WxH) is too small for this generator: it accepts at least "
                             f"{smallest}x{smallest}") from err
        raise
    y = y[..., :h, :w].float()
    if not bool(torch.isfinite(y).all()):  # NaN -> 0: black images that would pass for a translation
        low = f" or precision fp32 (not {precision})" if precision in ("fp16", "bf16") else ""
        raise ValueError("the generator produced non-finite values (NaN or infinity): its weights overflow, e.g. "
                         f"from a run that diverged; use an earlier checkpoint{low}")
    return y.to(x.device)


def image_to_tensor(image: Image.Image, channels: int) -> torch.Tensor:
    """A PIL image of any mode -> (channels, H, W) float32 in [-1, 1], converted as ``load_image`` converts."""
    from ..data.folder import convert_channels
    from ..data.transforms import to_normalized_tensor

    return to_normalized_tensor(channels)(convert_channels(image, channels))


def tensor_to_image(y: torch.Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] with C in 1, 3, 4 -> PIL ``L`` / ``RGB`` / ``RGBA`` (rounded by ``to_uint8``)."""
    from ..metrics import to_uint8

    arr = to_uint8(y[None], rgb=False)[0].permute(1, 2, 0).cpu().numpy()  # (H, W, C) uint8
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)


def translate(
    generator: nn.Module,
    images: torch.Tensor | Image.Image | Sequence[Image.Image],
    batch_size: int = 8,
    precision: str | None = None,
) -> torch.Tensor | Image.Image | list[Image.Image]:
    """Translate images of any size; every output has its input's size.

    Args:
        generator: e.g. from :func:`load_generator`; has ``input_nc`` and ``size_multiple``.
        images: a float tensor (B, input_nc, H, W) or (input_nc, H, W) in [-1, 1]; or a PIL image or a list of
            them, any modes and sizes (converted to ``input_nc`` channels like files are: see
            :func:`cutlight.data.folder.convert_channels`).
        batch_size: PIL images of equal size go through the generator together, at most this many at once.
        precision: None / "fp32", "bf16" or "fp16" (autocast).
    Returns:
        A tensor of the input's shape with ``output_nc`` channels, or PIL images (``L``, ``RGB`` or ``RGBA`` for
        1, 3, 4 output channels) in the input's order.
    """
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            return translate_tensor(generator, images[None], precision)[0]
        return translate_tensor(generator, images, precision)
    if isinstance(images, Image.Image):
        return translate(generator, [images], batch_size, precision)[0]
    tensors = [image_to_tensor(img, generator.input_nc) for img in images]  # each (C, H, W)
    out: list[Image.Image | None] = [None] * len(tensors)
    for batch in batches_by_size(enumerate(tensors), batch_size):
        y = translate_tensor(generator, torch.stack([t for _, t in batch]), precision)  # (B, C', H, W)
        for (i, _), yi in zip(batch, y):
            out[i] = tensor_to_image(yi)
    return out
