"""``CUTModule``: ``TranslationModule`` whose default objective is CUT (``CUTObjective``).

CUT / FastCUT, SinCUT and the one-sided baselines (any objective, by its ``_target_``) train in it; its
checkpoints keep the state-dict prefixes ``generator.``, ``discriminator.``, ``sampler.`` and ``objective.``.
"""

from __future__ import annotations

from ..objectives import CUTObjective
from .base import TranslationModule


class CUTModule(TranslationModule):
    """CUT / FastCUT with manual optimization: one Adam for G + MLP heads, one for D (arguments: those of
    ``TranslationModule``; ``objective`` keywords are ``CUTObjective``'s unless it names another ``_target_``)."""

    default_objective = CUTObjective
