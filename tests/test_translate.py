"""Using trained generators: loading any checkpoint, any-size translation, the translate CLI, the HTML gallery,
1 / 3 / 4-channel images."""

from __future__ import annotations

import html.parser
import importlib
import os
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cutlight.cli.translate import main
from cutlight.inference import build_generator, load_generator, read_generator, translate, translate_tensor
from cutlight.inference.files import output_size, translate_folder
from cutlight.networks import ResnetGenerator, resnet_generator_kwargs
from helpers import K_NETWORK, assert_scaled_close


def tiny_generator(seed: int = 0, **kw) -> ResnetGenerator:
    torch.manual_seed(seed)
    return ResnetGenerator(**{"ngf": 4, "n_blocks": 1, **kw}).eval()


def reference_state(ngf=4, n_blocks=2, input_nc=3, output_nc=3, antialias=True, seed=0, empty=False) -> dict:
    """A generator state dict in the reference implementation's layout (docs/reference-checkpoints.md), built
    from the documented keys and shapes, independently of ``ResnetGenerator``; random values, blur filters set."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def param(key, *shape):
        state[key] = torch.empty(shape) if empty else torch.randn(*shape, generator=gen) * 0.2

    def conv(idx, co, ci, k, prefix="model."):
        param(f"{prefix}{idx}.weight", co, ci, k, k)
        param(f"{prefix}{idx}.bias", co)

    def filt(idx, c, taps):
        a = torch.tensor(taps, dtype=torch.float32)
        f = a[:, None] * a[None, :]
        f = f / f.sum() * (4.0 if len(taps) == 4 else 1.0)
        state[f"model.{idx}.filt"] = f[None, None].repeat(c, 1, 1, 1)

    conv(1, ngf, input_nc, 7)  # 0 pad, 1 conv, 2 norm, 3 relu
    idx = 4
    for i in range(2):
        c_in, c_out = ngf * 2**i, ngf * 2 ** (i + 1)
        conv(idx, c_out, c_in, 3)
        if antialias:
            filt(idx + 3, c_out, [1, 2, 1])
        idx += 4 if antialias else 3
    for _ in range(n_blocks):
        for j in (1, 5):
            conv(f"{idx}.conv_block.{j}", ngf * 4, ngf * 4, 3)
        idx += 1
    for i in range(2):
        c_in = ngf * 2 ** (2 - i)
        if antialias:
            filt(idx, c_in, [1, 3, 3, 1])
            conv(idx + 1, c_in // 2, c_in, 3)
            idx += 4
        else:  # ConvTranspose2d: weight (C_in, C_out, 3, 3)
            param(f"model.{idx}.weight", c_in, c_in // 2, 3, 3)
            param(f"model.{idx}.bias", c_in // 2)
            idx += 3
    conv(idx + 1, output_nc, ngf, 7)
    return state


def write_image(path: Path, width: int, height: int, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)
    return path


def lightning_ckpt(path: Path, networks: dict, generator_hparams: dict) -> Path:
    """A checkpoint shaped like a Lightning one (no Lightning needed): state_dict with prefixed networks."""
    state = {f"{name}.{k}": v for name, net in networks.items() for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": generator_hparams}, "epoch": 1}, path)
    return path


# ------------------------------------------------------------------------------------------- any size


def test_any_size_inputs_give_outputs_of_their_size():
    gen = tiny_generator()
    images = [Image.new("RGB", (250, 187), (10, 200, 30)), Image.new("L", (1000, 600), 99),
              Image.new("RGB", (250, 187), (200, 0, 0))]
    out = translate(gen, images)
    assert [im.size for im in out] == [(250, 187), (1000, 600), (250, 187)]
    assert all(im.mode == "RGB" for im in out)
    x = torch.rand(2, 3, 187, 250) * 2 - 1
    y = translate(gen, x)
    assert y.shape == (2, 3, 187, 250) and y.dtype == torch.float32 and y.abs().max() <= 1
    assert translate(gen, x[0]).shape == (3, 187, 250)
    assert translate(gen, images[0]).size == (250, 187)


@pytest.mark.numeric
def test_padded_path_is_the_generator_on_the_padded_image():
    gen = tiny_generator()
    x = torch.rand(2, 3, 64, 96) * 2 - 1
    with torch.no_grad():
        assert torch.equal(translate(gen, x), gen(x))  # divisible: no padding, exactly the generator
        odd = x[..., :61, :94]  # 61 = 64 - 3, 94 = 96 - 2
        expected = gen(F.pad(odd, (0, 2, 0, 3), mode="reflect"))[..., :61, :94]
    torch.testing.assert_close(translate(gen, odd), expected, rtol=0, atol=0)
    tiny = torch.rand(1, 3, 9, 10) * 2 - 1  # still works when reflection is too short for the padding
    assert translate(gen, tiny).shape == (1, 3, 9, 10)


def test_pil_path_batches_equal_sizes_and_matches_the_tensor_path():
    gen = tiny_generator()
    a, b = Image.new("RGB", (30, 21), (1, 2, 3)), Image.new("RGB", (30, 21), (250, 100, 0))
    one_by_one = [translate(gen, [im])[0] for im in (a, b)]
    batched = translate(gen, [a, b], batch_size=2)
    assert [np.asarray(im).tolist() for im in batched] == [np.asarray(im).tolist() for im in one_by_one]


def test_output_size_definitions():
    assert output_size(250, 187) == (250, 187)
    assert output_size(250, 187, size=100) == (100, 75)  # longer side = 100
    assert output_size(250, 187, short_side=100) == (134, 100)  # shorter side = 100
    assert output_size(187, 250, size=500) == (374, 500)  # upscaling too
    with pytest.raises(ValueError, match="not both"):
        output_size(10, 10, size=5, short_side=5)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        output_size(10, 10, size=0)


def test_bf16_precision_runs_and_stays_close():
    gen = tiny_generator()
    x = torch.rand(1, 3, 32, 36) * 2 - 1
    y16, y32 = translate_tensor(gen, x, "bf16"), translate_tensor(gen, x)
    assert y16.dtype == torch.float32 and (y16 - y32).abs().max() < 0.1
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        translate_tensor(gen, x, "fp8")


def test_cutlight_translate_is_the_function_before_and_after_the_cli_module_is_imported():
    import cutlight

    gen, x = tiny_generator(), torch.rand(1, 3, 12, 12) * 2 - 1
    first = cutlight.translate(gen, x)
    module = importlib.import_module("cutlight.cli.translate")
    assert hasattr(module, "main")
    torch.testing.assert_close(cutlight.translate(gen, x), first, rtol=0, atol=0)
    assert cutlight.translate_folder is module.translate_folder
    from cutlight.inference import translate_folder as via_inference

    assert via_inference is module.translate_folder


# ------------------------------------------------------------------------------------------- loading


def test_reference_layout_matches_the_documented_tables():
    cut, cyclegan = reference_state(64, 9, empty=True), reference_state(64, 9, antialias=False, empty=True)
    assert len(cut) == 52 and len(cyclegan) == 48
    assert cut["model.30.weight"].shape == (3, 64, 7, 7) and cut["model.21.filt"].shape == (256, 1, 4, 4)
    assert cyclegan["model.19.weight"].shape == (256, 128, 3, 3) and cyclegan["model.26.bias"].shape == (3,)
    defaults = dict(input_nc=3, output_nc=3, ngf=64, n_blocks=9, norm="instance")
    assert resnet_generator_kwargs(cut) == {**defaults, "antialias": True, "antialias_up": True}
    assert resnet_generator_kwargs(cyclegan) == {**defaults, "antialias": False, "antialias_up": False}
    ours = ResnetGenerator(ngf=8, n_blocks=2).state_dict()  # same layout as ours, shape for shape
    ref = reference_state(8, 2, empty=True)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}


@pytest.mark.numeric
@pytest.mark.parametrize("antialias", [True, False], ids=["cut", "cyclegan"])
def test_reference_state_dicts_reload_with_and_without_module_prefix(tmp_path, antialias):
    state = reference_state(ngf=4, n_blocks=2, input_nc=1, output_nc=3, antialias=antialias)
    torch.save(state, tmp_path / "latest_net_G.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "latest_net_G_module.pth")
    spec = read_generator(tmp_path / "latest_net_G_module.pth")
    assert "reference-layout" in spec.source and f"antialias={antialias}" in spec.source
    assert spec.kwargs["input_nc"] == 1 and spec.kwargs["n_blocks"] == 2 and spec.kwargs["ngf"] == 4
    plain, prefixed = load_generator(tmp_path / "latest_net_G.pth"), build_generator(spec).eval()
    x = torch.rand(2, 1, 30, 41) * 2 - 1
    torch.testing.assert_close(translate(plain, x), translate(prefixed, x), rtol=0, atol=0)
    if antialias:  # the reference's own layers (tests/reference) give the same translation
        from reference.cut_reference import RefGenerator

        padded = F.pad(x, (0, 3, 0, 2), mode="reflect")
        with torch.no_grad():
            expected = RefGenerator(state).eval()(padded)[..., :30, :41]
        assert_scaled_close(translate(plain, x), expected, K_NETWORK)  # other layer implementations, fp32


def test_bare_state_dict_takes_undetectable_architecture_from_kwargs(tmp_path):
    gen = tiny_generator(norm="none")
    torch.save(gen.state_dict(), tmp_path / "g.pth")
    loaded = load_generator(tmp_path / "g.pth", norm="none")
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    torch.testing.assert_close(translate(loaded, x), translate(gen, x), rtol=0, atol=0)
    assert "norm=none" not in read_generator(tmp_path / "g.pth").source  # detection says instance: documented


def test_lightning_checkpoint_with_target_and_compiled_prefix(tmp_path):
    gen = tiny_generator(seed=3, input_nc=1, output_nc=4)
    hp = {"_target_": "cutlight.networks.ResnetGenerator", "ngf": 4, "n_blocks": 1, "input_nc": 1, "output_nc": 4}
    path = tmp_path / "last.ckpt"
    state = {f"generator._orig_mod.{k}": v for k, v in gen.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"generator": hp}}, path)
    loaded = load_generator(path)
    x = torch.rand(1, 1, 20, 24) * 2 - 1
    torch.testing.assert_close(translate(loaded, x), translate(gen, x), rtol=0, atol=0)
    assert read_generator(path).config() == hp


def test_cyclegan_checkpoint_needs_a_direction(tmp_path):
    gen_a, gen_b = tiny_generator(seed=1), tiny_generator(seed=2)
    path = lightning_ckpt(tmp_path / "cyclegan.ckpt", {"gen_a": gen_a, "gen_b": gen_b}, {"ngf": 4, "n_blocks": 1})
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    for direction, expected in (("AtoB", gen_a), ("BtoA", gen_b)):
        torch.testing.assert_close(translate(load_generator(path, direction=direction), x), translate(expected, x),
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"cyclegan\.ckpt' holds two generators .* direction='AtoB' or 'BtoA'"):
        load_generator(path)
    with pytest.raises(ValueError, match="unknown direction 'sideways'; expected one of AtoB, BtoA"):
        load_generator(path, direction="sideways")
    cut = lightning_ckpt(tmp_path / "cut.ckpt", {"generator": gen_a}, {"ngf": 4, "n_blocks": 1})
    with pytest.raises(ValueError, match=r"cut\.ckpt' holds one generator, which translates A to B"):
        load_generator(cut, direction="BtoA")


def test_checkpoints_that_are_neither_cutlight_nor_reference_name_the_file(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"other\.pth' is neither a cutlight checkpoint .* nor a reference ResNet"):
        load_generator(tmp_path / "other.pth")
    (tmp_path / "notes.pth").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.pth' is not a PyTorch checkpoint: it starts with b'hello'"):
        load_generator(tmp_path / "notes.pth")
    torch.save({"state_dict": {"net.w": torch.zeros(1)}}, tmp_path / "lit.ckpt")
    with pytest.raises(ValueError, match=r"lit\.ckpt' is a Lightning checkpoint without generator weights.*'net'"):
        load_generator(tmp_path / "lit.ckpt")
    torch.save({"state_dict": {"generator.model.1.weight": torch.zeros(1)},
                "hyper_parameters": {"generator": {"_target_": "os.system"}}}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="refusing to import _target_ 'os.system'"):
        load_generator(tmp_path / "evil.ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint file at"):
        load_generator(tmp_path / "missing.ckpt")
    torch.save(reference_state(ngf=4, n_blocks=2), tmp_path / "g.pth")
    with pytest.raises(ValueError, match=r"the weights of .*g\.pth.* do not fit the generator built with .*'ngf': 8"
                       r".*different shapes: model\.1\.weight \(4, 3, 7, 7\) \(the model has \(8, 3, 7, 7\)\)"):
        load_generator(tmp_path / "g.pth", ngf=8)
    out = tmp_path / "out"
    assert main(["--ckpt", str(tmp_path / "other.pth"), "--input", str(tmp_path), "--output", str(out)]) == 1
    assert not out.exists()


# ------------------------------------------------------------------------------------------- folders / CLI


def _folder(root: Path) -> Path:
    src = root / "in"
    write_image(src / "a.jpg", 250, 187, seed=1)
    write_image(src / "sub" / "b.png", 1000, 600, seed=2)
    write_image(src / "sub" / "c.png", 30, 40, mode="L", seed=3)
    (src / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("skipped: not an image")
    return src


def test_cli_translates_a_folder_keeps_names_and_sizes_and_reports_failures(tmp_path, capsys):
    src, out = _folder(tmp_path), tmp_path / "out"
    torch.save(tiny_generator().state_dict(), tmp_path / "G.pth")
    args = ["--ckpt", str(tmp_path / "G.pth"), "--input", str(src), "--output", str(out), "--quiet"]
    assert main(args) == 1  # one image failed; the others are written
    text = capsys.readouterr().out
    assert "3 written, 0 skipped" in text and "1 failed" in text and "broken.png" in text and "cannot decode" in text
    sizes = {p.relative_to(out).as_posix(): Image.open(p).size for p in out.rglob("*.png")}
    assert sizes == {"a.png": (250, 187), "sub/b.png": (1000, 600), "sub/c.png": (30, 40)}

    (out / "a.png").write_bytes(b"mine")  # an existing file is never overwritten without --overwrite
    assert main(args) == 1
    assert "0 written, 3 skipped" in capsys.readouterr().out and (out / "a.png").read_bytes() == b"mine"
    assert main([*args, "--overwrite", "--ext", "jpg", "--size", "64"]) == 1
    assert "3 written, 0 skipped" in capsys.readouterr().out and (out / "a.png").read_bytes() == b"mine"
    assert Image.open(out / "sub" / "b.jpg").size == (64, 38) and Image.open(out / "a.jpg").size == (64, 48)


def test_colliding_output_names_stop_before_writing_unless_keep_suffix(tmp_path):
    src = tmp_path / "in"
    write_image(src / "x.jpg", 16, 16, seed=1)
    write_image(src / "x.png", 16, 16, seed=2)
    gen, out = tiny_generator(), tmp_path / "out"
    with pytest.raises(ValueError, match=r"x\.jpg, .*x\.png -> .*x\.png.*nothing was written.*--keep-suffix"):
        translate_folder(gen, src, out, progress=False)
    assert not out.exists()
    report = translate_folder(gen, src, out, keep_suffix=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png.png"] and len(report.written) == 2


def test_file_glob_and_output_inside_input(tmp_path):
    src = tmp_path / "in"
    for i, name in enumerate(["a.png", "b.jpg", "deep/c.png"]):
        write_image(src / name, 20, 12, seed=i)
    gen = tiny_generator()
    report = translate_folder(gen, [str(src / "*.png"), src / "b.jpg"], tmp_path / "o1", progress=False)
    assert [d.name for _, d in report.written] == ["a.png", "b.png"]
    report = translate_folder(gen, str(src / "**" / "*.png"), tmp_path / "o2", progress=False)
    assert sorted(d.relative_to(tmp_path / "o2").as_posix() for _, d in report.written) == ["a.png", "deep/c.png"]
    inner = src / "translated"  # outputs inside the input folder are not translated again on a rerun
    translate_folder(gen, src, inner, progress=False)
    report = translate_folder(gen, src, inner, progress=False)
    assert len(report.skipped) == 3 and not report.written and os.fspath(report) == os.fspath(inner)
    with pytest.raises(FileNotFoundError, match="no image files match the pattern"):
        translate_folder(gen, str(src / "*.gif"), tmp_path / "o3", progress=False)
    with pytest.raises(ValueError, match="unknown output extension 'gif'"):
        translate_folder(gen, src, tmp_path / "o3", ext="gif", progress=False)


class _CountingGenerator(torch.nn.Module):
    """A generator that counts the images it translates (the output checks must come before any)."""

    input_nc = output_nc = 3
    size_multiple = 4

    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, x):
        self.images += x.shape[0]
        return x


def test_a_glob_with_dotdot_cannot_write_outside_the_output_folder(tmp_path, capsys):
    write_image(tmp_path / "in" / "sub" / "a.png", 8, 8)
    write_image(tmp_path / "secret" / "b.png", 8, 8)
    gen, out = _CountingGenerator(), tmp_path / "in" / "out"
    escaping = str(tmp_path / "in" / "*" / ".." / ".." / "secret" / "*.png")  # fixed part: in/
    with pytest.raises(ValueError, match=r"input '.*b\.png' would be written outside the output folder .*'\.\./secret"):
        translate_folder(gen, escaping, out, progress=False)
    assert gen.images == 0 and not out.exists() and sorted(p.name for p in (tmp_path / "secret").iterdir()) == ["b.png"]
    ckpt = tmp_path / "g.pth"
    torch.save(tiny_generator().state_dict(), ckpt)
    assert main(["--ckpt", str(ckpt), "--input", escaping, "--output", str(out), "--quiet"]) == 1
    assert "would be written outside the output folder" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "in" / "secret").exists()
    inside = str(tmp_path / "in" / "*" / ".." / "sub" / "*.png")  # climbs and comes back: stays inside
    report = translate_folder(gen, inside, out, progress=False)
    assert [d.relative_to(out).as_posix() for _, d in report.written] == ["sub/a.png"]


def test_an_output_that_is_a_file_or_not_writable_is_refused_before_translating(tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png", 8, 8)
    gen = _CountingGenerator()
    (tmp_path / "file").write_text("keep me")
    for bad, reason in ((tmp_path / "file", "is a file, not a folder"),
                        (tmp_path / "file" / "sub", "cannot write into the output folder")):
        with pytest.raises(ValueError, match=reason):
            translate_folder(gen, tmp_path / "in", bad, progress=False)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes into a 0o555 folder: take a folder the kernel refuses instead
        read_only = Path("/sys/cutlight-test-output")
    try:
        with pytest.raises(ValueError, match="cannot write into the output folder .*nothing was translated"):
            translate_folder(gen, tmp_path / "in", read_only, progress=False)
    finally:
        (tmp_path / "ro").chmod(0o755)
    assert gen.images == 0 and (tmp_path / "file").read_text() == "keep me"
    ckpt = tmp_path / "g.pth"
    torch.save(tiny_generator().state_dict(), ckpt)
    assert main(["--ckpt", str(ckpt), "--input", str(tmp_path / "in"), "--output", str(tmp_path / "file")]) == 1
    assert "is a file, not a folder" in capsys.readouterr().err


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src")]

    def handle_data(self, data):
        self.text.append(data)


def test_html_gallery_pages_link_only_existing_files(tmp_path, monkeypatch):
    import cutlight.inference.evaluation as ev
    from helpers import TinyFeatureExtractor

    real_evaluator = ev.Evaluator
    monkeypatch.setattr(ev, "Evaluator", lambda extractor=None, **kw: real_evaluator(
        extractor=TinyFeatureExtractor(), **kw))
    src, real = tmp_path / "in put", tmp_path / "real"
    for i in range(5):
        write_image(src / f"im #{i}.png", 24, 20, seed=i)
        write_image(real / f"r{i}.png", 24, 20, seed=10 + i)
    (src / "zz.png").write_bytes(b"broken")
    torch.save(tiny_generator().state_dict(), tmp_path / "G.pth")
    out = tmp_path / "out"
    status = main(["--ckpt", str(tmp_path / "G.pth"), "--input", str(src), "--output", str(out), "--quiet",
                   "--html", "--per-page", "2", "--real", str(real), "--no-antialias"])
    assert status == 1  # zz.png failed
    pages = sorted(p.name for p in out.glob("*.html"))
    assert pages == ["index.html", "page2.html", "page3.html"]
    images = set()
    for page in pages:
        parser = _Links()
        parser.feed((out / page).read_text(encoding="utf-8"))
        for link in parser.links:
            if link.startswith("data:image/jpeg;base64,"):  # an embedded thumbnail (inputs, real images)
                continue
            target = (out / unquote(link)).resolve()
            assert target.is_file(), f"{page}: {link} does not resolve"
            images.add(target)
        assert "FID" in parser.text and any("KID" in t for t in parser.text)
        assert any("original FID" in t for t in parser.text)  # --no-antialias is shown
        assert any("n/a (one subset)" in t for t in parser.text)  # 5 against 5 images: KID has no spread
        assert any("fewer than 50 on a side" in t for t in parser.text)  # and the sample-size caveat
    translated = {p.resolve() for p in out.glob("*.png")}
    assert len(translated) == 5 and translated <= images
    assert {p.resolve() for p in src.glob("im*.png")} <= images


def test_html_gallery_survives_a_move_shows_real_images_and_num_test_limits(tmp_path):
    """Issue 27.13: inputs were linked as ../../in/..., so moving the output folder lost the input column; the
    authors' page also shows a real B column, and their --num_test had no equivalent."""
    import shutil

    src, real = tmp_path / "in", tmp_path / "real"
    for i in range(4):
        write_image(src / f"im{i}.png", 24, 20, seed=i)
    for i in range(2):
        write_image(real / f"r{i}.png", 24, 20, seed=10 + i)
    torch.save(tiny_generator().state_dict(), tmp_path / "G.pth")
    out = tmp_path / "out"
    assert main(["--ckpt", str(tmp_path / "G.pth"), "--input", str(src), "--output", str(out), "--quiet", "--html",
                 "--num-test", "3", "--real", str(real), "--device", "cpu"]) in (0, 1)  # FID of 3 images may fail
    assert sorted(p.name for p in out.glob("*.png")) == ["im0.png", "im1.png", "im2.png"]  # the first 3, sorted
    moved = tmp_path / "elsewhere" / "gallery"
    shutil.move(out, moved)
    shutil.rmtree(src)  # the inputs are gone too: their thumbnails are in the page
    parser = _Links()
    page = (moved / "index.html").read_text(encoding="utf-8")
    parser.feed(page)
    images = [link for link in parser.links if link.startswith("data:image/jpeg;base64,")]
    assert len(images) == 3 + 2  # 3 inputs, 2 real images (the third row has none)
    shown = [link for link in parser.links if not link.startswith("data:") and link.endswith(".png")
             and not link.startswith(".")]
    assert shown and all((moved / unquote(link)).is_file() for link in shown)  # translations: inside the folder
    assert "real target image" in page
    with pytest.raises(ValueError, match="max_images must be an integer >= 1 or None, got 0"):
        translate_folder(tiny_generator(), str(real), str(tmp_path / "x"), max_images=0)


