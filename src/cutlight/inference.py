"""Using a trained generator, without the training config.

```
load_generator(path)          a ready (eval-mode) generator from a cutlight Lightning checkpoint (CUT, or CycleGAN
                              with ``direction``), a cutlight safetensors export, or a bare generator state dict
                              such as the reference implementation's ``latest_net_G.pth`` (layout read from keys)
read_generator(path)          the same, unbuilt: class path, constructor kwargs, state dict, what was found
translate(generator, images)  a tensor batch or PIL images of any size -> outputs of the inputs' sizes
translate_folder(ckpt, ...)   files / folders / globs -> image files (defined in cutlight.translate, with the CLI)
```

Any size: inputs are reflect-padded at the bottom and right up to the generator's ``size_multiple`` (4 for the
ResNet generator), translated, and cropped back, so an H x W input gives an H x W output. (Instance norm makes
every output pixel depend on the whole input, padding included: the padded path equals a plain ``generator(x)``
exactly when H and W are already multiples.)
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .checkpoint import nonfinite_entries, read_checkpoint, state_dict_mismatch
from .checks import smallest_input_size
from .networks import resnet_generator_kwargs, strip_prefix

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "cutlight.networks.ResnetGenerator"
DIRECTIONS = {"AtoB": "gen_a", "BtoA": "gen_b"}  # CycleGAN checkpoints: which network translates which way
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


# ----------------------------------------------------------------------------------------------- loading


@dataclass
class GeneratorSpec:
    """What a checkpoint holds: ``target`` (dotted class path), constructor ``kwargs``, ``state_dict`` and a
    one-line description of what was found (``source``)."""

    target: str
    kwargs: dict
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    source: str

    def config(self) -> dict:
        """Constructor arguments with ``_target_`` (as stored in checkpoints and safetensors exports)."""
        return {"_target_": self.target, **self.kwargs}


def resolve_target(target: str, where: str = "") -> type[nn.Module]:
    """Import the ``nn.Module`` subclass named by a dotted path (``"cutlight.networks.ResnetGenerator"``).

    Only ``nn.Module`` subclasses are accepted: a checkpoint cannot make the loader call an arbitrary function.
    """
    module_name, _, attr = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr) if module_name else None
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import generator class {target!r}{where}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"generator _target_ {target!r}{where} is not an importable torch.nn.Module subclass")
    return cls


def _torch_load(path: Path) -> object:
    return read_checkpoint(path)  # errors say what is wrong: empty, truncated, not a checkpoint, unsafe pickle


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise ImportError(f"reading '{path}' needs safetensors: pip install 'cutlight[export]'") from err
    import json

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "cutlight_generator" not in meta:
        raise ValueError(f"'{path}' is a safetensors file without cutlight's 'cutlight_generator' metadata "
                         "(written by `python -m cutlight.export --format safetensors`)")
    return json.loads(meta["cutlight_generator"]), state


def _from_lightning(path: Path, ckpt: dict, direction: str | None) -> tuple[dict, dict, str]:
    """(generator config, state dict, description) from a Lightning checkpoint's ``state_dict``."""
    weights = ckpt["state_dict"]
    prefixes = {k.split(".", 1)[0] for k in weights}
    if "generator" in prefixes:
        if direction == "BtoA":
            raise ValueError(f"'{path}' holds one generator, which translates A to B; "
                             "direction 'BtoA' needs a CycleGAN checkpoint (networks gen_a and gen_b)")
        name = "generator"
    elif {"gen_a", "gen_b"} & prefixes:
        if direction is None:
            raise ValueError(f"'{path}' holds two generators (gen_a: A to B, gen_b: B to A); "
                             "choose one with direction='AtoB' or 'BtoA' (CLI: --direction)")
        name = DIRECTIONS[direction]
        if name not in prefixes:
            raise ValueError(f"'{path}' has no '{name}.*' weights for direction {direction!r}")
    else:
        raise ValueError(f"'{path}' is a Lightning checkpoint without generator weights: expected 'generator.*' "
                         f"(CUT) or 'gen_a.*' / 'gen_b.*' (CycleGAN) in its state_dict; found prefixes "
                         f"{sorted(prefixes)}")
    state = {k[len(name) + 1:].replace("_orig_mod.", ""): v for k, v in weights.items() if k.startswith(name + ".")}
    config = dict((ckpt.get("hyper_parameters") or {}).get("generator") or {})
    if name == "gen_b":  # G_B translates B to A: the shared generator settings with the channel counts swapped
        config["input_nc"], config["output_nc"] = config.get("output_nc", 3), config.get("input_nc", 3)
    return config, state, f"cutlight Lightning checkpoint '{path}' ({name})"


def _from_state_dict(path: Path, state: dict, overrides: dict) -> tuple[dict, dict, str]:
    """(generator config, state dict, description) for a bare state dict (reference layout or given kwargs)."""
    state = strip_prefix(strip_prefix({k: v for k, v in state.items() if k != "_metadata"}), "_orig_mod.")
    if "_target_" in overrides and overrides["_target_"] != DEFAULT_TARGET:
        return {}, state, f"state dict '{path}' ({overrides['_target_']} from the given arguments)"
    try:
        found = resnet_generator_kwargs(state)
    except ValueError as err:
        raise ValueError(
            f"'{path}' is neither a cutlight checkpoint (Lightning .ckpt with 'state_dict' and 'generator.*' or "
            f"'gen_a.*'/'gen_b.*' weights; or a cutlight .safetensors export) nor a reference ResNet generator "
            f"state dict ({err})"
        ) from err
    layout = "CUT (antialiased)" if found["antialias"] else "CycleGAN (strided conv / transposed conv)"
    desc = ", ".join(f"{k}={v}" for k, v in found.items())
    return found, state, f"reference-layout generator state dict '{path}': {layout}, {desc} ({len(state)} entries)"


