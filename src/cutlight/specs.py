"""``_target_`` specs without Hydra: the one dotted-path importer (``locate``) and the builder of what a checkpoint
or a config names by class path (``build``).

A spec is a dict of constructor keywords that may carry ``"_target_": "package.module.Class"``; without it the
default class is used. Checkpoints store such plain dicts, so they reload with importlib alone.
"""

from __future__ import annotations

import importlib
from typing import Any

from .checks import ConfigValueError


def locate(path: str) -> Any:
    """The object at a dotted path (``"package.module.Name"``), with an error naming the path."""
    module_name, _, attr = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ImportError(f"cannot import {path!r} ({type(err).__name__}: {err})") from err


def class_path(cls: type) -> str:
    """``"package.module.Class"`` of ``cls`` (the inverse of ``locate``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def build(spec: dict | None, default: type, name: str = "object", **extra) -> Any:
    """Instantiate ``spec["_target_"]`` (or ``default``) with the spec's other keys plus ``extra``.

    ``name`` labels errors (e.g. ``"generator"``): a bad keyword names the class and the key.
    """
    spec = dict(spec or {})
    target = spec.pop("_target_", None)
    cls = locate(target) if target else default
    try:
        return cls(**spec, **extra)
    except ConfigValueError as err:  # a bad value: name its key as the config spells it (objective.num_patches)
        raise err.prefixed(name) from None
    except TypeError as err:
        raise TypeError(f"cannot build {name} {class_path(cls)} from {sorted(spec)}: {err}") from err