# ------------------------------------------------------------------------------------------- channels


def test_load_image_channels_4_keeps_alpha_and_completes_other_modes(tmp_path):
    from cutlight.data import load_image

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # transparent pixel: its colour is kept with 4 channels
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    Image.new("L", (2, 2), 77).save(tmp_path / "g.png")
    four = load_image(tmp_path / "t.png", 4)
    assert four.mode == "RGBA" and four.getpixel((0, 0)) == (10, 20, 30, 0)
    assert load_image(tmp_path / "t.png", 3).getpixel((0, 0)) == (255, 255, 255)  # composited on white
    assert load_image(tmp_path / "g.png", 4).getpixel((1, 1)) == (77, 77, 77, 255)  # opaque
    with pytest.raises(ValueError, match=r"channels must be one of \(1, 3, 4\), got 2"):
        load_image(tmp_path / "g.png", 2)


def test_to_uint8_channels():
    from cutlight.metrics import to_uint8

    x = torch.tensor([1.0, -1.0, 0.0, -1.0]).view(1, 4, 1, 1)  # red... with alpha -1 (transparent)
    assert to_uint8(x, rgb=False).flatten().tolist() == [255, 0, 128, 0]
    assert to_uint8(x).flatten().tolist() == [255, 255, 255]  # transparent over white
    opaque = torch.tensor([1.0, -1.0, 0.0, 1.0]).view(1, 4, 1, 1)
    assert to_uint8(opaque).flatten().tolist() == [255, 0, 128]
    gray = torch.zeros(2, 1, 3, 3)
    assert to_uint8(gray).shape == (2, 3, 3, 3) and to_uint8(gray, rgb=False).shape == (2, 1, 3, 3)


