"""FID/KID (``cutlight.metrics.Evaluator``) through the real torchmetrics classes, with the tests'
TinyFeatureExtractor instead of Inception."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cutlight.cli.evaluate as evaluate_cli
import cutlight.inference.evaluation as ev
from cutlight.metrics import Evaluator, kid_subset_size, to_uint8
from helpers import TinyFeatureExtractor


def _images(n, seed, size=(32, 32)):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 200  # per-image colour
    noise = torch.rand(n, 3, *size, generator=g) * 55
    return (base + noise).round().to(torch.uint8)  # (N, 3, H, W)


def _evaluator(**kw):
    return Evaluator(extractor=TinyFeatureExtractor(), **kw)


def _fid(real, fake):
    ev_ = _evaluator(kid=False)
    ev_.update(real, real=True)
    ev_.update(fake, real=False)
    return float(ev_.compute()["fid"])


def _reference_fid(f1, f2):
    """Textbook Fréchet distance in float64 numpy/scipy: |mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))."""
    linalg = pytest.importorskip("scipy.linalg")
    f1, f2 = f1.numpy(), f2.numpy()
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_to_uint8_rounds_clamps_and_repeats_gray():
    v = torch.tensor([-1.0, 1.0, 0.0, -1 + 0.6 / 127.5, -1 + 0.4 / 127.5, 1 - 0.6 / 127.5, 2.0, -3.0])
    out = to_uint8(v.view(1, 1, 1, -1))  # (1, 1, 1, 8) -> (1, 3, 1, 8)
    assert out.dtype == torch.uint8 and out.shape == (1, 3, 1, 8)
    assert out[0, :, 0].tolist() == [[0, 255, 128, 1, 0, 254, 255, 0]] * 3  # truncation would give 0 and 254
    x = torch.rand(2, 3, 4, 4) * 2 - 1
    assert torch.equal(to_uint8(x), ((x + 1) * 127.5).round().to(torch.uint8))
    half = torch.linspace(-1, 1, 511).view(1, 1, 1, -1)  # includes every k / 127.5 - 1 and the midpoints
    assert torch.equal(to_uint8(half.bfloat16()), to_uint8(half.bfloat16().float()))
    with pytest.raises(ValueError, match=r"C in \(1, 3, 4\); got shape \(2, 2, 4, 4\)"):
        to_uint8(torch.zeros(2, 2, 4, 4))


def test_tiny_extractor_is_deterministic_and_size_agnostic():
    imgs = _images(3, 0)
    a, b = TinyFeatureExtractor()(imgs), TinyFeatureExtractor()(imgs)
    assert a.shape == (3, 16) and a.dtype == torch.float64 and torch.equal(a, b)
    assert TinyFeatureExtractor()(_images(2, 0, size=(20, 50))).shape == (2, 16)
    with pytest.raises(ValueError, match="expected uint8"):
        TinyFeatureExtractor()(imgs.float())


def test_fid_self_zero_grows_with_perturbation_and_matches_reference():
    real = _images(48, 0)
    assert abs(_fid(real, real)) < 1e-6
    shifted = [(real.int() + d).clamp(0, 255).to(torch.uint8) for d in (8, 30, 90)]
    fids = [_fid(real, s) for s in shifted]
    assert 1e-4 < fids[0] < fids[1] < fids[2], fids
    net = TinyFeatureExtractor()
    assert fids[1] == pytest.approx(_reference_fid(net(real), net(shifted[1])), rel=1e-6)


def test_evaluator_keeps_reals_across_reset_and_drops_them_on_request():
    real, fake = _images(32, 0), _images(32, 1)
    e = _evaluator(kid_subset_size=16)
    e.update(real, real=True)
    e.update(fake, real=False)
    first = {k: float(v) for k, v in e.compute().items()}
    e.reset()
    assert e.has_reals and e.counts[False] == 0
    e.update(fake, real=False)
    again = {k: float(v) for k, v in e.compute().items()}
    assert again == pytest.approx(first, rel=1e-9)
    e.reset(reals=True)
    assert not e.has_reals
    e.update(fake, real=False)
    with pytest.raises(RuntimeError, match="need >= 2 images per side; got 32 translated, 0 real"):
        e.compute()


def test_evaluator_runs_the_extractor_once_per_batch_for_fid_and_kid():
    net = TinyFeatureExtractor()
    calls = []
    net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    e = Evaluator(extractor=net, kid_subset_size=4)
    e.update(_images(6, 0), real=True)
    e.update(torch.rand(5, 3, 32, 32) * 2 - 1, real=False)  # float images in [-1, 1] are converted once
    values = e.compute()
    assert calls == [6, 5] and set(values) == {"fid", "kid", "kid_std"}


def test_evaluator_extractor_by_target_and_bad_specs():
    e = Evaluator(extractor={"_target_": "helpers.TinyFeatureExtractor", "num_features": 8})
    assert e.extractor.num_features == 8
    with pytest.raises(ImportError, match="cannot import 'helpers.Nope'"):
        Evaluator(extractor={"_target_": "helpers.Nope"})
    with pytest.raises(ValueError, match="unknown feature extractor 'tiny'"):
        Evaluator(extractor="tiny")
    with pytest.raises(ValueError, match="needs an int attribute 'num_features'"):
        Evaluator(extractor=torch.nn.Identity())


def test_kid_near_zero_for_same_distribution_and_grows_with_shift():
    real = _images(40, 0)
    same = _images(40, 5)  # independent sample of the same distribution
    shifted = [(same.int() + d).clamp(0, 255).to(torch.uint8) for d in (30, 90)]
    results = []
    for fake in (same, *shifted):
        e = _evaluator(fid=False, kid_subset_size=20)
        e.update(real, real=True)
        e.update(fake, real=False)
        results.append(float(e.compute()["kid"]))
    assert abs(results[0]) < 0.1 * results[2] and results[0] < results[1] < results[2], results


def test_kid_subset_size_rules():
    assert kid_subset_size(5000, 3000) == 1000
    assert kid_subset_size(50, 30) == 30
    assert kid_subset_size(50, 30, default=10) == 10
    with pytest.raises(ValueError, match="at least 2 images on each side; got n_real=1, n_fake=30"):
        kid_subset_size(1, 30)
    with pytest.raises(ValueError, match="kid_subset_size must be an int >= 2; got 1"):
        _evaluator(kid_subset_size=1)


def test_missing_inception_weights_raise_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there; nothing may be downloaded
    with pytest.raises(RuntimeError, match="make fid-weights.*python -m cutlight.metrics.inception_weights"):
        Evaluator()
    with pytest.raises(RuntimeError, match=r"not found at .*missing\.pth"):
        Evaluator(weights_path=tmp_path / "missing.pth")


def _write_folder(path, imgs, gray=(), nested=()):
    (path / "sub").mkdir(parents=True)
    for i, img in enumerate(imgs):
        arr = img.permute(1, 2, 0).numpy()  # (H, W, 3)
        pil = Image.fromarray(arr[..., 0]) if i in gray else Image.fromarray(arr)
        pil.save(path / ("sub" if i in nested else "") / f"{i:03d}.png")
    (path / "notes.txt").write_text("not an image")
    return path


def _direct_metrics(fake_dir, real_dir):
    """Reference: read each PNG with PIL and feed torchmetrics' own FID / KID one image at a time."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    fid = FrechetInceptionDistance(feature=TinyFeatureExtractor())
    kid = KernelInceptionDistance(feature=TinyFeatureExtractor(), subset_size=10)
    for folder, real in ((real_dir, True), (fake_dir, False)):
        for p in sorted(folder.rglob("*.png")):
            img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)[None]
            fid.update(img, real=real)
            kid.update(img, real=real)
    torch.manual_seed(0)  # cutlight.metrics.KID_SEED
    return float(fid.compute()), float(kid.compute()[0])


