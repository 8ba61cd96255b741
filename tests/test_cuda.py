"""GPU checks: skipped without CUDA (CI has none); run on a lent GPU with ``python -m pytest tests/test_cuda.py``.

They cover what the CPU suite cannot: 16-mixed with Lightning's GradScaler shared by two manual optimizers,
bf16-mixed + channels-last + compile on the GPU, fused Adam, and the CUDA kernels of our layer formulations
against the CPU ones.
"""

import pytest
import torch

from helpers import tiny_data, tiny_module, tiny_trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _fit(tmp_path, model, batches=4, **trainer_kw):
    before = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    trainer = tiny_trainer(tmp_path, accelerator="gpu", devices=1, max_epochs=1,
                           limit_train_batches=batches, **trainer_kw)
    trainer.fit(model, datamodule=tiny_data(tmp_path, num_train=batches))
    after = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return trainer, before, after


def test_16_mixed_shares_one_scaler_between_the_two_optimizers(tmp_path):
    torch.manual_seed(0)
    model = tiny_module()
    # 40 iterations: the first ~17 G steps overflow at the initial scale 2**16 and are skipped while the scale halves
    # (tests/test_precision.py runs the same protocol on CPU)
    trainer, before, after = _fit(tmp_path, model, batches=40, precision="16-mixed")
    scaler = trainer.precision_plugin.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert torch.isfinite(torch.tensor(scaler.get_scale()))
    m = trainer.callback_metrics
    assert all(torch.isfinite(m[k]) for k in ("train/loss_d", "train/loss_g", "val/fid"))
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: fp32 master weights
    changed = {name for name in ("generator", "discriminator", "sampler")
               if any(not torch.equal(before[k], v) for k, v in after.items() if k.startswith(name + "."))}
    assert changed == {"generator", "discriminator", "sampler"}  # both optimizers stepped (not all skipped)
    opt_g, opt_d = trainer.optimizers
    assert opt_g.defaults["fused"] and opt_d.defaults["fused"]  # fused Adam (CUDA and CPU)


def test_bf16_channels_last_compile_trains_on_gpu(tmp_path):
    torch.manual_seed(0)
    plain_keys = tiny_module().state_dict().keys()
    model = tiny_module(channels_last=True, compile=True)
    trainer, before, after = _fit(tmp_path, model, precision="bf16-mixed", limit_val_batches=0)
    assert after.keys() == plain_keys  # compile leaves state-dict keys alone
    assert torch.isfinite(trainer.callback_metrics["train/loss_g"])
    assert any(not torch.equal(before[k], v) for k, v in after.items())


def test_gpu_forward_and_gradients_match_cpu():
    """Generator, discriminator and NCE on CUDA equal the CPU results (fp32, TF32 off)."""
    from cutlight import CUTObjective, PatchDiscriminator, PatchSampler, ResnetGenerator

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    G, D = ResnetGenerator(ngf=16, n_blocks=2), PatchDiscriminator(ndf=16)
    obj = CUTObjective(num_patches=32)
    H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=32)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    results, ids = {}, None
    for device in ("cpu", "cuda"):
        nets = [n.to(device) for n in (G, D, H)]
        for n in nets:
            n.zero_grad(set_to_none=True)
        fake, feats = G.forward_with_features(x.to(device), obj.nce_layers)
        samples, drawn = H(feats, 32, patch_ids=None if ids is None else [i.to(device) for i in ids])
        ids = ids or [i.cpu() for i in drawn]  # same patch positions on both devices
        loss = D(fake).mean() + sum((s * s.roll(1, 1)).sum(-1).mean() for s in samples)
        loss.backward()
        results[device] = [fake.detach().cpu(), loss.detach().cpu()] + [
            p.grad.detach().cpu() for n in nets for p in n.parameters() if p.grad is not None]
    assert len(results["cpu"]) == len(results["cuda"])
    for a, b in zip(results["cpu"], results["cuda"]):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4)
