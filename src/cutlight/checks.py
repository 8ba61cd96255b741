"""Argument checks shared by the whole package: each error names the argument, the bad value and what is valid.

Configuration values are checked where they enter (constructors). A bad one raises :class:`ConfigValueError`,
a ``ValueError`` that knows the value's dotted key; each builder that nests an object under a name adds that name
(``num_patches`` -> ``objective.num_patches`` in ``CUTModule`` -> ``model.objective.num_patches`` in the training
entrypoint), so the final message names the config key a user would type.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable


class ConfigValueError(ValueError):
    """A bad configuration value: ``key`` (dotted), the ``value`` given and what was ``expected``."""

    def __init__(self, key: str, value: object, expected: str, choice: bool = False, absolute: bool = False) -> None:
        self.key, self.value, self.expected, self.choice, self.absolute = key, value, expected, choice, absolute
        if choice:
            message = f"unknown {key} {value!r}; expected one of {expected}"
        else:
            message = f"{key}={value!r} is invalid: expected {expected}"
        super().__init__(message)

    def prefixed(self, prefix: str) -> ConfigValueError:
        """The same error with ``prefix.`` in front of its key (unchanged when its key is ``absolute``: a full
        config key already, e.g. ``data.input_nc`` named by a model's check)."""
        if self.absolute:
            return self
        return ConfigValueError(f"{prefix}.{self.key}", self.value, self.expected, self.choice)


def check_choice(name: str, value, choices: Iterable) -> object:
    """Return ``value`` if it is one of ``choices``; otherwise raise ``ConfigValueError`` naming both.

    >>> check_choice("gan_mode", "foo", ("lsgan", "vanilla"))
    Traceback (most recent call last):
    cutlight.checks.ConfigValueError: unknown gan_mode 'foo'; expected one of lsgan, vanilla
    """
    choices = tuple(choices)
    if value not in choices:
        raise ConfigValueError(name, value, ", ".join(map(str, choices)), choice=True)
    return value


def _range(low, high, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def check_int(name: str, value, low: int | None = None, high: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int in [low, high] (``None`` passes when ``optional``); else ``ConfigValueError``.

    >>> check_int("crop_size", "abc", low=1)
    Traceback (most recent call last):
    cutlight.checks.ConfigValueError: crop_size='abc' is invalid: expected an integer >= 1
    """
    if value is None and optional:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        what = "an integer" + (f" {_range(low, high, False, False)}" if low is not None or high is not None else "")
        raise ConfigValueError(name, value, what + (" or null" if optional else ""))
    return int(value)


def check_number(
    name: str,
    value,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    example: str | None = None,
) -> float:
    """``value`` as a finite float within the bounds (``*_open``: bound excluded); else ``ConfigValueError``.

    >>> check_number("lr", 0, low=0, low_open=True, example="2e-4")
    Traceback (most recent call last):
    cutlight.checks.ConfigValueError: lr=0 is invalid: expected a finite number > 0 (e.g. 2e-4)
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = not (low is not None and (value <= low if low_open else value < low))
        ok = ok and not (high is not None and (value >= high if high_open else value > high))
    if not ok:
        bounds = _range(low, high, low_open, high_open)
        raise ConfigValueError(name, value, "a finite number" + (f" {bounds}" if bounds else "")
                               + (f" (e.g. {example})" if example else ""))
    return float(value)


def check_int_list(name: str, value, low: int | None = None) -> list[int]:
    """A non-empty list of integers (each >= ``low``); else ``ConfigValueError``."""
    items = list(value) if isinstance(value, (list, tuple)) else None
    if not items or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items) or (
        low is not None and min(items) < low
    ):
        raise ConfigValueError(name, value, "a non-empty list of integers" + (f" >= {low}" if low is not None else ""))
    return [int(v) for v in items]


def _probe(net, channels: int, size: int) -> str | None:
    """Run ``net`` on a (1, channels, size, size) meta tensor (shapes only, no compute, weights untouched).
    Returns the error it raises (first line), or None when it accepts the size or cannot be probed."""
    import itertools

    import torch
    from torch.func import functional_call

    if getattr(net, "_compiled_call_impl", None) is not None:  # torch.compile'd in place: not probed
        return None
    tensors = {n: torch.empty_like(t, device="meta") for n, t in itertools.chain(net.named_parameters(),
                                                                                  net.named_buffers())}
    try:
        with torch.no_grad():
            functional_call(net, tensors, (torch.empty(1, channels, size, size, device="meta"),))
    except (RuntimeError, ValueError, IndexError, NotImplementedError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "meta" in text:  # something the probe could not move to the meta device: cannot tell
            return None
        return f"{type(net).__name__}: {text}"
    return None


def smallest_input_size(nets, multiple: int = 1, start: int = 64, limit: int = 8192) -> int | None:
    """The smallest multiple of ``multiple`` that every ``(network, channels)`` of ``nets`` accepts as a square
    input (probed on the meta device; assumes that larger sizes keep working); None when no size up to ``limit``
    works (then the networks cannot be probed this way)."""
    nets = list(nets)

    def works(k: int) -> bool:
        return not any(_probe(n, c, k * multiple) for n, c in nets)

    hi = max(1, -(-start // multiple))  # smallest k with k * multiple >= start
    while not works(hi):
        if hi * multiple >= limit:
            return None
        hi *= 2
    lo = 0  # invariant: lo * multiple fails (or is 0), hi * multiple works
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    return hi * multiple


def check_input_size(name: str, size, nets, multiple: int = 1) -> int:
    """Check that every ``(network, channels)`` in ``nets`` takes square ``size`` x ``size`` inputs.

    The networks are run on the meta device (no memory, no compute), so any architecture is checked by what it
    actually accepts. On failure the ``ConfigValueError`` names the smallest size that works (searched among
    multiples of ``multiple``) and the network's own error.
    """
    size = check_int(name, size, low=1)
    nets = list(nets)

    def problem(s: int) -> str | None:
        if s % multiple:
            return f"not a multiple of {multiple}"
        return next((p for p in (_probe(n, c, s) for n, c in nets) if p), None)

    why = problem(size)
    if why is None:
        return size
    smallest = smallest_input_size(nets, multiple, start=size)
    if smallest is None:  # no size works on the meta device: the probe, not the size, is at fault
        if size % multiple == 0:
            logging.getLogger(__name__).warning("%s=%s: the networks could not be checked on the meta device (%s)",
                                                name, size, why)
            return size
        smallest = multiple
    names = " and ".join(sorted({type(n).__name__ for n, _ in nets}))
    near = sorted({max(smallest, size // multiple * multiple), max(smallest, -(-size // multiple) * multiple)})
    raise ConfigValueError(
        name, size, f"a multiple of {multiple} of at least {smallest} (the smallest input {names} accept), "
        f"e.g. {' or '.join(map(str, near))}; got: {why}"
    )


def check_bool(name: str, value) -> bool:
    """``value`` if it is a bool; else ``ConfigValueError`` (a string such as 'false' is not silently true)."""
    if not isinstance(value, bool):
        raise ConfigValueError(name, value, "true or false")
    return value


def check_settings(name: str, check, settings) -> object:
    """``check(settings)`` for a mapping of keyword settings (``optimizer``, ``nonfinite``): a bad value's
    ``ConfigValueError`` gets ``name.`` in front of its key; an unknown keyword raises one naming ``name``."""
    if not hasattr(settings, "items"):
        raise ConfigValueError(name, settings, "a mapping of keyword settings")
    try:
        return check(dict(settings))
    except ConfigValueError as err:
        raise err.prefixed(name) from None
    except TypeError as err:  # an unknown keyword
        raise ConfigValueError(name, dict(settings), f"valid keywords ({err})") from None