def test_evaluate_folders_matches_direct_metric_updates(tmp_path):
    real = list(_images(24, 0)) + list(_images(5, 2, size=(24, 40)))  # mixed sizes
    fake = list(_images(20, 1)) + list(_images(6, 3, size=(40, 24)))
    real_dir = _write_folder(tmp_path / "real", real)
    fake_dir = _write_folder(tmp_path / "fake", fake, gray={1, 11}, nested={4, 5})
    res = ev.evaluate_folders(fake_dir, real_dir, batch_size=5, kid_subset_size=10,
                              feature_extractor=TinyFeatureExtractor())  # fmt: skip
    assert (res["n_fake"], res["n_real"]) == (26, 29)
    fid, kid = _direct_metrics(fake_dir, real_dir)
    assert res["fid"] == pytest.approx(fid, rel=1e-7) and res["fid"] > 1e-3  # only summation order differs
    assert res["kid_mean"] == pytest.approx(kid, rel=1e-9, abs=1e-12)
    again = ev.evaluate_folders(fake_dir, real_dir, batch_size=2, kid_subset_size=10,
                                feature_extractor=TinyFeatureExtractor())  # fmt: skip
    assert again["kid_mean"] == pytest.approx(res["kid_mean"], rel=1e-9)  # seeded KID subsets


def test_evaluate_folders_errors(tmp_path):
    good = _write_folder(tmp_path / "good", list(_images(3, 0)))
    (tmp_path / "empty").mkdir()
    tiny = TinyFeatureExtractor()
    with pytest.raises(ValueError, match="empty. contains no image files"):
        ev.evaluate_folders(tmp_path / "empty", good, feature_extractor=tiny)
    with pytest.raises(FileNotFoundError, match="nope' does not exist"):
        ev.evaluate_folders(good, tmp_path / "nope", feature_extractor=tiny)
    with pytest.raises(ValueError, match=r"kid_subset_size=5 must be in \[2, min\(n_fake=3, n_real=3\)\]"):
        ev.evaluate_folders(good, good, kid_subset_size=5, feature_extractor=tiny)
    one = _write_folder(tmp_path / "one", list(_images(1, 0)))
    with pytest.raises(ValueError, match="at least 2 images on each side"):
        ev.evaluate_folders(one, good, feature_extractor=tiny)
    (good / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"cannot decode image file '.*broken\.png'"):
        ev.evaluate_folders(good, good, feature_extractor=tiny)


