"""Hostile image files and folders: every bad file is reported at once in ``setup`` (before any step) with its
reason, valid odd files are accepted, link loops are listed once and fast, and every decode error names the file."""

from __future__ import annotations

import io
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cutlight.data import UnpairedDataModule, list_images, load_image
from cutlight.data.folder import MAX_IMAGE_PIXELS, ImageFileError
from cutlight.data.image_checks import ImageCheckError, check_image, check_images


def _png(width: int, height: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(width: int, height: int, seed: int = 0, **kw) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height RGB pixels, with (almost) no pixel data: a few bytes that
    claim a decompression bomb."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        _chunk(b"IEND", b"")


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def hostile_layout(root: Path) -> dict[str, str]:
    """root/trainA, trainB, testA, testB with good images and hostile files; returns {file name: expected reason
    fragment} for the files that must be reported (the odd-but-valid ones must not be)."""
    for split in ("trainA", "trainB", "testA", "testB"):
        for i in range(2):
            write(root / split / f"good{i}.png", _png(40, 36, seed=i))
    png, jpg = _png(48, 48, seed=3), _jpeg(48, 48, seed=4)
    files = [  # (path, content, fragment of the expected reason)
        ("trainA/truncated.png", png[: len(png) // 2], "truncated"),
        ("trainB/truncated.jpg", jpg[: len(jpg) * 3 // 5], "truncated"),
        ("testB/cut.png", png[: len(png) - 40], "truncated"),  # the case: found after an epoch before
        ("trainA/zero.png", b"", "empty file"),
        ("trainB/notes.jpg", b"this is a text file, not a JPEG\n", "not an image"),
        ("testA/bomb.png", bomb_png(100_000, 100_000), "10000000000 pixels, more than the limit"),
        ("trainA/bomb_mid.png", bomb_png(10_000, 10_000), "more than the limit"),
    ]
    bad = {}
    for name, content, fragment in files:
        write(root / name, content)
        bad[Path(name).name] = fragment
    holes = np.ones((40, 40), np.float32)
    holes[3, 4] = np.nan  # a float image is read by its range (tests/test_image_modes.py); NaN shows nothing
    Image.fromarray(holes).save(root / "trainB" / "float.tif")
    bad["float.tif"] = "mode 'F' (32-bit float) with 1 NaN or infinite pixel value(s)"
    small = Image.new("RGB", (40, 24), (200, 10, 10))  # 40 x 24, EXIF says rotate: 24 x 40, below the crop of 32
    exif = small.getexif()
    exif[0x0112] = 6
    small.save(root / "trainA" / "rotated_small.jpg", exif=exif)
    bad["rotated_small.jpg"] = "24x40 (WxH)"
    # odd but valid: 16-bit grayscale, CMYK, palette, EXIF-rotated large enough, trailing bytes after IEND
    Image.fromarray(np.arange(40 * 40, dtype=np.uint16).reshape(40, 40) * 40).save(root / "trainA" / "gray16.png")
    Image.new("CMYK", (40, 40), (10, 200, 30, 0)).save(root / "trainB" / "cmyk.jpg")
    Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 40, 3), np.uint8)).convert("P").save(
        root / "testA" / "palette.png")
    big = Image.new("RGB", (48, 40), (10, 200, 10))
    exif = big.getexif()
    exif[0x0112] = 8
    big.save(root / "trainB" / "rotated_ok.jpg", exif=exif)
    write(root / "testB" / "trailing.png", png + b"appended by some tool")
    # link loops: a link to the folder itself and one back to the parent
    os.symlink(".", root / "trainA" / "self_loop")
    (root / "trainB" / "sub").mkdir()
    write(root / "trainB" / "sub" / "nested.png", _png(40, 40, seed=9))
    os.symlink("..", root / "trainB" / "sub" / "up")
    return bad


@pytest.fixture
def hostile(tmp_path):
    return tmp_path, hostile_layout(tmp_path)


def datamodule(root: Path, **kw) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), load_size=32, crop_size=32, preprocess="crop", **kw)


def test_setup_reports_every_bad_file_at_once_before_any_step(hostile):
    root, bad = hostile
    dm = datamodule(root)
    with pytest.raises(ImageCheckError) as info:
        dm.setup("fit")
    found = {p.name: reason for p, reason in info.value.problems}
    assert set(found) == set(bad), (sorted(found), sorted(bad))
    for name, fragment in bad.items():
        assert fragment in found[name], (name, found[name])
    message = str(info.value)
    assert message.startswith(f"{len(bad)} of ") and "data.verify=header" in message
    for path, _ in info.value.problems:
        assert str(path) in message
    assert dm.train_dataset is None  # nothing built on bad data

    import pytorch_lightning as pl

    from helpers import tiny_module, tiny_trainer

    steps = []

    class Count(pl.Callback):
        def on_train_batch_start(self, *args):
            steps.append(1)

    with pytest.raises(ImageCheckError):
        tiny_trainer(root, callbacks=[Count()]).fit(tiny_module(val_metrics=False), datamodule=datamodule(root))
    assert steps == []


