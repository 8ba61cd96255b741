"""``_target_`` specs without Hydra: the one dotted-path importer (``locate``), the builder of what a checkpoint or
a config names by class path (``build``), and the trust rule both go by.

A spec is a dict of constructor keywords that may carry ``"_target_": "package.module.Class"``; without it the
default class is used. Checkpoints store such plain dicts, so they reload with importlib alone.

Trust: a name in a file is data, and importing it runs code. Unless code is trusted, :func:`locate` imports only

* classes of cutlight's networks, objectives and feature extractors (:data:`ALLOWED_MODULES`), and
* anything under the module prefixes listed in the environment variable ``CUTLIGHT_TRUSTED_MODULES``
  (comma-separated, e.g. ``mypkg.nets,mypkg.extractors``: a user's own networks),

and never a module that lies in the working directory (where ``python -m`` and ``python -c`` look first). Anything
else is refused before it is imported (:class:`UntrustedCodeError`, naming the ``_target_`` and the ways to allow
it). Code is trusted with ``trust_code=True`` where an API takes it, ``--trust-code`` on the commands,
:func:`set_trust_code` for the whole process, or :func:`trusting_code` for a block. The training command trusts
the config the user typed (it is the user's own code), not what it reads back from a checkpoint.
"""

from __future__ import annotations

import contextvars
import importlib
import importlib.util
import os
import sys
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .checks import ConfigValueError

TRUSTED_MODULES_ENV = "CUTLIGHT_TRUSTED_MODULES"
ALLOWED_MODULES = ("cutlight.networks", "cutlight.objectives", "cutlight.metrics.features")
# keys that make Lightning import a dotted path from a checkpoint's hyperparameters before cutlight sees them
LIGHTNING_IMPORT_KEYS = ("_instantiator",)

_trust_default = False  # set_trust_code
_trust_scope: contextvars.ContextVar[bool | None] = contextvars.ContextVar("cutlight_trust_code", default=None)


class UntrustedCodeError(ValueError):
    """A ``_target_`` (or another dotted path) that the trust rule refuses; raised before anything is imported."""


def set_trust_code(enabled: bool = True) -> None:
    """Trust every ``_target_`` for the rest of the process (``False``: back to the allowlist)."""
    global _trust_default
    _trust_default = bool(enabled)


def code_trusted() -> bool:
    """Whether ``_target_`` names are imported without the allowlist here (a :func:`trusting_code` block, else the
    process-wide :func:`set_trust_code`)."""
    scoped = _trust_scope.get()
    return _trust_default if scoped is None else scoped


@contextmanager
def trusting_code(enabled: bool | None = True) -> Iterator[None]:
    """A block in which code is trusted (``enabled=True``) or not (``False``); ``None`` keeps the current setting."""
    token = _trust_scope.set(code_trusted() if enabled is None else bool(enabled))
    try:
        yield
    finally:
        _trust_scope.reset(token)


def trusted_prefixes() -> tuple[str, ...]:
    """The module prefixes of ``CUTLIGHT_TRUSTED_MODULES`` (the user's own)."""
    return tuple(p.strip() for p in os.environ.get(TRUSTED_MODULES_ENV, "").split(",") if p.strip())


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def _refusal(path: str, reason: str) -> UntrustedCodeError:
    return UntrustedCodeError(
        f"refusing to import _target_ {path!r}: {reason}. A checkpoint, export or saved config may only name "
        f"classes of {', '.join(ALLOWED_MODULES)}, because importing anything else runs code from outside "
        f"cutlight. If you trust the file, allow it with trust_code=True (Python API; or "
        f"cutlight.specs.set_trust_code()), --trust-code (commands), or {TRUSTED_MODULES_ENV}=<module prefix> "
        "(comma-separated, e.g. mypkg.nets) for your own networks"
    )


def _in_working_directory(top: str) -> bool:
    """Whether the top-level module ``top`` would come (or came) from the working directory: refused, since
    ``python -m`` / ``python -c`` put the working directory first on ``sys.path``. Checked without executing it."""
    module = sys.modules.get(top)
    try:
        spec = module.__spec__ if module is not None else importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return False  # not importable: import_module says so with the name
    if spec is None:
        return False
    folders = []
    if spec.origin and spec.has_location:  # a module file, or a package's __init__.py
        origin = Path(spec.origin).resolve()
        folders.append(origin.parent.parent if spec.submodule_search_locations is not None else origin.parent)
    folders += [Path(p).resolve().parent for p in spec.submodule_search_locations or []]  # namespace packages
    return Path.cwd().resolve() in folders


def check_target(path: str) -> None:
    """Raise :class:`UntrustedCodeError` unless the trust rule allows importing ``path`` (nothing is imported)."""
    path = str(path)
    if code_trusted():
        return
    own = _under(path, trusted_prefixes())
    if not (own or _under(path, ALLOWED_MODULES)):
        raise _refusal(path, "it is not in cutlight's allowlist")
    top = path.split(".", 1)[0]
    if top != "cutlight" and _in_working_directory(top):
        raise _refusal(path, f"module {top!r} would be imported from the working directory {os.getcwd()}")


def spec_targets(tree: Any) -> set[str]:
    """Every ``_target_`` string of a nested config."""
    found, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            found.update(str(v) for k, v in node.items() if k == "_target_" and isinstance(v, str))
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return found


def check_specs(tree: Any, where: str, allowed: Collection[str] = ()) -> None:
    """Check every ``_target_`` of a nested config (a checkpoint's hyperparameters, a saved config) with
    :func:`check_target` before anything of it is built or imported; ``where`` names the source in the message.
    ``allowed``: names trusted anyway (the training command: those of the config the user typed). Also refuses the
    keys with which Lightning itself imports a dotted path (``_instantiator``)."""
    if code_trusted():
        return
    stack: list[tuple[str, Any]] = [("", tree)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, Mapping):
            for k, v in node.items():
                name = f"{key}.{k}" if key else str(k)
                if k in LIGHTNING_IMPORT_KEYS or (k == "_target_" and v not in allowed):
                    try:
                        check_target(v)
                    except UntrustedCodeError as err:
                        raise UntrustedCodeError(f"{where}, {name}: {err}") from None
                else:
                    stack.append((name, v))
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(node))


def locate(path: str) -> Any:
    """The object at a dotted path (``"package.module.Name"``), with an error naming the path.

    Unless code is trusted, the path is first checked against the trust rule (the module docstring) and, from
    cutlight's allowlist, only a class defined there is returned (not a function, nor a name it imports)."""
    check_target(path)
    module_name, _, attr = str(path).rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as err:
        raise ImportError(f"cannot import {path!r} ({type(err).__name__}: {err})") from err
    if not code_trusted() and not _under(str(path), trusted_prefixes()):
        if not (isinstance(obj, type) and _under(obj.__module__, ALLOWED_MODULES)):
            raise _refusal(str(path), f"it is a {type(obj).__name__} defined in "
                                      f"{getattr(obj, '__module__', '?')}, not a class of the allowlist")
    return obj


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
