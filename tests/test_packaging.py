"""The wheel is self-contained: it carries the configs (cutlight.conf), trains from outside the checkout, and
another project's Hydra app composes cutlight's groups through pkg://cutlight.conf."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, run_entrypoint


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """``pip wheel --no-deps .`` installed (non-editable, no dependencies) into a temporary target folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(ROOT),
                    "-w", str(tmp / "dist")], check=True, capture_output=True, timeout=600)
    import cutlight

    (wheel,) = (tmp / "dist").glob(f"cutlight-{cutlight.__version__}-*.whl")  # one source of truth for the version
    names = zipfile.ZipFile(wheel).namelist()
    metadata = zipfile.ZipFile(wheel).read(f"cutlight-{cutlight.__version__}.dist-info/METADATA").decode()
    assert "License-Expression: MIT" in metadata and f"cutlight-{cutlight.__version__}.dist-info/licenses/LICENSE" in names
    for required in ("cutlight/conf/train.yaml", "cutlight/conf/model/resnet_9blocks.yaml",
                     "cutlight/conf/debug/tiny.yaml", "cutlight/lightning/base.py", "cutlight/py.typed"):
        assert required in names, required
    packages = [p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src" / "cutlight").rglob("__init__.py")]
    assert [p for p in packages if p not in names] == [], "packages missing from [tool.setuptools] packages"
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/")) or "reference" in n], names
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=600)
    return tmp / "site"


@pytest.mark.slow
def test_wheel_trains_from_outside_the_checkout(installed, tmp_path):
    env = {"PYTHONPATH": str(installed)}  # the wheel's cutlight, not the checkout's (no tests/ on the path)
    where = subprocess.run([sys.executable, "-c", "import cutlight, cutlight.conf; print(cutlight.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    assert where.stdout.startswith(str(installed)), where.stdout + where.stderr
    res = run_entrypoint(["debug=tiny", "data.size=32", "data.num_train=8", "data.num_test=4",
                          f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "cutlight run finished" in res.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_another_hydra_app_composes_cutlight_groups(tmp_path):
    """A user's app with its own primary config and cutlight's groups on its search path."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text(
        "defaults:\n  - _self_\n  - model: small\n  - objective: fastcut\n"
        "hydra:\n  searchpath: [pkg://cutlight.conf]\nmy_setting: 1\n")
    (tmp_path / "app.py").write_text(
        "import hydra\n"
        "from hydra.utils import instantiate\n"
        "@hydra.main(version_base='1.3', config_path='conf', config_name='app')\n"
        "def main(cfg):\n"
        "    model = instantiate(cfg.model, val_metrics=False)\n"
        "    print(type(model).__name__, cfg.model.objective.lambda_nce, model.generator.input_nc, cfg.my_setting)\n"
        "main()\n")
    res = subprocess.run([sys.executable, "app.py", "hydra.run.dir=out"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[-4:] == ["CUTModule", "10.0", "3", "1"], res.stdout


@pytest.mark.slow
def test_wheel_runs_every_command(installed, tmp_path):
    """Each command of the package (``cutlight.cli``) starts from the installed wheel and prints its help."""
    env = {"PYTHONPATH": str(installed)}
    for name in ("translate", "evaluate", "export", "analyze", "report"):
        res = subprocess.run([sys.executable, "-m", f"cutlight.cli.{name}", "--help"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and "usage:" in res.stdout, name + ": " + res.stderr[-2000:]