def read_generator(path: str | os.PathLike, direction: str | None = None, **generator_kwargs) -> GeneratorSpec:
    """Read a generator checkpoint without building the network; see :func:`load_generator`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at '{path}'")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {', '.join(DIRECTIONS)}")
    if path.suffix == ".safetensors":
        config, state = _read_safetensors(path)
        source = f"cutlight safetensors export '{path}'"
    else:
        ckpt = _torch_load(path)
        if not isinstance(ckpt, dict) or not all(isinstance(k, str) for k in ckpt):
            raise ValueError(f"'{path}' holds a {type(ckpt).__name__}, not a checkpoint dict or a state dict")
        if isinstance(ckpt.get("state_dict"), dict):
            config, state, source = _from_lightning(path, ckpt, direction)
        else:
            if direction is not None:
                logger.warning("direction %r ignored: '%s' holds a single generator", direction, path)
            config, state, source = _from_state_dict(path, ckpt, generator_kwargs)
    config = {**config, **generator_kwargs}
    target = config.pop("_target_", DEFAULT_TARGET)
    return GeneratorSpec(target=target, kwargs=config, state_dict=state, source=source)


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """Construct ``spec``'s generator and load its weights strictly (errors name the source and the config)."""
    cls = resolve_target(spec.target, f" (from {spec.source})")
    bad = nonfinite_entries(spec.state_dict)
    if bad:
        raise ValueError(f"{spec.source} holds non-finite weights (NaN or infinity in {len(bad)} tensor(s): "
                         f"{', '.join(bad[:5])}): the run that wrote it diverged; use an earlier checkpoint")
    try:
        generator = cls(**spec.kwargs)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"cannot rebuild the generator from {spec.source} with {spec.config()}: {err}") from err
    mismatch = state_dict_mismatch(generator.state_dict(), spec.state_dict)
    if mismatch:  # the keys and shapes, not PyTorch's line per tensor
        raise ValueError(f"the weights of {spec.source} do not fit the generator built with {spec.config()}: "
                         f"{mismatch}")
    generator.load_state_dict(spec.state_dict, strict=True)
    return generator


def load_generator(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    direction: str | None = None,
    **generator_kwargs,
) -> nn.Module:
    """A ready (eval-mode) generator from a checkpoint file.

    Accepted files:
        * a cutlight Lightning checkpoint: constructor kwargs from ``hyper_parameters["generator"]`` (its
          ``_target_`` names the class; default ``cutlight.networks.ResnetGenerator``), weights ``generator.*``
          (``_orig_mod.`` from ``torch.compile`` removed); CycleGAN checkpoints hold ``gen_a.*`` (A to B) and
          ``gen_b.*`` (B to A): ``direction="AtoB"`` / ``"BtoA"`` picks one;
        * a ``.safetensors`` file written by ``cutlight.export`` (constructor kwargs in its metadata);
        * a bare state dict (with or without ``module.``): the reference implementation's ``latest_net_G.pth``
          (CUT, FastCUT) or ``latest_net_G_A.pth`` / ``latest_net_G_B.pth`` (CycleGAN), or cutlight's own
          ``generator.state_dict()``; the architecture is read from the keys (see
          :func:`cutlight.networks.resnet_generator_kwargs`) and logged.

    ``generator_kwargs`` override what the file says (e.g. ``norm="none"``, which a state dict cannot show).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is none of the above, or its weights do not fit (the message names the file).
    """
    spec = read_generator(path, direction, **generator_kwargs)
    logger.info("loading %s", spec.source)
    generator = build_generator(spec)
    return generator.to(device or "cpu").eval()


# ------------------------------------------------------------------------------------------- translation


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
    from .data.folder import convert_channels
    from .data.transforms import to_normalized_tensor

    return to_normalized_tensor(channels)(convert_channels(image, channels))


def tensor_to_image(y: torch.Tensor) -> Image.Image:
    """(C, H, W) in [-1, 1] with C in 1, 3, 4 -> PIL ``L`` / ``RGB`` / ``RGBA`` (rounded by ``to_uint8``)."""
    from .metrics import to_uint8

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
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tensors):
        by_size.setdefault(tuple(t.shape), []).append(i)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            y = translate_tensor(generator, torch.stack([tensors[i] for i in chunk]), precision)
            for i, yi in zip(chunk, y):
                out[i] = tensor_to_image(yi)
    return out


def __getattr__(name: str):
    # translate_folder (the folder pipeline) lives next to its CLI in cutlight.translate; importable from here too
    if name == "translate_folder":
        from .translate import translate_folder

        return translate_folder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # the former CLI home: `python -m cutlight.inference ...` = `python -m cutlight.translate ...`
    import sys

    from .translate import main

    sys.exit(main())
