"""Analysis figures from a checkpoint (``cutlight.inference.analysis``, ``cutlight.cli.analyze``): the generator and the MLP heads are rebuilt from a
CUTModule checkpoint exactly; the CLI writes both figures; bad inputs are clear errors."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cutlight.cli.analyze import main
from cutlight.inference import load_generator, load_sampler
from cutlight.inference.analysis import analyze
from helpers import tiny_module
from train_cli import TINY, output, run_module, run_train


@pytest.fixture
def ckpt(tmp_path):
    """A CUTModule checkpoint as Lightning writes it (state_dict + hyper_parameters), with non-default layers."""
    torch.manual_seed(0)
    module = tiny_module(objective={"num_patches": 16, "nce_layers": [0, 4, 8]}, sampler={"mlp_dim": 12})
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path, module


@pytest.fixture
def image(tmp_path):
    rng = torch.Generator().manual_seed(1)
    pixels = (torch.rand(34, 30, 3, generator=rng) * 255).to(torch.uint8).numpy()  # not a multiple of 4
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    return path


def test_sampler_and_generator_rebuilt_from_checkpoint(ckpt):
    path, module = ckpt
    generator = load_generator(path)
    sampler, layers = load_sampler(path, generator)
    assert layers == [0, 4, 8] and sampler.mlp_dim == 12
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        feats = generator.encode(x, layers)
        ours, ids = sampler(feats, num_patches=16)
        theirs, _ = module.sampler(module.generator.encode(x, layers), patch_ids=ids)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_analyze_writes_both_figures(ckpt, image, tmp_path):
    path, _ = ckpt
    written = analyze(path, image, queries=[(2, 3), (30, 25)], device="cpu")
    assert set(written) == {"similarity", "pca"}
    assert written["pca"].parent == tmp_path / "run" / "analysis" / "x"  # <run>/analysis/<image name>
    for png in written.values():
        with Image.open(png) as im:
            assert im.size[0] > 300 and im.size[1] > 200
    out = analyze(path, image, output=tmp_path / "o", size=16, layer=4, pca_layers=[4, 8], device="cpu")
    assert out["similarity"] == tmp_path / "o" / "similarity.png"


def test_generator_only_weights_give_pca_only(image, tmp_path, capsys):
    """A plain generator state dict (the reference's latest_net_G.pth, the paper's architecture) has no heads."""
    from cutlight.networks import ResnetGenerator

    pth = tmp_path / "latest_net_G.pth"
    torch.save(ResnetGenerator().state_dict(), pth)
    argv = ["--ckpt", str(pth), "--input", str(image), "--output", str(tmp_path / "g"), "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "has no MLP heads for its generator: no similarity figure" in out
    assert (tmp_path / "g" / "pca.png").is_file() and not (tmp_path / "g" / "similarity.png").exists()


@pytest.mark.parametrize("extra,message", [
    (["--layer", "12"], "has no MLP head; the checkpoint's nce_layers are [0, 4, 8]"),
    (["--query", "40,2"], "query (40, 2) outside the 32x28 image"),
])
def test_bad_options_are_clear_errors(ckpt, image, tmp_path, extra, message, capsys):
    argv = ["--ckpt", str(ckpt[0]), "--input", str(image), "--output", str(tmp_path / "o"), "--device", "cpu"]
    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o" / "similarity.png").exists()


def test_missing_files_are_clear_errors(ckpt, image, tmp_path, capsys):
    assert main(["--ckpt", str(ckpt[0]), "--input", str(tmp_path / "missing.png")]) == 2
    assert "no image file at" in capsys.readouterr().err
    assert main(["--ckpt", str(ckpt[0]), "--input", str(tmp_path)]) == 2
    assert "(it is a folder)" in capsys.readouterr().err
    assert main(["--ckpt", str(tmp_path / "none.ckpt"), "--input", str(image)]) == 2
    assert "no checkpoint file at" in capsys.readouterr().err


def test_bad_query_syntax(ckpt, image):
    with pytest.raises(SystemExit):
        main(["--ckpt", str(ckpt[0]), "--input", str(image), "--query", "3"])


@pytest.mark.slow
def test_cli_on_a_trained_run(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(["-m", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert proc.returncode == 0, output(proc)
    (run,) = [p for p in sweep.iterdir() if (p / "checkpoints" / "last.ckpt").is_file()]
    image = next((tmp_path / "cache").rglob("testA/*.png"))
    proc = run_module("cutlight.cli.analyze", ["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--input", str(image)],
                      tmp_path)
    assert proc.returncode == 0, output(proc)
    for name in ("similarity", "pca"):
        png = run / "analysis" / image.stem / f"{name}.png"
        assert f"{name}: {png}" in proc.stdout and png.stat().st_size > 5000
