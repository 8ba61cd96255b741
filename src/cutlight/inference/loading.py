"""Loading a trained generator (and the PatchNCE heads) from a file, without the training config.

```
load_generator(path)          a ready (eval-mode) generator from a cutlight Lightning checkpoint of any method (a
                              two-generator one with ``direction``), a cutlight safetensors export, or a bare
                              generator state dict such as the reference implementation's ``latest_net_G.pth``
read_generator(path)          the same, unbuilt: class path, constructor kwargs, state dict, what was found
build_generator(spec)         construct a ``read_generator`` result and load its weights strictly
load_sampler(path, generator) the MLP heads of a checkpoint's generator and their ``nce_layers``
```

Lightning checkpoints are read by role: the checkpoint says which role translates A to B (and B to A) and which
heads project which generator's features, with each role's constructor keywords (``cutlight_networks``, read by
``cutlight.checkpoint.checkpoint_roles``, which also understands the CUT / CycleGAN layouts from before it). No
network name is hard-coded here.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..checkpoint import (
    checkpoint_roles,
    nonfinite_entries,
    read_checkpoint,
    role_state_dict,
    state_dict_mismatch,
)
from ..networks import PatchSampler, load_network_weights, resnet_generator_kwargs, strip_prefix
from ..objectives import CUTObjective
from ..objectives.contract import DIRECTIONS
from ..specs import UntrustedCodeError, check_specs, locate, trusting_code

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "cutlight.networks.ResnetGenerator"
PAPER_LAYERS = list(inspect.signature(CUTObjective).parameters["nce_layers"].default)


@dataclass
class GeneratorSpec:
    """What a checkpoint holds: ``target`` (dotted class path), constructor ``kwargs``, ``state_dict`` and a
    one-line description of what was found (``source``)."""

    target: str
    kwargs: dict
    state_dict: dict[str, torch.Tensor] = field(repr=False)
    source: str

    def config(self) -> dict:
        """Constructor arguments with ``_target_`` (as stored in checkpoints and safetensors exports)."""
        return {"_target_": self.target, **self.kwargs}


def resolve_target(target: str, where: str = "") -> type[nn.Module]:
    """Import the ``nn.Module`` subclass named by a dotted path (``"cutlight.networks.ResnetGenerator"``).

    Only ``nn.Module`` subclasses are accepted: a checkpoint cannot make the loader call an arbitrary function;
    and unless code is trusted, only classes that ``cutlight.specs.locate`` allows (refused before import).
    """
    try:
        cls = locate(target) if "." in target else None
    except UntrustedCodeError as err:
        raise UntrustedCodeError(f"generator of {where.strip(' ()')}: {err}" if where else str(err)) from None
    except ImportError as err:
        raise ValueError(f"cannot import generator class {target!r}{where}: {err}") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f"generator _target_ {target!r}{where} is not an importable torch.nn.Module subclass")
    return cls


def _torch_load(path: Path) -> object:
    return read_checkpoint(path)  # errors say what is wrong: empty, truncated, not a checkpoint, unsafe pickle


def _read_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import safe_open
    except ImportError as err:
        raise ImportError(f"reading '{path}' needs safetensors: pip install 'cutlight[export]'") from err
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "cutlight_generator" not in meta:
        raise ValueError(f"'{path}' is a safetensors file without cutlight's 'cutlight_generator' metadata "
                         "(written by `python -m cutlight.cli.export --format safetensors`)")
    return json.loads(meta["cutlight_generator"]), state


def _from_lightning(path: Path, ckpt: dict, direction: str | None) -> tuple[dict, dict, str]:
    """(generator config, state dict, description) of the role that translates ``direction`` (None: the only one,
    or an error naming the choice) in a Lightning checkpoint."""
    # every class the checkpoint names (generator, objective, extractor, ...) passes the trust rule, or none is used
    check_specs({k: ckpt.get(k) for k in ("hyper_parameters", "cutlight_networks")}, f"checkpoint '{path}'")
    translators = checkpoint_roles(ckpt)["translators"]
    roles = ", ".join(f"{r}: {d[0]} to {d[-1]}" for d, r in translators.items())
    if not translators:
        prefixes = sorted({k.split(".", 1)[0] for k in ckpt["state_dict"]})
        raise ValueError(f"'{path}' is a Lightning checkpoint without generator weights: expected a "
                         f"'cutlight_networks' entry or 'generator.*' (CUT) or 'gen_a.*' / 'gen_b.*' (CycleGAN) in "
                         f"its state_dict; found prefixes {prefixes}")
    if direction is None:
        if len(translators) > 1:
            raise ValueError(f"'{path}' holds two generators ({roles}); choose one with "
                             "direction='AtoB' or 'BtoA' (CLI: --direction)")
        direction = next(iter(translators))
    if direction not in translators:
        raise ValueError(f"'{path}' holds one generator, which translates A to B ({roles}); direction "
                         f"{direction!r} needs a checkpoint of a two-generator method (CycleGAN, DCLGAN, ...)")
    role = translators[direction]
    state = role_state_dict(ckpt, role)
    if not state:
        raise ValueError(f"'{path}' has no '{role}.*' weights for direction {direction!r}")
    config = dict(checkpoint_roles(ckpt)["configs"].get(role) or {})
    return config, state, f"cutlight Lightning checkpoint '{path}' ({role})"


def _from_state_dict(path: Path, state: dict, overrides: dict) -> tuple[dict, dict, str]:
    """(generator config, state dict, description) for a bare state dict (reference layout or given kwargs)."""
    state = strip_prefix(strip_prefix({k: v for k, v in state.items() if k != "_metadata"}), "_orig_mod.")
    if "_target_" in overrides and overrides["_target_"] != DEFAULT_TARGET:
        return {}, state, f"state dict '{path}' ({overrides['_target_']} from the given arguments)"
    try:
        found = resnet_generator_kwargs(state)
    except ValueError as err:
        raise ValueError(
            f"'{path}' is neither a cutlight checkpoint (Lightning .ckpt with 'state_dict' and 'generator.*' or "
            f"'gen_a.*'/'gen_b.*' weights; or a cutlight .safetensors export) nor a reference ResNet generator "
            f"state dict ({err})"
        ) from err
    layout = "CUT (antialiased)" if found["antialias"] else "CycleGAN (strided conv / transposed conv)"
    desc = ", ".join(f"{k}={v}" for k, v in found.items())
    return found, state, f"reference-layout generator state dict '{path}': {layout}, {desc} ({len(state)} entries)"


def read_generator(path: str | os.PathLike, direction: str | None = None, **generator_kwargs) -> GeneratorSpec:
    """Read a generator checkpoint without building the network; see :func:`load_generator`. The ``_target_``
    names of the file are checked by the trust rule here (``cutlight.specs``; trusted in a ``trusting_code()``
    block)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at '{path}'")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {', '.join(DIRECTIONS)}")
    if path.suffix == ".safetensors":
        config, state = _read_safetensors(path)
        source = f"cutlight safetensors export '{path}'"
        check_specs(config, f"the metadata of '{path}'")
    else:
        ckpt = _torch_load(path)
        if not isinstance(ckpt, dict) or not all(isinstance(k, str) for k in ckpt):
            raise ValueError(f"'{path}' holds a {type(ckpt).__name__}, not a checkpoint dict or a state dict")
        if isinstance(ckpt.get("state_dict"), dict):
            config, state, source = _from_lightning(path, ckpt, direction)
        else:
            if direction is not None:
                logger.warning("direction %r ignored: '%s' holds a single generator", direction, path)
            config, state, source = _from_state_dict(path, ckpt, generator_kwargs)
    config = {**config, **generator_kwargs}
    target = config.pop("_target_", DEFAULT_TARGET)
    return GeneratorSpec(target=target, kwargs=config, state_dict=state, source=source)