def test_cli_json_and_translate(tmp_path, monkeypatch, capsys):
    real_dir = _write_folder(tmp_path / "real", list(_images(6, 0)))
    src_dir = _write_folder(tmp_path / "src", list(_images(5, 1)))
    real_evaluator = ev.Evaluator
    monkeypatch.setattr(ev, "Evaluator", lambda extractor=None, **kw: real_evaluator(
        extractor=TinyFeatureExtractor(), **kw))
    calls = []

    def translate_folder(ckpt_path, input_dir, output_dir, device=None, batch_size=1):
        calls.append((ckpt_path, input_dir, output_dir, batch_size))
        output_dir = tmp_path / "translated"
        output_dir.mkdir(exist_ok=True)
        for p in sorted(tmp_path.joinpath(input_dir).glob("*.png")):
            Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(output_dir / p.name)
        return output_dir

    monkeypatch.setattr(evaluate_cli, "translate_folder", translate_folder)
    assert evaluate_cli.main(["--translate", "m.ckpt", "--input", str(src_dir), "--real", str(real_dir), "--json",
                    "--batch-size", "4", "--no-antialias"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert (res["n_fake"], res["n_real"]) == (5, 6) and calls[0][0] == "m.ckpt" and calls[0][3] == 4
    assert evaluate_cli.main(["--fake", str(src_dir), "--real", str(real_dir)]) == 0
    assert "FID " in capsys.readouterr().out
    assert evaluate_cli.main(["--fake", str(tmp_path / "nope"), "--real", str(real_dir)]) == 1
    assert "error: image folder" in capsys.readouterr().err
    for bad in (
        ["--real", "r"],
        ["--real", "r", "--translate", "c"],
        ["--real", "r", "--fake", "f", "--input", "i"],
    ):
        with pytest.raises(SystemExit):
            evaluate_cli.main(bad)


def test_fid_is_a_distance_small_samples_warn_and_one_kid_subset_has_no_spread(tmp_path, monkeypatch, capsys):
    real_dir = _write_folder(tmp_path / "real", list(_images(8, 0)))
    few = _write_folder(tmp_path / "few", list(_images(3, 1)))
    real_evaluator = ev.Evaluator
    monkeypatch.setattr(ev, "Evaluator", lambda extractor=None, **kw: real_evaluator(
        extractor=TinyFeatureExtractor(), **kw))
    assert evaluate_cli.main(["--fake", str(real_dir), "--real", str(real_dir)]) == 0  # the same folder twice
    out, err = capsys.readouterr()
    assert out.startswith("FID 0.0000  KID ") and "-0.0" not in out.split("KID")[0]
    assert "+- n/a (one subset)" in out  # 8 against 8 with subsets of 8: every subset is every image
    assert "warning: FID/KID from 8 translated and 8 real images: fewer than 50 on a side" in err
    assert evaluate_cli.main(["--fake", str(few), "--real", str(real_dir), "--json"]) == 0  # the 3 vs 8
    out, err = capsys.readouterr()
    res = json.loads(out)
    assert res["kid_subset_size"] == 3 and not res["kid_single_subset"] and res["kid_std"] > 0  # 8 reals: a spread
    assert len(res["warnings"]) == 1 and "fewer than 50" in res["warnings"][0] and "fewer than 50" in err
    assert "n/a" not in ev.kid_text(res) and ev.scores_line(res, True).startswith(f"FID {res['fid']:.4f}  KID ")
    assert ev.caveats(ev.MIN_IMAGES, 200, False) == [] and len(ev.caveats(ev.MIN_IMAGES - 1, 200, True)) == 2


def test_evaluator_clamps_round_off_below_zero_of_fid(monkeypatch):
    e = _evaluator(kid=False)
    for real in (True, False):
        e.update(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), real=real)
    monkeypatch.setattr(e.fid, "compute", lambda: torch.tensor(-2e-4, dtype=torch.float64))
    assert e.compute()["fid"].item() == 0.0


def test_kid_is_reproducible_does_not_advance_the_callers_rng_and_clamps_its_subset():
    torch.manual_seed(0)
    e = _evaluator(fid=False)  # kid_subset_size 1000 is a maximum
    for _ in range(3):  # several updates per side
        e.update(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), real=True)
        e.update(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), real=False)
    torch.manual_seed(123)
    first = e.compute()
    after_compute = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_compute)  # compute does not advance the caller's RNG
    assert e.kid.subset_size == 9  # min(1000, 12 real, 9 fake)
    again = e.compute()
    assert all(torch.equal(first[k], again[k]) for k in first)  # same subsets every time
