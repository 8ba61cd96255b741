"""KID's subset policy: one rule for validation and for folder evaluation."""

from __future__ import annotations

KID_SEED = 0  # KID draws random subsets; a fixed seed makes its value reproducible


def kid_subset_size(n_real: int, n_fake: int, default: int = 1000) -> int:
    """KID subset size: ``min(default, n_real, n_fake)``; raises ValueError when that is below 2."""
    size = min(default, n_real, n_fake)
    if size < 2:
        raise ValueError(
            f"KID needs at least 2 images on each side; got n_real={n_real}, n_fake={n_fake}, default={default}"
        )
    return size