def test_transforms_and_datamodule_accept_1_3_4_channels(tmp_path):
    from cutlight.data import EvalTransform, TrainTransform, UnpairedDataModule

    image = Image.new("RGBA", (40, 30), (10, 20, 30, 40))
    assert TrainTransform("crop", 32, 16, True, 4)(image).shape == (4, 16, 16)
    assert EvalTransform(8, 4)(image).shape == (4, 8, 8)
    for a, b in ((1, 4), (4, 3), (3, 1)):
        write_image(tmp_path / f"{a}{b}" / "A" / "x.png", 20, 20, seed=a)
        write_image(tmp_path / f"{a}{b}" / "B" / "y.png", 20, 20, mode="RGBA", seed=b)
        dm = UnpairedDataModule(dir_a=str(tmp_path / f"{a}{b}" / "A"), dir_b=str(tmp_path / f"{a}{b}" / "B"),
                                input_nc=a, output_nc=b, load_size=20, crop_size=16)
        dm.setup("fit")
        item = dm.train_dataset[0]
        assert item["A"].shape == (a, 16, 16) and item["B"].shape == (b, 16, 16)
    with pytest.raises(ValueError, match=r"output_nc=2 is invalid: expected one of \(1, 3, 4\)"):
        UnpairedDataModule(dir_a="a", dir_b="b", output_nc=2)


