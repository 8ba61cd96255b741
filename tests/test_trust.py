"""The trust rule (``cutlight.specs``): a checkpoint, export or saved config names code only from cutlight's
allowlist. Each entry point that loads a checkpoint meets the three attacks of issue 28 and must refuse them before
anything is imported, with a message naming the ``_target_`` and ``trust_code`` / ``--trust-code``, leaving no
marker file:

(a) ``hyper_parameters = {"objective": {"_target_": "os.system", "command": "touch PWNED"}}``;
(b) a generator ``_target_`` naming an importable ``nn.Module`` subclass with side effects (module ``sidefx_nets``
    in a folder on ``sys.path``: its import and its constructor each write a marker), also from a ``.safetensors``
    export's metadata;
(c) ``_target_: helpers.Generator`` with a ``helpers.py`` in the working directory that writes a marker on import.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from cutlight import CUTModule, CycleGANModule, load_generator
from cutlight.cli import analyze as analyze_cli
from cutlight.cli import evaluate as evaluate_cli
from cutlight.cli import export as export_cli
from cutlight.cli import translate as translate_cli
from cutlight.inference import translate_folder
from cutlight.networks import ResnetGenerator
from cutlight.specs import (
    TRUSTED_MODULES_ENV,
    UntrustedCodeError,
    check_specs,
    locate,
    set_trust_code,
    spec_targets,
    trusting_code,
)

MESSAGE = "refusing to import _target_"
SIDEFX = '''
import pathlib
from torch import nn
pathlib.Path({work!r}, "PWNED_import_{tag}").touch()

class Generator(nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        pathlib.Path({work!r}, "PWNED_init_{tag}").touch()

Extractor = Generator
'''
ATTACKS = {
    "a_os_system": {"objective": {"_target_": "os.system", "command": "touch PWNED"}},
    "b_side_effect_module": {"generator": {"_target_": "sidefx_nets.Generator", "ngf": 8, "n_blocks": 1}},
    "c_helpers_in_cwd": {"generator": {"_target_": "helpers.Generator", "ngf": 8, "n_blocks": 1}},
}
TARGETS = {"a_os_system": "os.system", "b_side_effect_module": "sidefx_nets.Generator",
           "c_helpers_in_cwd": "helpers.Generator"}


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """A working directory holding ``helpers.py`` (first on ``sys.path``, as under ``python -m``), a folder on
    ``sys.path`` holding ``sidefx_nets.py``, no trusted prefixes, code not trusted; returns the working directory
    (where every marker would appear)."""
    work, site = tmp_path / "work", tmp_path / "site"
    work.mkdir()
    site.mkdir()
    (work / "helpers.py").write_text(SIDEFX.format(work=str(work), tag="c"))
    (site / "sidefx_nets.py").write_text(SIDEFX.format(work=str(work), tag="b"))
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(work))
    for name in ("helpers", "sidefx_nets"):
        monkeypatch.delitem(sys.modules, name, raising=False)  # the tests' own helpers must not stand in for it
    monkeypatch.delenv(TRUSTED_MODULES_ENV, raising=False)
    set_trust_code(False)
    img = work / "images"
    img.mkdir()
    for i in range(2):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(img / f"x{i}.png")
    return work


def markers(work: Path) -> list[str]:
    return sorted(p.name for p in work.glob("PWNED*"))


def lightning_ckpt(path: Path, hparams: dict, cyclegan: bool = False) -> Path:
    """A checkpoint whose weights fit a ResnetGenerator(ngf=8, n_blocks=1): only its hyperparameters are hostile."""
    weights = ResnetGenerator(ngf=8, n_blocks=1).state_dict()
    prefixes = ("gen_a", "gen_b") if cyclegan else ("generator",)
    state = {f"{p}.{k}": v for p in prefixes for k, v in weights.items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": {"ngf": 8, "n_blocks": 1}, **hparams},
                "pytorch-lightning_version": "2.5.0", "optimizer_states": [], "loops": {}, "epoch": 0,
                "global_step": 0}, path)
    return path


def safetensors_export(path: Path, target: str) -> Path:
    from safetensors.torch import save_file

    weights = ResnetGenerator(ngf=8, n_blocks=1).state_dict()
    save_file(weights, str(path), metadata={"cutlight_generator": json.dumps(
        {"_target_": target, "ngf": 8, "n_blocks": 1})})
    return path


def _raises(fn) -> str:
    with pytest.raises(UntrustedCodeError) as info:
        fn()
    return str(info.value)


def _cli(main, argv, capsys, code) -> str:
    assert main(argv) == code
    return capsys.readouterr().err


ENTRIES = {
    "cutlight.cli.translate": lambda ck, w, cap: _cli(translate_cli.main, ["--ckpt", str(ck), "--input",
                                                                           str(w / "images"), "--output",
                                                                           str(w / "out"), "--quiet"], cap, 1),
    "load_generator": lambda ck, w, cap: _raises(lambda: load_generator(ck)),
    "translate_folder": lambda ck, w, cap: _raises(lambda: translate_folder(ck, w / "images", w / "out",
                                                                            progress=False)),
    "cutlight.cli.export": lambda ck, w, cap: _cli(export_cli.main, ["--ckpt", str(ck), "--format", "safetensors",
                                                                     "--output", str(w / "g.safetensors")], cap, 1),
    "cutlight.cli.analyze": lambda ck, w, cap: _cli(analyze_cli.main, ["--ckpt", str(ck), "--input",
                                                                       str(w / "images" / "x0.png"), "--output",
                                                                       str(w / "analysis")], cap, 2),
    "cutlight.cli.evaluate --translate": lambda ck, w, cap: _cli(evaluate_cli.main, [
        "--translate", str(ck), "--input", str(w / "images"), "--real", str(w / "images"), "--device", "cpu"],
        cap, 1),
    "CUTModule.load_from_checkpoint": lambda ck, w, cap: _raises(lambda: CUTModule.load_from_checkpoint(ck)),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("entry", list(ENTRIES))
def test_checkpoints_naming_code_outside_the_allowlist_are_refused_before_import(hostile, capsys, entry, attack):
    ckpt = lightning_ckpt(hostile / "evil.ckpt", ATTACKS[attack])
    message = ENTRIES[entry](ckpt, hostile, capsys)
    assert f"{MESSAGE} {TARGETS[attack]!r}" in message and "--trust-code" in message and "trust_code=True" in message
    assert markers(hostile) == []
    assert not (hostile / "out").exists() and not (hostile / "g.safetensors").exists()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_cyclegan_load_from_checkpoint_refuses_the_attacks(hostile, attack):
    ckpt = lightning_ckpt(hostile / "evil.ckpt", ATTACKS[attack], cyclegan=True)
    assert f"{MESSAGE} {TARGETS[attack]!r}" in _raises(lambda: CycleGANModule.load_from_checkpoint(ckpt))
    assert markers(hostile) == []


@pytest.mark.parametrize("entry", ["cutlight.cli.translate", "load_generator", "translate_folder",
                                   "cutlight.cli.export", "cutlight.cli.evaluate --translate"])
@pytest.mark.parametrize("target", ["sidefx_nets.Generator", "helpers.Generator"])
def test_safetensors_metadata_naming_code_is_refused(hostile, capsys, entry, target):
    export = safetensors_export(hostile / "evil.safetensors", target)
    message = ENTRIES[entry](export, hostile, capsys)
    assert f"{MESSAGE} {target!r}" in message and "metadata" in message
    assert markers(hostile) == []


def test_load_from_checkpoint_refuses_extractors_and_lightning_instantiators(hostile):
    ckpt = lightning_ckpt(hostile / "x.ckpt", {"val_metrics": {"extractor": {"_target_": "sidefx_nets.Extractor"}}})
    assert "hyper_parameters.val_metrics.extractor._target_" in _raises(lambda: CUTModule.load_from_checkpoint(ckpt))
    ckpt = lightning_ckpt(hostile / "y.ckpt", {"_instantiator": "helpers.Generator"})  # Lightning imports it itself
    assert "hyper_parameters._instantiator: refusing to import _target_ 'helpers.Generator'" in _raises(
        lambda: CUTModule.load_from_checkpoint(ckpt))
    assert markers(hostile) == []


def test_a_trusted_prefix_is_still_never_imported_from_the_working_directory(hostile, monkeypatch):
    monkeypatch.setenv(TRUSTED_MODULES_ENV, "helpers,sidefx_nets")
    ckpt = lightning_ckpt(hostile / "evil.ckpt", ATTACKS["c_helpers_in_cwd"])
    assert "would be imported from the working directory" in _raises(lambda: load_generator(ckpt))
    assert markers(hostile) == []


def test_allowlisted_modules_give_only_their_own_classes(hostile):
    with pytest.raises(UntrustedCodeError, match="is a function defined in cutlight.networks.weights"):
        locate("cutlight.networks.load_network_weights")  # a function of an allowed module: not a class
    with pytest.raises(UntrustedCodeError, match="it is not in cutlight's allowlist"):
        locate("cutlight.checkpoint.torch")
    assert locate("cutlight.networks.ResnetGenerator") is ResnetGenerator


def test_check_specs_walks_the_whole_tree_and_takes_the_names_the_user_typed(hostile):
    tree = {"generator": {"ngf": 8}, "val_metrics": {"extractor": [{"_target_": "mypkg.Extractor"}]}}
    with pytest.raises(UntrustedCodeError, match=r"^here, val_metrics.extractor\[0\]._target_: refusing to import "
                                                 r"_target_ 'mypkg.Extractor'"):
        check_specs(tree, "here")
    check_specs(tree, "here", allowed=spec_targets({"extractor": {"_target_": "mypkg.Extractor"}}))  # typed again
    with trusting_code():
        check_specs(tree, "here")


def test_trust_code_and_trusted_prefixes_allow_a_users_own_classes(hostile, monkeypatch):
    """The switch works (and so the refusals above are the rule's doing): trusted, the same files run their code."""
    ckpt = lightning_ckpt(hostile / "own.ckpt", ATTACKS["b_side_effect_module"])
    with pytest.raises(ValueError, match="do not fit the generator"):  # built (its code ran), then the weights
        load_generator(ckpt, trust_code=True)
    assert markers(hostile) == ["PWNED_import_b", "PWNED_init_b"]
    for marker in hostile.glob("PWNED*"):
        marker.unlink()
    monkeypatch.setenv(TRUSTED_MODULES_ENV, "sidefx_nets")
    with pytest.raises(ValueError, match="do not fit the generator"):
        load_generator(ckpt)
    assert markers(hostile) == ["PWNED_init_b"]  # imported above already
    with trusting_code(), pytest.raises(UntrustedCodeError):
        with trusting_code(False):
            load_generator(lightning_ckpt(hostile / "c.ckpt", ATTACKS["c_helpers_in_cwd"]))


def test_python_m_translate_with_helpers_py_in_the_working_directory(tmp_path):
    """The issue's exact case, as a separate process: ``python -m cutlight.cli.translate`` in a folder holding
    ``helpers.py``, even with ``helpers`` among the trusted prefixes."""
    from helpers import run_entrypoint

    (tmp_path / "helpers.py").write_text(SIDEFX.format(work=str(tmp_path), tag="c"))
    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "x.png")
    lightning_ckpt(tmp_path / "model.ckpt", ATTACKS["c_helpers_in_cwd"])
    res = run_entrypoint(["--ckpt", "model.ckpt", "--input", "images", "--output", "out", "--quiet"], tmp_path,
                         module="cutlight.cli.translate", env={TRUSTED_MODULES_ENV: "helpers"}, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "refusing to import _target_ 'helpers.Generator'" in res.stderr
    assert "working directory" in res.stderr
    assert markers(tmp_path) == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_train_refuses_resuming_from_a_checkpoint_that_names_code(tmp_path, attack):
    """``ckpt_path=`` (attacks a and c) and ``resume=`` (attack b) of the training command: the config the user
    typed is trusted, what the checkpoint names is not."""
    from helpers import TINY_ARGS, run_entrypoint

    (tmp_path / "helpers.py").write_text(SIDEFX.format(work=str(tmp_path), tag="c"))
    site = tmp_path / "site"
    site.mkdir()
    (site / "sidefx_nets.py").write_text(SIDEFX.format(work=str(tmp_path), tag="b"))
    if attack == "b_side_effect_module":
        (tmp_path / "old" / "checkpoints").mkdir(parents=True)
        lightning_ckpt(tmp_path / "old" / "checkpoints" / "last.ckpt", ATTACKS[attack])
        where = ["resume=old"]
    else:
        where = [f"ckpt_path={lightning_ckpt(tmp_path / 'evil.ckpt', ATTACKS[attack])}"]
    res = run_entrypoint([*TINY_ARGS, *where], tmp_path, timeout=240)
    assert res.returncode != 0
    assert f"{MESSAGE} {TARGETS[attack]!r}" in res.stderr and "trust_code" in res.stderr, res.stderr[-3000:]
    assert markers(tmp_path) == []
