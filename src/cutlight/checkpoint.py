"""Reading checkpoint files, with errors that name the file and say what is wrong with it (plain PyTorch).

``torch.load`` on a bad file raises a bare ``EOFError``, a zip-reader ``RuntimeError`` or an ``UnpicklingError``
that suggests ``weights_only=False``; :func:`read_checkpoint` tells the cases apart: missing, empty, truncated
(an incomplete zip archive: a save that was interrupted), not a PyTorch file at all, damaged pickle data, or a
pickle holding more than tensors and plain containers (never loaded: that would run arbitrary code).
:func:`state_dict_mismatch` names the keys and shapes that keep a state dict from fitting a model;
:func:`nonfinite_entries` the tensors holding NaN or infinity.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file and the reason."""


def read_checkpoint(path: str | os.PathLike) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with a :class:`CheckpointError` naming the file
    and the problem (``FileNotFoundError`` when there is no file)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint file at '{path}'")
    if path.is_dir():
        raise CheckpointError(f"checkpoint '{path}' is a directory, not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint '{path}' is empty (0 bytes): nothing was written to it (e.g. a save that "
                              "was killed at once); use an earlier checkpoint")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] == _ZIP_MAGIC and not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint '{path}' is truncated: an incomplete zip archive of {size} bytes (its "
                              "end is missing, e.g. a save that was interrupted); use an earlier checkpoint")
    if head[:4] != _ZIP_MAGIC and head[:1] != b"\x80":
        raise CheckpointError(f"'{path}' is not a PyTorch checkpoint: it starts with {head!r}, while torch.save "
                              "writes a zip archive (b'PK\\x03\\x04') or a pickle (b'\\x80')")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"WeightsUnpickler error:\s*(.*?)(\. |\.?$)", str(err), re.MULTILINE)
        reason = found.group(1) if found else (str(err).strip().splitlines() or [type(err).__name__])[0]
        if reason.startswith("Unsupported operand"):  # a byte that is no pickle instruction torch.save writes
            raise CheckpointError(f"checkpoint '{path}' cannot be read: its pickle data holds an instruction that "
                                  f"torch.save never writes ({reason}; {size} bytes): a damaged file, or a pickle "
                                  "not written by torch.save; use an earlier checkpoint") from err
        raise CheckpointError(
            f"checkpoint '{path}' holds more than tensors and plain containers, which cutlight never unpickles "
            f"(it could run arbitrary code): {reason}"
        ) from err
    except (EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"checkpoint '{path}' is truncated or corrupt ({type(err).__name__}: {err}; "
                              f"{size} bytes); use an earlier checkpoint") from err
    except Exception as err:  # noqa: BLE001 - damaged data: RuntimeError, OSError, IndexError, KeyError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"checkpoint '{path}' cannot be read ({type(err).__name__}: {first}; {size} bytes); "
                              "it may be truncated or corrupt") from err


def nonfinite_entries(state_dict: Mapping[str, object]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or +-inf."""
    names = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(state_dict[k]).all().cpu() for k in names])  # one sync for all
    return [k for k, ok in zip(names, flags.tolist()) if not ok]


def state_dict_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor], limit: int = 8
                        ) -> str | None:
    """Why ``found`` does not load into a model whose state dict is ``expected`` (missing and unexpected keys,
    shape differences, at most ``limit`` of each), or None when it fits."""
    def some(items: list[str]) -> str:
        return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")

    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k} {tuple(found[k].shape)} (the model has {tuple(expected[k].shape)})" for k in expected
              if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing keys: {some(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {some(unexpected)}")
    if shapes:
        parts.append(f"different shapes: {some(shapes)}")
    return "; ".join(parts) or None


def checkpoint_roles(ckpt: Mapping[str, object]) -> dict:
    """What a cutlight Lightning checkpoint says about its networks (its ``cutlight_networks`` entry):
    ``translators`` (direction ``AtoB`` / ``BtoA`` -> role), ``heads`` (MLP-head role -> the generator role whose
    features it projects), ``nce_layers`` and ``configs`` (role -> constructor keywords, ``_target_`` included).

    Checkpoints written before the method contract have no such entry; it is read from their layout instead:
    ``generator.*`` (+ ``sampler.*``) is CUTModule's, ``gen_a.*`` / ``gen_b.*`` CycleGANModule's (G_B gets the
    generator keywords with the channel counts swapped).
    """
    saved = ckpt.get("cutlight_networks")
    if isinstance(saved, Mapping):
        return {"translators": dict(saved.get("translators") or {}), "heads": dict(saved.get("heads") or {}),
                "nce_layers": list(saved.get("nce_layers") or []), "configs": dict(saved.get("configs") or {})}
    weights = ckpt.get("state_dict") or {}
    prefixes = {str(k).split(".", 1)[0] for k in weights}
    hparams = ckpt.get("hyper_parameters") or {}
    gen = dict(hparams.get("generator") or {})
    layers = list((hparams.get("objective") or {}).get("nce_layers") or [])
    if "generator" in prefixes:
        heads = {"sampler": "generator"} if "sampler" in prefixes else {}
        return {"translators": {"AtoB": "generator"}, "heads": heads, "nce_layers": layers,
                "configs": {"generator": gen, "sampler": dict(hparams.get("sampler") or {})}}
    if {"gen_a", "gen_b"} & prefixes:
        swapped = {**gen, "input_nc": gen.get("output_nc", 3), "output_nc": gen.get("input_nc", 3)}
        return {"translators": {"AtoB": "gen_a", "BtoA": "gen_b"}, "heads": {}, "nce_layers": [],
                "configs": {"gen_a": gen, "gen_b": swapped}}
    return {"translators": {}, "heads": {}, "nce_layers": [], "configs": {}}


def role_state_dict(ckpt: Mapping[str, object], role: str) -> dict[str, torch.Tensor]:
    """The weights of network ``role`` in a Lightning checkpoint, its prefix (and ``torch.compile``'s
    ``_orig_mod.``) removed."""
    prefix = role + "."
    return {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in (ckpt.get("state_dict") or {}).items()
            if k.startswith(prefix)}