def test_grayscale_to_rgba_generator_writes_rgba_files_of_input_size(tmp_path):
    gen = tiny_generator(input_nc=1, output_nc=4)
    src = tmp_path / "in"
    write_image(src / "rgb.png", 33, 18, seed=1)  # converted to L like training data
    write_image(src / "alpha.png", 20, 24, mode="RGBA", seed=2)
    report = translate_folder(gen, src, tmp_path / "out", progress=False)
    assert len(report.written) == 2
    for name, size in (("rgb.png", (33, 18)), ("alpha.png", (20, 24))):
        image = Image.open(tmp_path / "out" / name)
        assert image.mode == "RGBA" and image.size == size
    with pytest.raises(ValueError, match="outputs 4 channels .* jpg has no alpha"):
        translate_folder(gen, src, tmp_path / "jpg", ext="jpg", progress=False)
    assert translate(gen, Image.new("RGB", (9, 13))).mode == "RGBA"
    gray = tiny_generator(input_nc=3, output_nc=1)
    assert translate(gray, [Image.new("RGBA", (10, 7))])[0].mode == "L"


def test_too_small_image_is_reported_and_output_containing_the_inputs_is_refused(tmp_path):
    src = tmp_path / "in"
    write_image(src / "ok.png", 16, 12)
    write_image(src / "dot.png", 3, 3)
    report = translate_folder(tiny_generator(), src, tmp_path / "out", progress=False)
    assert [d.name for _, d in report.written] == ["ok.png"]
    assert [(s.name, r.split(":")[0]) for s, r in report.failed] == [("dot.png", "translation failed")]
    with pytest.raises(ValueError, match="all 2 found are under the output folder .* does not contain the inputs"):
        translate_folder(tiny_generator(), src, src, progress=False)


