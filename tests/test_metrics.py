"""FID/KID layer through the real torchmetrics classes, with TinyFeatureExtractor instead of Inception."""

import json
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image

import cutlight.evaluate as ev
from cutlight.metrics import TinyFeatureExtractor, build_fid, build_kid, kid_subset_size, to_uint8


def _images(n, seed, size=(32, 32)):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 200  # per-image colour
    noise = torch.rand(n, 3, *size, generator=g) * 55
    return (base + noise).round().to(torch.uint8)  # (N, 3, H, W)


def _fid(real, fake):
    fid = build_fid(feature_extractor=TinyFeatureExtractor())
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


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


def test_fid_keeps_real_statistics_across_reset():
    real, fake = _images(32, 0), _images(32, 1)
    fid = build_fid(feature_extractor=TinyFeatureExtractor())
    fid.update(real, real=True)
    fid.update(fake, real=False)
    first = float(fid.compute())
    fid.reset()
    fid.update(fake, real=False)
    assert float(fid.compute()) == pytest.approx(first, rel=1e-9)


def test_kid_near_zero_for_same_distribution_and_grows_with_shift():
    real = _images(40, 0)
    same = _images(40, 5)  # independent sample of the same distribution
    shifted = [(same.int() + d).clamp(0, 255).to(torch.uint8) for d in (30, 90)]
    results = []
    for fake in (same, *shifted):
        kid = build_kid(kid_subset_size(40, 40, default=20), feature_extractor=TinyFeatureExtractor())
        kid.update(real, real=True)
        kid.update(fake, real=False)
        torch.manual_seed(0)
        results.append(float(kid.compute()[0]))
    assert abs(results[0]) < 0.1 * results[2] and results[0] < results[1] < results[2], results


def test_kid_subset_size_rules():
    assert kid_subset_size(5000, 3000) == 1000
    assert kid_subset_size(50, 30) == 30
    assert kid_subset_size(50, 30, default=10) == 10
    with pytest.raises(ValueError, match="at least 2 images on each side; got n_real=1, n_fake=30"):
        kid_subset_size(1, 30)
    with pytest.raises(ValueError, match="subset_size must be an int >= 2; got 1"):
        build_kid(1, feature_extractor=TinyFeatureExtractor())


def test_missing_inception_weights_raise_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there; nothing may be downloaded
    with pytest.raises(RuntimeError, match="make fid-weights.*python -m cutlight.metrics.inception_weights"):
        build_fid()
    with pytest.raises(RuntimeError, match=r"not found at .*missing\.pth"):
        build_kid(10, weights_path=tmp_path / "missing.pth")


def _write_folder(path, imgs, gray=(), nested=()):
    (path / "sub").mkdir(parents=True)
    for i, img in enumerate(imgs):
        arr = img.permute(1, 2, 0).numpy()  # (H, W, 3)
        pil = Image.fromarray(arr[..., 0]) if i in gray else Image.fromarray(arr)
        pil.save(path / ("sub" if i in nested else "") / f"{i:03d}.png")
    (path / "notes.txt").write_text("not an image")
    return path


def _direct_metrics(fake_dir, real_dir):
    """Reference: read each PNG with PIL and update the metrics one image at a time."""
    fid = build_fid(feature_extractor=TinyFeatureExtractor())
    kid = build_kid(10, feature_extractor=TinyFeatureExtractor())
    for folder, real in ((real_dir, True), (fake_dir, False)):
        for p in sorted(folder.rglob("*.png")):
            img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB")).copy()).permute(2, 0, 1)[None]
            fid.update(img, real=real)
            kid.update(img, real=real)
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
    with pytest.raises(ValueError, match=r"cannot read image file '.*broken\.png'"):
        ev.evaluate_folders(good, good, feature_extractor=tiny)


def test_cli_json_and_translate(tmp_path, monkeypatch, capsys):
    real_dir = _write_folder(tmp_path / "real", list(_images(6, 0)))
    src_dir = _write_folder(tmp_path / "src", list(_images(5, 1)))
    monkeypatch.setattr(ev, "inception_extractor", lambda antialias: TinyFeatureExtractor())
    calls = []

    def translate_folder(ckpt_path, input_dir, output_dir, device=None, batch_size=1):
        calls.append((ckpt_path, input_dir, output_dir, batch_size))
        output_dir = tmp_path / "translated"
        output_dir.mkdir(exist_ok=True)
        for p in sorted(tmp_path.joinpath(input_dir).glob("*.png")):
            Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(output_dir / p.name)
        return output_dir

    monkeypatch.setitem(
        sys.modules, "cutlight.inference", types.SimpleNamespace(translate_folder=translate_folder)
    )
    assert ev.main(["--translate", "m.ckpt", "--input", str(src_dir), "--real", str(real_dir), "--json",
                    "--batch-size", "4", "--no-antialias"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert (res["n_fake"], res["n_real"]) == (5, 6) and calls[0][0] == "m.ckpt" and calls[0][3] == 4
    assert ev.main(["--fake", str(src_dir), "--real", str(real_dir)]) == 0
    assert "FID " in capsys.readouterr().out
    assert ev.main(["--fake", str(tmp_path / "nope"), "--real", str(real_dir)]) == 1
    assert "error: image folder" in capsys.readouterr().err
    for bad in (
        ["--real", "r"],
        ["--real", "r", "--translate", "c"],
        ["--real", "r", "--fake", "f", "--input", "i"],
    ):
        with pytest.raises(SystemExit):
            ev.main(bad)


def test_kid_is_reproducible_packs_its_features_and_clamps_its_subset():
    from cutlight.metrics import KID

    torch.manual_seed(0)
    kid = build_kid(1000, feature_extractor=TinyFeatureExtractor(), clamp_subset=True)
    assert isinstance(kid, KID)
    for _ in range(3):  # several updates per side: packed into one tensor per side before syncing
        kid.update(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), real=True)
        kid.update(torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8), real=False)
    torch.manual_seed(123)
    first = kid.compute()
    after_compute = torch.rand(1)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_compute)  # compute does not advance the caller's RNG
    assert kid.subset_size == 9  # min(1000, 12 real, 9 fake)
    assert [len(kid.real_features), len(kid.fake_features)] == [1, 1]
    assert [f.shape[0] for f in (kid.real_features[0], kid.fake_features[0])] == [12, 9]
    assert all(torch.equal(a, b) for a, b in zip(kid.compute(), first))  # same subsets every time
    strict = build_kid(10, feature_extractor=TinyFeatureExtractor())
    strict.update(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), real=True)
    strict.update(torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8), real=False)
    with pytest.raises(ValueError, match="subset_size"):
        strict.compute()
