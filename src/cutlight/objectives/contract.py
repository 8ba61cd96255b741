"""The method contract: what an objective declares so that one LightningModule trains, checks, saves and loads it.

A method is an ``Objective`` (an ``nn.Module``: its own state, e.g. image pools, goes into checkpoints) that says

* ``roles()``: its networks by role, in build order, each a ``Role``: which model node (``generator``,
  ``discriminator``, ``sampler``) gives its keywords, the class built when that node names no ``_target_``, default
  keywords under the node's, the direction a generator translates (``BtoA`` swaps the channel counts), the domain
  a discriminator judges (its ``input_nc``), the generator whose features MLP heads project (their
  ``in_channels`` at the objective's ``nce_layers``), and keywords computed from the networks built before it;
* ``optimizers()``: which roles each optimizer trains, in order, with Adam keywords of its own where the method
  needs them (they override the module's ``optimizer`` settings for that optimizer only);
* ``translators()``: which role translates A to B (and B to A where one does): what validation, prediction,
  export and inference use;
* ``iteration(nets, batch, optimizers, backward)``: one training iteration (every optimizer step of it), returning
  its loss terms as detached tensors;

and optionally ``check_channels`` (settings that need equal channel counts, checked before training) and
``visuals`` (image columns for grids). ``build_networks`` builds the roles from model-node specs; it is plain
PyTorch, the LightningModule only calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..specs import build, class_path

Nets = Mapping[str, nn.Module]  # role -> network
Batch = Mapping[str, torch.Tensor]  # "A": (B, C_A, H, W), "B": (B, C_B, H, W) in [-1, 1]
Optimizers = Mapping[str, torch.optim.Optimizer]  # name (as ``Objective.optimizers`` orders them) -> optimizer
Backward = Callable[[torch.Tensor], None]

KINDS = ("generator", "discriminator", "sampler")  # the model nodes a role can be built from
DIRECTIONS = ("AtoB", "BtoA")


@dataclass(frozen=True)
class Role:
    """How one network of a method is built.

    Attributes:
        kind: the model node whose keywords (or ``nn.Module`` instance) build it: ``generator``, ``discriminator``,
            ``sampler``; None: a network of the method's own, built from ``default(**base)`` (no config node).
        default: the class built when the node names no ``_target_``.
        base: keywords under the node's (the node's own keys win), e.g. CycleGAN's original layout.
        translates: for generators, ``AtoB`` (the node's ``input_nc`` -> ``output_nc``) or ``BtoA`` (swapped).
        judges: for discriminators of two-domain methods, ``A`` or ``B``: the domain whose images it scores, which
            sets its ``input_nc`` (None: the node's ``input_nc`` as given).
        features_of: for MLP heads, the generator role (built before) whose features at the objective's
            ``nce_layers`` it projects: sets ``in_channels``; checkpoints record it (analysis loads heads by it).
        extra: other keywords computed from the networks built before this one.
    """

    kind: str | None
    default: type[nn.Module]
    base: Mapping[str, Any] = field(default_factory=dict)
    translates: str | None = None
    judges: str | None = None
    features_of: str | None = None
    extra: Callable[[Nets], dict] | None = None

    def __post_init__(self):
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"unknown role kind {self.kind!r}; expected one of {', '.join(KINDS)} or None")
        if self.translates not in (None, *DIRECTIONS):
            raise ValueError(f"unknown direction {self.translates!r}; expected AtoB or BtoA")
        if self.judges not in (None, "A", "B"):
            raise ValueError(f"unknown domain {self.judges!r}; expected A or B")


@dataclass(frozen=True)
class OptimizerGroup:
    """One optimizer: the roles whose parameters it trains and its own Adam keywords (over the module's)."""

    roles: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)


class Objective(nn.Module):
    """Base class of a method (see the module docstring). Subclasses implement ``roles``, ``optimizers`` and
    ``iteration``; the defaults say that the role ``generator`` translates A to B."""

    progress: dict[str, str] = {}  # progress-bar entries during training: name -> loss term (e.g. nce -> loss_nce)

    def roles(self) -> dict[str, Role]:
        raise NotImplementedError

    def optimizers(self) -> dict[str, OptimizerGroup]:
        raise NotImplementedError

    def translators(self) -> dict[str, str]:
        """Direction (``AtoB``, optionally ``BtoA``) -> the role that translates it."""
        return {"AtoB": "generator"}

    def check_channels(self, input_nc: int, output_nc: int) -> None:
        """Raise ``ValueError`` naming the setting when these A / B channel counts cannot train (default: any)."""

    @torch.no_grad()
    def visuals(self, nets: Nets, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """Labelled image columns for grids (source first, its translation second), or None for the module's
        default (source, translation, target example)."""
        return None

    @torch.no_grad()
    def image_metrics(
        self, nets: Nets, source: torch.Tensor, translation: torch.Tensor, target: torch.Tensor, patches: int
    ) -> dict[str, torch.Tensor]:
        """Validation metrics the method itself defines on one whole source image, its translation and a target
        image (single-image training shows them at each validation; e.g. CUT's PatchNCE of the translation):
        name -> scalar, logged as ``val/<name>``. ``patches``: positions drawn per feature map where the metric
        samples any (torch RNG). Default: none."""
        return {}

    def iteration(
        self, nets: Nets, batch: Batch, optimizers: Optimizers, backward: Backward | None = None
    ) -> dict[str, torch.Tensor]:
        """One training iteration on ``batch`` (``{"A": real_a, "B": real_b}``), stepping ``optimizers``;
        ``backward(loss)`` defaults to ``loss.backward()`` (Lightning passes ``manual_backward``). Returns the
        detached loss terms (at least ``loss_g`` and ``loss_d``)."""
        raise NotImplementedError


def domain_channels(spec: dict | nn.Module | None) -> tuple[int, int]:
    """(A channels, B channels) from the ``generator`` node: its ``input_nc`` / ``output_nc`` (3 when unset)."""
    if isinstance(spec, nn.Module):
        return int(getattr(spec, "input_nc", 3)), int(getattr(spec, "output_nc", 3))
    spec = spec or {}
    return int(spec.get("input_nc", 3)), int(spec.get("output_nc", 3))


def build_networks(
    objective: Objective, specs: Mapping[str, dict | nn.Module | None]
) -> tuple[dict[str, nn.Module], dict[str, dict | None]]:
    """Build ``objective``'s roles from the model nodes ``specs`` (``{"generator": {...} | module | None, ...}``).

    Returns (role -> network, role -> the constructor keywords with ``_target_`` it was built from, None for an
    instance passed in). An ``nn.Module`` instance stands for the one role of its kind (two roles of one kind, e.g.
    CycleGAN's generators, need keywords: each is built with its own channels).
    """
    roles = objective.roles()
    unknown = [r for r, t in objective.translators().items() if r not in DIRECTIONS or t not in roles]
    if unknown:
        raise ValueError(f"{type(objective).__name__}.translators() names {unknown}: expected AtoB / BtoA -> one of "
                         f"its roles {sorted(roles)}")
    in_nc, out_nc = domain_channels(specs.get("generator"))
    nets: dict[str, nn.Module] = {}
    configs: dict[str, dict | None] = {}
    for name, role in roles.items():
        spec = specs.get(role.kind) if role.kind else None
        if isinstance(spec, nn.Module):
            sharing = [r for r, other in roles.items() if other.kind == role.kind]
            if len(sharing) > 1:
                raise ValueError(f"{role.kind} is an nn.Module instance, but {type(objective).__name__} builds "
                                 f"{len(sharing)} {role.kind} roles ({', '.join(sharing)}) from it: pass keywords")
            nets[name], configs[name] = spec, None
            continue
        kwargs = {**role.base, **(spec or {})}
        if role.translates == "BtoA":
            kwargs["input_nc"], kwargs["output_nc"] = out_nc, in_nc
        if role.judges is not None:
            kwargs["input_nc"] = in_nc if role.judges == "A" else out_nc
        extra = role.extra(nets) if role.extra is not None else {}
        if role.features_of is not None:
            extra["in_channels"] = nets[role.features_of].feature_channels(objective.nce_layers)
        net = build(kwargs, role.default, role.kind or name, **extra)
        nets[name] = net
        configs[name] = {**{k: v for k, v in kwargs.items() if k != "_target_"}, **extra,
                         "_target_": class_path(type(net))}
    objective.check_channels(in_nc, out_nc)
    return nets, configs


def optimizer_parameters(objective: Objective, nets: Nets) -> dict[str, list[nn.Parameter]]:
    """Optimizer name -> the parameters of its roles (every role's parameters exactly once over all optimizers)."""
    groups = objective.optimizers()
    owners: dict[str, str] = {}
    for opt, group in groups.items():
        for role in group.roles:
            if role not in nets:
                raise ValueError(f"optimizer {opt!r} of {type(objective).__name__} trains role {role!r}, which it "
                                 f"does not declare (roles: {', '.join(nets)})")
            if role in owners:
                raise ValueError(f"role {role!r} is trained by two optimizers ({owners[role]!r} and {opt!r})")
            owners[role] = opt
    return {opt: [p for role in group.roles for p in nets[role].parameters()] for opt, group in groups.items()}