def test_readme_python_snippet_runs(tmp_path, monkeypatch):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "cutlight.translate(" in b)
    torch.save(tiny_generator().state_dict(), tmp_path / "last.ckpt")
    write_image(tmp_path / "horse1.jpg", 30, 20)
    write_image(tmp_path / "horse2.png", 17, 25, mode="RGBA")
    write_image(tmp_path / "testA" / "h.png", 12, 12)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet.replace('device="cuda"', 'device="cpu"'), "README", "exec"), scope)
    assert [im.size for im in scope["zebras"]] == [(30, 20), (17, 25)]
    assert len(scope["report"].written) == 1 and (tmp_path / "translated" / "h.png").is_file()


def test_a_failing_batch_is_retried_image_by_image(tmp_path):
    class OneAtATime(torch.nn.Module):  # stands in for a batch too large for the device memory
        def __init__(self, inner):
            super().__init__()
            self.inner, self.input_nc, self.output_nc, self.size_multiple = inner, 3, 3, 4

        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("CUDA out of memory (simulated)")
            return self.inner(x)

    src = tmp_path / "in"
    for i in range(3):
        write_image(src / f"{i}.png", 16, 12, seed=i)
    report = translate_folder(OneAtATime(tiny_generator()), src, tmp_path / "out", batch_size=3, progress=False)
    assert len(report.written) == 3 and not report.failed
