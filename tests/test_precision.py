"""Precision and memory-format options of CUTModule (CPU paths; GPU is measured by `make bench --device cuda`)."""

import pytest
import torch

from helpers import K_NETWORK, TINY_MODEL, assert_scaled_close, tiny_data, tiny_module, tiny_trainer


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


@pytest.mark.numeric
def test_channels_last_matches_default_layout():
    torch.manual_seed(0)
    a = tiny_module()
    torch.manual_seed(0)
    b = tiny_module(channels_last=True)
    assert b.generator.model[1].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert_scaled_close(b(x), a(x), K_NETWORK)  # other kernels for the other layout: round-off
    assert a.state_dict().keys() == b.state_dict().keys()


@pytest.mark.slow
def test_compile_keeps_state_dict_keys_and_trains(tmp_path, monkeypatch):
    """``compile=True`` compiles every network in place (``nn.Module.compile``): same state-dict keys, and a fit
    runs through Dynamo's graphs and AOT autograd. The backend here is ``aot_eager``: the graphs are traced and
    differentiated as with Inductor, without generating and compiling C++ kernels (about 105 s on a cold 2-core
    machine, 10 s here). Inductor itself compiles our networks in tests/test_cuda.py and ``make bench --device
    cuda`` (a GPU); on a CPU it is not exercised by ``make test``."""
    compile_calls = []

    def aot_eager_compile(module, *args, **kwargs):
        compile_calls.append(type(module).__name__)
        return real_compile(module, *args, **{**kwargs, "backend": "aot_eager"})

    real_compile = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", aot_eager_compile)
    torch.manual_seed(0)
    plain = tiny_module()
    compiled = tiny_module(compile=True)
    assert sorted(compile_calls) == ["PatchDiscriminator", "PatchSampler", "ResnetGenerator"]
    assert compiled.state_dict().keys() == plain.state_dict().keys()  # no _orig_mod. prefixes
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(compiled, datamodule=tiny_data(tmp_path))
    assert torch.isfinite(trainer.callback_metrics["train/loss_g"])


def test_sampler_heads_and_nce_stay_fp32_under_fp16_autocast():
    """The heads' outputs start around 1e-4: normalised in fp16 their squared norms underflow (NaN NCE loss)."""
    from cutlight import PatchSampler
    from cutlight.losses import patch_nce_loss

    torch.manual_seed(0)
    sampler = PatchSampler([8, 16], mlp_dim=16)
    feats = [torch.rand(2, 8, 8, 8), torch.rand(2, 16, 4, 4)]
    with torch.autocast("cpu", dtype=torch.float16):
        samples, ids = sampler([f.half() for f in feats], 16)
        losses = [patch_nce_loss(s, s.roll(1, 1)) for s in samples]
    for s, loss in zip(samples, losses):
        assert s.dtype == torch.float32 and loss.dtype == torch.float32 and torch.isfinite(loss).all()
        # unit norm up to fp16 round-off of the features (eps 9.8e-4)
        torch.testing.assert_close(s.norm(dim=-1), torch.ones(s.shape[:2]), rtol=0, atol=2 * torch.finfo(torch.float16).eps)


def test_fp16_autocast_with_one_grad_scaler_for_both_optimizers_trains():
    """16-mixed as Lightning runs it under manual optimization: one GradScaler, ``step`` + ``update`` after each of
    the D and G steps. At init the NCE gradients overflow fp16 at the default scale 2**16, so the first G steps
    are skipped while the scale halves; after that G, the heads and D all train with finite losses."""
    from cutlight import CUTObjective, PatchDiscriminator, PatchSampler, ResnetGenerator

    torch.manual_seed(0)
    obj = CUTObjective(**TINY_MODEL["objective"])
    G, D = ResnetGenerator(**TINY_MODEL["generator"]), PatchDiscriminator(**TINY_MODEL["discriminator"])
    H = PatchSampler(G.feature_channels(obj.nce_layers), **TINY_MODEL["sampler"])
    scaler = torch.amp.GradScaler("cpu")

    class Scaled:
        def __init__(self, params):
            self.opt, self.steps = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999)), 0

        def zero_grad(self, set_to_none=True):
            self.opt.zero_grad(set_to_none=set_to_none)

        def step(self):
            scale = scaler.get_scale()
            scaler.step(self.opt)
            scaler.update()
            self.steps += scaler.get_scale() >= scale  # the scale halves exactly when the step was skipped

    opt_g, opt_d = Scaled([*G.parameters(), *H.parameters()]), Scaled(D.parameters())
    nce = []
    for _ in range(40):  # 16 px: fp16 convolutions are slow on a CPU (4x the fp32 time at 32 px)
        a, b = torch.rand(2, 1, 3, 16, 16) * 2 - 1
        with torch.autocast("cpu", dtype=torch.float16):
            out = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": a, "B": b},
                                {"generator": opt_g, "discriminator": opt_d},
                                backward=lambda loss: scaler.scale(loss).backward())
        assert all(torch.isfinite(v) for v in out.values()), out
        nce.append(float(out["loss_nce"]))
    assert opt_d.steps >= 35 and opt_g.steps >= 10, (opt_d.steps, opt_g.steps)
    assert all(torch.isfinite(p).all() for net in (G, D, H) for p in net.parameters())
    assert min(nce[-5:]) < 0.6 * max(nce[:5])  # G + heads learned
