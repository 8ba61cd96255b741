"""Export: TorchScript and ONNX equal the eager generator at two input sizes from one export; safetensors round
trip through load_generator; clear errors."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from cutlight.cli.export import main
from cutlight.inference import load_generator, read_generator
from cutlight.inference.export import FORMATS, VERIFY_SIZES, eager_generator, export_generator, verify_export
from cutlight.networks import ResnetGenerator
from helpers import K_NETWORK, assert_scaled_close


def _missing(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


pytestmark = pytest.mark.filterwarnings(  # the tests trace the fast-path generator on purpose; torch.jit.load
    "ignore::torch.jit.TracerWarning", r"ignore:.*torch\.jit.*deprecated:FutureWarning")

needs_onnx = pytest.mark.skipif(bool(_missing("onnx", "onnxscript", "onnxruntime")),
                                reason=f"ONNX export/check needs {_missing('onnx', 'onnxscript', 'onnxruntime')}")
needs_safetensors = pytest.mark.skipif(bool(_missing("safetensors")), reason="safetensors is not installed")

TINY = {"_target_": "cutlight.networks.ResnetGenerator", "ngf": 4, "n_blocks": 2}
GRAY_TO_RGBA = {**TINY, "n_blocks": 1, "input_nc": 1, "output_nc": 4, "antialias_up": False}


def _generator(config: dict, seed: int = 0) -> ResnetGenerator:
    torch.manual_seed(seed)
    return ResnetGenerator(**{k: v for k, v in config.items() if k != "_target_"}).eval()


def _ckpt(path, config, seed=0):
    gen = _generator(config, seed)
    state = {f"generator.{k}": v for k, v in gen.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": config}}, path)
    return gen


@pytest.mark.numeric
def test_traced_graph_has_no_custom_autograd_functions_and_same_outputs():
    gen = _generator(TINY)
    net = eager_generator(gen)
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    graph = torch.jit.trace(net, x, check_trace=False).inlined_graph
    # custom autograd Functions would be traced as opaque prim::PythonOp nodes; the fast paths step aside
    assert [n.kind() for n in graph.nodes() if n.kind() == "prim::PythonOp"] == []
    with torch.no_grad():
        assert_scaled_close(net(x), gen(x), K_NETWORK)  # the plain layers instead of the fast paths


@pytest.mark.parametrize("config", [TINY, GRAY_TO_RGBA], ids=["rgb", "gray_to_rgba"])
def test_torchscript_equals_eager_at_two_sizes(tmp_path, config):
    gen = _generator(config)
    path = export_generator(gen, tmp_path / "g.pt", "torchscript", config)
    diffs = verify_export(path, "torchscript", gen)
    assert len(diffs) == 3 and max(diffs) < 1e-4, diffs
    files = {"cutlight.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    meta = json.loads(files["cutlight.json"])
    assert (meta["input_nc"], meta["output_nc"], meta["size_multiple"]) == (
        config.get("input_nc", 3), config.get("output_nc", 3), 4)


@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("config", [TINY, GRAY_TO_RGBA], ids=["rgb", "gray_to_rgba"])
def test_onnx_equals_eager_at_two_sizes_with_onnxruntime(tmp_path, config):
    import onnx

    gen = _generator(config)
    path = export_generator(gen, tmp_path / "g.onnx", "onnx", config)
    diffs = verify_export(path, "onnx", gen)  # batch, height and width all vary; 47 x 62: padded, cropped back
    assert [s[1:] for s in VERIFY_SIZES] == [(64, 64), (36, 92), (47, 62)]
    assert len(diffs) == 3 and max(diffs) < 1e-4, diffs
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["cutlight"])["generator"] == config


@needs_safetensors
def test_safetensors_round_trip_through_the_cli(tmp_path, capsys):
    gen = _ckpt(tmp_path / "last.ckpt", GRAY_TO_RGBA, seed=5)
    out = tmp_path / "g.safetensors"
    assert main(["--ckpt", str(tmp_path / "last.ckpt"), "--format", "safetensors", "--output", str(out)]) == 0
    assert "max |export - eager|" in capsys.readouterr().out
    spec = read_generator(out)
    assert spec.config() == GRAY_TO_RGBA and "safetensors export" in spec.source
    loaded = load_generator(out)
    x = torch.rand(1, 1, 24, 28) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), gen(x))
    assert main(["--ckpt", str(tmp_path / "last.ckpt"), "--format", "safetensors", "--output", str(out)]) == 1
    assert "exists; pass overwrite=True (--overwrite)" in capsys.readouterr().err


@pytest.mark.numeric
def test_cli_exports_a_reference_state_dict_to_torchscript(tmp_path, capsys):
    gen = _generator(TINY)
    torch.save({f"module.{k}": v for k, v in gen.state_dict().items()}, tmp_path / "latest_net_G.pth")
    out = tmp_path / "g.pt"
    assert main(["--ckpt", str(tmp_path / "latest_net_G.pth"), "--format", "torchscript", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    assert "reference-layout generator state dict" in captured.err and "max |export - eager|" in captured.out
    with torch.no_grad():
        x = torch.rand(1, 3, 40, 52) * 2 - 1
        assert_scaled_close(torch.jit.load(str(out))(x), gen(x), K_NETWORK)


def test_unknown_format_and_bad_checkpoint_are_clear_errors(tmp_path, capsys):
    gen = _generator(TINY)
    with pytest.raises(ValueError, match="unknown export format 'tflite'; expected one of torchscript, onnx, safetensors"):
        export_generator(gen, tmp_path / "g.tflite", "tflite")
    _ckpt(tmp_path / "last.ckpt", TINY)
    assert main(["--ckpt", str(tmp_path / "last.ckpt"), "--format", "tflite", "--output", str(tmp_path / "x")]) == 1
    assert "unknown export format 'tflite'" in capsys.readouterr().err
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    assert main(["--ckpt", str(tmp_path / "other.pt"), "--format", "torchscript", "--output",
                 str(tmp_path / "y.pt")]) == 1
    assert "other.pt' is neither a cutlight checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y.pt").exists()
    with pytest.raises(ValueError, match="safetensors export needs the generator's constructor arguments"):
        export_generator(gen, tmp_path / "g.safetensors", "safetensors")
    assert set(FORMATS) == {"torchscript", "onnx", "safetensors"}


@needs_onnx
@pytest.mark.slow
def test_exports_keep_any_input_size_without_tracer_warnings(tmp_path, recwarn):
    """Issue 27.11: the TorchScript export returned 252 x 188 for a 250 x 187 input and the ONNX one failed on it;
    the TorchScript export printed a TracerWarning from networks/layers.py."""
    import onnxruntime as ort

    from cutlight.inference.tensors import translate_tensor

    gen = _generator(TINY)
    x = torch.rand(1, 3, 187, 250) * 2 - 1
    expected = translate_tensor(gen, x)
    ts = export_generator(gen, tmp_path / "g.pt", "torchscript", TINY)
    assert not [w for w in recwarn if issubclass(w.category, torch.jit.TracerWarning)], \
        [str(w.message) for w in recwarn]
    onnx_path = export_generator(gen, tmp_path / "g.onnx", "onnx", TINY)
    with torch.no_grad():
        scripted = torch.jit.load(str(ts))(x)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_out = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    for out in (scripted, onnx_out):
        assert out.shape == (1, 3, 187, 250)
        assert float((out - expected).abs().max()) < 1e-4


@needs_safetensors
def test_every_export_has_the_same_file_mode(tmp_path):
    """Issue 27.15: gen.safetensors was written with mode 0600, the other exports 0644."""
    gen = _generator(TINY)
    modes = {fmt: export_generator(gen, tmp_path / f"g.{fmt}", fmt, TINY).stat().st_mode & 0o777
             for fmt in ("torchscript", "safetensors")}
    assert modes["safetensors"] == modes["torchscript"] == 0o666 & ~_umask(), modes


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
