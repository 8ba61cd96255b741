"""Argument checks shared by the whole package: each error names the argument, the bad value and what is valid."""

from __future__ import annotations

from collections.abc import Iterable


def check_choice(name: str, value, choices: Iterable) -> object:
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ValueError`` naming both.

    >>> check_choice("gan_mode", "foo", ("lsgan", "vanilla"))
    Traceback (most recent call last):
    ValueError: unknown gan_mode 'foo'; expected one of lsgan, vanilla
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {', '.join(map(str, choices))}")
    return value
