"""The wheel is self-contained: it carries the configs (cutlight.conf), trains from outside the checkout, and
another project's Hydra app composes cutlight's groups through pkg://cutlight.conf."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import warm
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
    """Each command of the package (``cutlight.cli``) starts from the installed wheel and prints its help (a fork
    of a warm interpreter that imported the wheel's commands: ``warm.py``)."""
    env = {"PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    for name in ("translate", "evaluate", "export", "analyze", "report"):
        res = warm.run_module(f"cutlight.cli.{name}", ["--help"], tmp_path, env, timeout=300)
        assert res.returncode == 0 and "usage:" in res.stdout, name + ": " + res.stderr[-2000:]


def readme_tiny_commands() -> list[str]:
    """The README's command lines (``bash`` blocks, continuation lines joined) that run in seconds on a CPU: the
    ``debug=tiny`` ones."""
    import re

    text = (ROOT / "README.md").read_text()
    lines = [line.split("  #", 1)[0].strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)
             for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if "debug=tiny" in line and not line.startswith("#")]


@pytest.mark.slow
def test_readme_debug_commands_run_from_the_wheel_on_a_cpu(installed, tmp_path):
    """Every README command block line with ``debug=tiny``, as written (only ``.venv/bin/python`` / ``python``
    and ``/data/horse2zebra`` replaced), from the installed wheel outside the checkout, CPU only."""
    import shlex

    from PIL import Image

    commands = readme_tiny_commands()
    assert len(commands) >= 4, commands  # own data, a sweep, W&B offline, the wheel's smoke test
    data = tmp_path / "h2z"
    for sub, n in (("trainA", 4), ("trainB", 4), ("testA", 2), ("testB", 2)):
        (data / sub).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (40, 40), (50 * i, 90 if sub.endswith("A") else 10, 30)).save(data / sub / f"{i}.png")
    base = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home()), "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true", "CUTLIGHT_CACHE": str(tmp_path / "cache"),
            "CUDA_VISIBLE_DEVICES": ""}  # a CPU-only machine
    for n, command in enumerate(commands):
        words = shlex.split(command.replace("/data/horse2zebra", str(data)))
        env = dict(base, WANDB_MODE="disabled")
        while "=" in words[0] and not words[0].startswith("."):  # VAR=value prefixes
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        assert words[0] in (".venv/bin/python", "python") and words[1:3] == ["-m", "cutlight.cli.train"], command
        if "hydra/launcher=submitit_local" in words:
            import importlib.util

            if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
                continue  # the sweep extra (pip install 'cutlight[sweep]') is not installed here
        cwd = tmp_path / f"cmd{n}"
        cwd.mkdir()
        res = warm.run_module(words[2], [*words[3:], "+trainer.enable_progress_bar=false"], cwd, env, timeout=900)
        assert res.returncode == 0, f"{command}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
        summaries = [json.loads(p.read_text()) for p in cwd.rglob("summary.json")]  # each run's record
        assert len(summaries) == (2 if "-m" in words[3:] else 1), command  # a multirun here: 2 jobs
        for summary in summaries:  # finished, and validated (a val/fid)
            assert summary["state"] == "finished" and "val/fid" in summary["metrics"]["final"], (command, summary)