def test_valid_odd_files_pass_and_load(hostile):
    root, bad = hostile
    for name, channels in (("trainA/gray16.png", 3), ("trainB/cmyk.jpg", 3), ("testA/palette.png", 1),
                           ("trainB/rotated_ok.jpg", 4), ("testB/trailing.png", 3)):
        assert check_image(root / name) is None, name
        assert check_image(root / name, verify="full") is None, name
        image = load_image(root / name, channels)
        assert image.mode == {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    assert load_image(root / "trainB" / "rotated_ok.jpg", 3).size == (40, 48)  # EXIF orientation applied


def test_full_verify_finds_corrupt_data_the_header_check_cannot(tmp_path):
    data = bytearray(_png(64, 64, seed=1))
    start = data.index(b"IDAT") + 40
    data[start:start + 30] = bytes(b ^ 0xFF for b in data[start:start + 30])  # broken pixel data, intact end
    path = write(tmp_path / "a" / "corrupt.png", bytes(data))
    assert check_image(path) is None  # header, size and end marker look fine
    assert "broken data stream" in check_image(path, verify="full")
    assert check_images([path], verify="none") == []
    with pytest.raises(ValueError, match="unknown verify 'quick'"):
        check_images([path], verify="quick")


def test_symlink_loops_are_listed_once_and_fast(tmp_path):
    root = tmp_path / "trainA"
    for i in range(3):
        write(root / f"{i}.png", _png(8, 8, seed=i))
        write(root / "deep" / f"{i}.png", _png(8, 8, seed=i))
    os.symlink(".", root / "self")  # trainA/self -> trainA
    os.symlink("..", root / "deep" / "up")  # trainA/deep/up -> trainA
    os.symlink(str(root / "deep"), root / "alias")  # a second name for a folder already listed
    os.symlink(str(root), root / "deep" / "again")
    start = time.perf_counter()
    files = list_images(root)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert len(files) == 6 and len({f.resolve() for f in files}) == 6, files


def test_every_decode_error_names_the_file(tmp_path):
    bomb = write(tmp_path / "bomb.png", bomb_png(100_000, 100_000))
    text = write(tmp_path / "text.jpg", b"hello")
    truncated = write(tmp_path / "t.jpg", _jpeg(64, 64)[:300])
    for path, fragment in ((bomb, "too large"), (text, "cannot decode"), (truncated, "cannot decode")):
        with pytest.raises(ImageFileError, match=fragment) as info:
            load_image(path, 3)
        assert str(path) in str(info.value)
    good = write(tmp_path / "good.png", _png(32, 32))
    with pytest.raises(ValueError, match=r"32x32 = 1024 pixels, more than the limit of 1000 \(data.max_image_pixels"):
        load_image(good, 3, max_pixels=1000)
    assert MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS  # the documented default is Pillow's

    # evaluate reads through the same loader
    from cutlight.inference.evaluation import read_image

    with pytest.raises(ValueError, match="bomb.png"):
        read_image(bomb)
    # training and validation datasets: named too
    from cutlight.data import SingleFolderDataset

    folder = tmp_path / "val"
    write(folder / "a.png", _png(32, 32))
    write(folder / "b.png", bomb_png(100_000, 100_000))
    with pytest.raises(ImageFileError, match="b.png' is too large"):
        SingleFolderDataset(folder, 32)[1]
    # ... and a bad file met in training (data.verify=none) stops the entrypoint with its message alone
    from cutlight.cli.train import _expected_errors

    assert ImageFileError in _expected_errors()


def test_translate_names_unreadable_and_too_small_images(tmp_path):
    from cutlight.inference import translate_folder
    from cutlight.networks import ResnetGenerator

    src = tmp_path / "in"
    write(src / "bomb.png", bomb_png(100_000, 100_000))
    Image.new("RGB", (3, 2), (1, 2, 3)).save(src / "tiny.png")
    Image.new("RGB", (16, 12), (1, 2, 3)).save(src / "fine.png")
    generator = ResnetGenerator(ngf=4, n_blocks=1).eval()
    report = translate_folder(generator, src, tmp_path / "out", progress=False, workers=0)
    reasons = {Path(p).name: r for p, r in report.failed}
    assert set(reasons) == {"bomb.png", "tiny.png"} and len(report.written) == 1
    assert "bomb.png' is too large" in reasons["bomb.png"]
    assert "3x2 (WxH) is too small for this generator: it accepts at least 8x8" in reasons["tiny.png"]


def test_pixel_limit_setting_is_checked_and_applies(tmp_path):
    write(tmp_path / "trainA" / "a.png", _png(40, 40))
    write(tmp_path / "trainB" / "b.png", _png(40, 40))
    with pytest.raises(ValueError, match="max_image_pixels=0 is invalid"):
        datamodule(tmp_path, max_image_pixels=0)
    dm = datamodule(tmp_path, max_image_pixels=1500)
    with pytest.raises(ImageCheckError, match="40x40 = 1600 pixels, more than the limit of 1500"):
        dm.setup("fit")
    dm = datamodule(tmp_path, verify="full")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["A"].shape == (1, 3, 32, 32) and torch.isfinite(batch["A"]).all()
