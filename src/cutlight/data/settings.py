"""Checks of the DataModules' settings whose type the shared checks (:mod:`cutlight.checks`) do not cover: paths,
optional flags and channel counts. Each raises :class:`~cutlight.checks.ConfigValueError` naming the argument,
which the training entrypoint turns into the config key (``data.root``), so ``data.flip=maybe`` or
``data.dir_a=1.5`` stop before anything runs instead of being used as a truthy string or failing deep in
``pathlib``.
"""

from __future__ import annotations

import numbers
import os

from cutlight.checks import ConfigValueError


def check_path(name: str, value, optional: bool = True) -> str | None:
    """``value`` as a path string (``None`` passes when ``optional``); else ``ConfigValueError``.

    An integer becomes its digits: Hydra reads ``data.root=2024`` as the number 2024, which names the folder
    ``2024``. Other values (a float, a boolean, a list) are refused, with how to quote a name that looks like one.
    """
    if value is None and optional:
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    hint = f"; a name that reads as a number or a boolean is quoted: {name}=\"'{value}'\"" if isinstance(
        value, (numbers.Number, bool)) else ""
    raise ConfigValueError(name, value, f"a file or folder path (a string{hint})" + (" or null" if optional else ""))


def check_flag(name: str, value, optional: bool = False) -> bool | None:
    """``value`` if it is a bool (``None`` passes when ``optional``: automatic); else ``ConfigValueError``."""
    if value is None and optional:
        return None
    if not isinstance(value, bool):
        raise ConfigValueError(name, value, "true or false" + (" or null (automatic)" if optional else ""))
    return value


def check_channels(name: str, value, choices: tuple[int, ...], what: str) -> int:
    """``value`` if it is one of the channel counts ``choices`` (a boolean is not 1); else ``ConfigValueError``
    saying ``what`` they mean (e.g. ``"L, RGB, RGBA images"``)."""
    if isinstance(value, bool) or value not in choices:
        raise ConfigValueError(name, value, f"one of {choices} ({what})")
    return int(value)
