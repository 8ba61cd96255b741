"""TranslationWriter, called directly, hook by hook as ``trainer.predict`` calls it: files named by the translate
command's rules, planned before anything is written, existing ones skipped, totals over the ranks."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from cutlight.lightning.callbacks import TranslationWriter
from fake_trainer import FakeModule, fake_trainer


def _trainer(root: Path, paths: list[Path]):
    strategy = SimpleNamespace(broadcast=lambda x: x, reduce=lambda t, reduce_op: t)
    dataset = SimpleNamespace(root=str(root), paths=[str(p) for p in paths])
    return fake_trainer(strategy=strategy, predict_dataloaders=[SimpleNamespace(dataset=dataset)])


def test_writer_names_skips_and_counts(tmp_path):
    paths = [tmp_path / "in" / "a.png", tmp_path / "in" / "sub" / "b.jpg"]
    trainer, module = _trainer(tmp_path / "in", paths), FakeModule()
    writer = TranslationWriter(str(tmp_path / "out"), ext="png")
    writer.setup(trainer, module, "predict")
    writer.on_predict_start(trainer, module)
    assert [dst for _, dst in writer.report.planned] == [tmp_path / "out" / "a.png", tmp_path / "out" / "sub" / "b.png"]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.png").write_bytes(b"kept")  # exists: skipped, not overwritten
    images = torch.rand(2, 3, 6, 10) * 2 - 1  # (B, C, H, W) in [-1, 1]
    writer.write_on_batch_end(trainer, module, {"image": images, "path": [str(p) for p in paths]}, [0, 1], None, 0, 0)
    writer.on_predict_end(trainer, module)
    assert (tmp_path / "out" / "a.png").read_bytes() == b"kept"
    assert Image.open(tmp_path / "out" / "sub" / "b.png").size == (10, 6)
    assert writer.totals == {"written": 1, "skipped": 1, "failed": 0}
    assert not list((tmp_path / "out").rglob("*.partial"))  # written under a temporary name, then renamed


def test_writer_refuses_colliding_names_before_writing(tmp_path):
    paths = [tmp_path / "in" / "x.jpg", tmp_path / "in" / "x.png"]
    trainer, module = _trainer(tmp_path / "in", paths), FakeModule()
    writer = TranslationWriter(str(tmp_path / "out"))
    writer.setup(trainer, module, "predict")
    with pytest.raises(ValueError, match="would be written by more than one input"):
        writer.on_predict_start(trainer, module)
    keep = TranslationWriter(str(tmp_path / "out"), keep_suffix=True)
    keep.setup(trainer, module, "predict")
    keep.on_predict_start(trainer, module)
    assert sorted(dst.name for _, dst in keep.report.planned) == ["x.jpg.png", "x.png.png"]


def test_writer_rejects_unknown_extension():
    with pytest.raises(ValueError, match="unknown output extension 'gif'"):
        TranslationWriter("out", ext="gif")
