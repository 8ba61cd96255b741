"""Translation direction: which of the two domains is the source.

Datasets are described as the reference implementation does: domain A and domain B (``trainA``/``trainB``,
``input_nc`` = channels of A, ``output_nc`` = channels of B). ``direction="BtoA"`` swaps the two domains *at the
data level*, once, when a DataModule is built: after :func:`orient`, "A" means the source (what the generator
translates) and "B" the target everywhere downstream (datasets, batches ``{"A", "B"}``, validation loaders, FID
reals, image grids), so models, metrics and callbacks never look at the direction.

Any DataModule adopts it in two lines (``UnpairedDataModule``, ``BuiltinDataModule`` and the single-image one)::

    dir_a, dir_b = orient(direction, dir_a, dir_b)            # folders, files or any per-domain value
    input_nc, output_nc = orient(direction, input_nc, output_nc)
"""

from __future__ import annotations

from typing import TypeVar

from cutlight.checks import check_choice

DIRECTIONS = ("AtoB", "BtoA")

T = TypeVar("T")


def check_direction(direction: str) -> str:
    """``direction`` if it is ``"AtoB"`` or ``"BtoA"``, else ``ValueError`` naming it."""
    return check_choice("direction", direction, DIRECTIONS)


def orient(direction: str, a: T, b: T) -> tuple[T, T]:
    """``(source, target)``: ``(a, b)`` for ``"AtoB"``, ``(b, a)`` for ``"BtoA"``."""
    return (a, b) if check_direction(direction) == "AtoB" else (b, a)
