"""Precision and memory-format options of CUTModule (CPU paths; GPU is measured by `make bench --device cuda`)."""

import pytest
import torch

from helpers import tiny_data, tiny_module, tiny_trainer


def test_bf16_mixed_training_on_cpu(tmp_path):
    torch.manual_seed(0)
    model = tiny_module()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = tiny_trainer(tmp_path, precision="bf16-mixed", max_epochs=1, limit_train_batches=2)
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    metrics = trainer.callback_metrics
    assert all(torch.isfinite(metrics[k]) for k in ("train/loss_d", "train/loss_g", "val/fid"))
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, weights stay fp32
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_channels_last_matches_default_layout():
    torch.manual_seed(0)
    a = tiny_module()
    torch.manual_seed(0)
    b = tiny_module(channels_last=True)
    assert b.generator.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
    assert a.state_dict().keys() == b.state_dict().keys()


@pytest.mark.slow
def test_compile_keeps_state_dict_keys_and_trains(tmp_path):
    torch.manual_seed(0)
    plain = tiny_module()
    compiled = tiny_module(compile=True)
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # no _orig_mod. prefixes
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(compiled, datamodule=tiny_data(tmp_path))
    assert torch.isfinite(trainer.callback_metrics["train/loss_g"])