def build_generator(spec: GeneratorSpec) -> nn.Module:
    """Construct ``spec``'s generator and load its weights strictly (errors name the source and the config)."""
    cls = resolve_target(spec.target, f" (from {spec.source})")
    bad = nonfinite_entries(spec.state_dict)
    if bad:
        raise ValueError(f"{spec.source} holds non-finite weights (NaN or infinity in {len(bad)} tensor(s): "
                         f"{', '.join(bad[:5])}): the run that wrote it diverged; use an earlier checkpoint")
    try:
        generator = cls(**spec.kwargs)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(f"cannot rebuild the generator from {spec.source} with {spec.config()}: {err}") from err
    mismatch = state_dict_mismatch(generator.state_dict(), spec.state_dict)
    if mismatch:  # the keys and shapes, not PyTorch's line per tensor
        raise ValueError(f"the weights of {spec.source} do not fit the generator built with {spec.config()}: "
                         f"{mismatch}")
    generator.load_state_dict(spec.state_dict, strict=True)
    return generator


def load_generator(
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    direction: str | None = None,
    trust_code: bool | None = None,
    **generator_kwargs,
) -> nn.Module:
    """A ready (eval-mode) generator from a checkpoint file.

    Accepted files:
        * a cutlight Lightning checkpoint of any method: the role that translates ``direction`` (the checkpoint
          says which: CUT's ``generator``, CycleGAN's and DCLGAN's ``gen_a`` for A to B and ``gen_b`` for B to A;
          ``direction`` None: the only generator, an error naming the choice where there are two), rebuilt from
          the role's saved constructor kwargs (``_target_`` names the class), weights ``<role>.*``
          (``_orig_mod.`` from ``torch.compile`` removed);
        * a ``.safetensors`` file written by ``cutlight.inference.export`` (constructor kwargs in its metadata);
        * a bare state dict (with or without ``module.``): the reference implementation's ``latest_net_G.pth``
          (CUT, FastCUT) or ``latest_net_G_A.pth`` / ``latest_net_G_B.pth`` (CycleGAN), or cutlight's own
          ``generator.state_dict()``; the architecture is read from the keys (see
          :func:`cutlight.networks.resnet_generator_kwargs`) and logged.

    ``generator_kwargs`` override what the file says (e.g. ``norm="none"``, which a state dict cannot show).

    ``trust_code``: the file's ``_target_`` may name any class (``True``: only for files you trust, importing it
    runs its code); by default only cutlight's networks or ``CUTLIGHT_TRUSTED_MODULES`` (``None``: the
    process-wide ``cutlight.specs.set_trust_code`` setting; see ``cutlight.specs``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is none of the above, or its weights do not fit (the message names the file).
        cutlight.specs.UntrustedCodeError (a ValueError): the file names a class outside the allowlist.
    """
    with trusting_code(trust_code):
        spec = read_generator(path, direction, **generator_kwargs)
        logger.info("loading %s", spec.source)
        generator = build_generator(spec)
    return generator.to(device or "cpu").eval()




