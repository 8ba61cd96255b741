"""The package's layers (cli > lightning > inference | reports > core), no import cycles, and a core without
Lightning or Hydra, as declared for import-linter in pyproject.toml ([tool.importlinter]), checked by its
``lint-imports`` (also run by ``make lint``)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports() -> str | None:
    """The ``lint-imports`` of this interpreter's environment (else the one on PATH); None when not installed."""
    here = Path(sys.executable).parent / "lint-imports"
    return str(here) if here.is_file() else shutil.which("lint-imports")


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed (pip install 'cutlight[dev]')")
def test_import_contracts_are_kept():
    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([_lint_imports(), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "BROKEN" not in proc.stdout and " KEPT" in proc.stdout


def test_contracts_name_every_layer():
    """A package added under cutlight/ is placed in a layer (or the contracts would silently not cover it)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip().removeprefix("cutlight.") for layer in layers for m in layer.replace(":", "|").split("|")}
    package = ROOT / "src" / "cutlight"
    found = {p.stem if p.is_file() else p.name for p in package.iterdir()
             if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert found - named == set(), f"modules of cutlight/ in no layer of [tool.importlinter]: {found - named}"
