"""Run names from Hydra's ``override_dirname`` that stay one folder name: path-like values shortened.

``data.image_a=photos/china.jpg,seed=1`` would make nested run folders (``outputs/<date>/data.image_a=photos/
china.jpg,seed=1/<time>``) and a W&B run named with the whole path; :func:`run_name` keeps the last part of each
path-like value (``data.image_a=china.jpg,seed=1``). ``conf/train.yaml`` calls it as the resolver
``${cutlight.run_name:${hydra.job.override_dirname}}`` (registered when this module is imported, which the train
command does before Hydra names the run folder).
"""

from __future__ import annotations

import hashlib
import re

from omegaconf import OmegaConf

MAX_LENGTH = 230  # inside the usual 255-byte file-name limit, with room for the job number and the hash
_PATH_PART = re.compile(r"[^\[\]{}]*[/\\]")  # everything up to the last separator, inside list brackets


def run_name(override_dirname: str) -> str:
    """``override_dirname`` with each value's path (up to its last ``/`` or ``\\``) dropped
    (a group key's ``/`` becomes ``.``). Longer than :data:`MAX_LENGTH`: cut, plus a hash of the whole."""
    items = []
    for item in override_dirname.split(","):
        key, sep, value = item.partition("=") if "=" in item else ("", "", item)  # no "=": a list's next element
        value = _PATH_PART.sub("", value.rstrip("/\\")) if ("/" in value or "\\" in value) else value
        items.append(f"{key.replace('/', '.')}{sep}{value}")  # a group key: model/generator -> model.generator
    name = ",".join(items)
    if len(name) > MAX_LENGTH:
        name = name[: MAX_LENGTH - 9] + "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:8]
    return name


if not OmegaConf.has_resolver("cutlight.run_name"):
    OmegaConf.register_new_resolver("cutlight.run_name", run_name)