def load_sampler(path: str | os.PathLike, generator: nn.Module, direction: str = "AtoB"
                 ) -> tuple[PatchSampler | None, list[int]]:
    """The MLP heads that project the features of the checkpoint's ``direction`` generator (e.g. CUT's
    ``sampler``, DCLGAN's ``head_a`` for A to B), rebuilt from the checkpoint, and their ``nce_layers``;
    ``(None, layers)`` for a checkpoint without such heads (e.g. a generator state dict: the paper's layers)."""
    ckpt = read_checkpoint(path)
    if not (isinstance(ckpt, dict) and "state_dict" in ckpt):
        return None, PAPER_LAYERS
    roles = checkpoint_roles(ckpt)
    layers = [int(i) for i in roles["nce_layers"] or PAPER_LAYERS]
    generator_role = roles["translators"].get(direction)
    heads = [head for head, gen in roles["heads"].items() if gen == generator_role]
    state = role_state_dict(ckpt, heads[0]) if heads else {}
    if not state:
        return None, layers
    config = {k: v for k, v in (roles["configs"].get(heads[0]) or {}).items() if k not in ("_target_", "in_channels")}
    sampler = PatchSampler(generator.feature_channels(layers), **config)
    load_network_weights(sampler, state)
    return sampler.eval(), layers
