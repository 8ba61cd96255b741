import copy

import pytest
import torch

from cutlight.checks import ConfigValueError
from cutlight.objectives import CUTObjective
from cutlight.optim import apply_warmup, linear_decay
from helpers import K_NETWORK, K_OP, assert_scaled_close, tiny_data, tiny_module, tiny_trainer


def snapshot(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_one_training_step_updates_all_three_networks(tmp_path):
    torch.manual_seed(0)
    model = tiny_module()
    before = snapshot(model)
    tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=tiny_data(tmp_path))
    after = snapshot(model)
    for prefix in ("generator.", "discriminator.", "sampler."):
        changed = [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]
        total = [k for k in before if k.startswith(prefix)]
        assert len(changed) == len(total), f"{prefix}: only {len(changed)}/{len(total)} parameters changed"


def test_heads_train_and_discriminator_gets_no_gradient_from_g_step():
    torch.manual_seed(0)
    model = tiny_module()
    obj = model.objective
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    out = obj.translate(model.generator, a, b)
    model.discriminator.requires_grad_(False)
    terms = obj.generator_losses(model.discriminator, model.generator, model.sampler, out)
    terms["loss_g"].backward()
    assert all(p.grad is None for p in model.discriminator.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.sampler.parameters())
    assert model.generator.model[1].weight.grad.abs().sum() > 0


@pytest.mark.numeric
def test_iteration_leaves_d_grads_from_d_step_only():
    """After a full iteration D's .grad holds exactly the D-step gradient (nothing added by the G step)."""
    torch.manual_seed(0)
    model = tiny_module()
    opt_g, opt_d = (torch.optim.SGD(p, lr=0.0) for p in
                    ([*model.generator.parameters(), *model.sampler.parameters()], model.discriminator.parameters()))
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    torch.manual_seed(1)
    model.objective.iteration(model.nets, {"A": a, "B": b}, {"generator": opt_g, "discriminator": opt_d})
    got = [p.grad.clone() for p in model.discriminator.parameters()]
    torch.manual_seed(1)
    fake = model.objective.translate(model.generator, a, b).fake_b
    model.discriminator.zero_grad(set_to_none=True)
    model.objective.discriminator_loss(model.discriminator, b, fake).backward()
    for g, p in zip(got, model.discriminator.parameters()):
        assert_scaled_close(g, p.grad, K_NETWORK)  # D on another batch composition: round-off


@pytest.mark.numeric
def test_identity_nce_concatenates_and_averages():
    torch.manual_seed(0)
    model = tiny_module()
    sizes = []
    model.generator.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    seen = []
    orig = model.generator.forward_with_features
    model.generator.forward_with_features = lambda x, layers: (seen.append(x.shape[0]), orig(x, layers))[1]
    a, b = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    out = model.objective.translate(model.generator, a, b)
    assert seen == [4] and out.fake_b.shape[0] == 2 and out.idt_b.shape[0] == 2
    # the generator forward ran on cat(real_a, real_b): its outputs equal separate translations
    assert_scaled_close(out.fake_b, model.generator(a), K_NETWORK)  # batch 4 vs 2: other kernels, round-off
    assert_scaled_close(out.idt_b, model.generator(b), K_NETWORK)
    terms = model.objective.generator_losses(model.discriminator, model.generator, model.sampler, out)
    assert_scaled_close(terms["loss_g"], terms["loss_g_gan"] + 0.5 * (terms["loss_nce"] + terms["loss_nce_idt"]), K_OP)
    assert terms["loss_nce_idt"] > 0
    no_idt = CUTObjective(nce_idt=False, num_patches=16)
    out = no_idt.translate(model.generator, a, b)
    assert out.idt_b is None and seen[-1] == 2
    terms = no_idt.generator_losses(model.discriminator, model.generator, model.sampler, out)
    assert_scaled_close(terms["loss_g"], terms["loss_g_gan"] + terms["loss_nce"], K_OP)
    assert terms["loss_nce_idt"] == 0


@pytest.mark.numeric
def test_flip_equivariance_flips_input_and_features_back(monkeypatch):
    torch.manual_seed(0)
    model = tiny_module(objective={"num_patches": 16, "nce_idt": False, "flip_equivariance": True,
                                   "lambda_nce": 10.0})
    a, b = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    monkeypatch.setattr(torch, "rand", lambda *s, **k: torch.zeros(()))  # always flip
    out = model.objective.translate(model.generator, a, b)
    assert out.flipped
    assert_scaled_close(out.fake_b, model.generator(a.flip(3)), K_NETWORK)
    keys = model.generator.encode(a, model.objective.nce_layers)  # keys are the unflipped source's features
    for k, ref in zip(out.keys, keys):
        assert_scaled_close(k, ref, K_NETWORK)
    model.objective.eval()
    assert not model.objective.translate(model.generator, a, b).flipped  # no augmentation outside training


def test_lr_schedule_constant_then_linear_decay():
    # the reference's rule: n_epochs at full lr, then n_epochs_decay epochs at d/(d+1), ..., 1/(d+1)
    factors = [linear_decay(e, 3, 4) for e in range(8)]
    assert factors == pytest.approx([1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2, 0.0])


def test_lr_is_stepped_per_epoch_in_training(tmp_path):
    model = tiny_module(n_epochs=1, n_epochs_decay=2)
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=1, limit_val_batches=0)
    lrs = []

    import pytorch_lightning as pl

    class LR(pl.Callback):
        def on_train_epoch_start(self, trainer, module):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer.callbacks.append(LR())
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    assert lrs == pytest.approx([2e-4, 2e-4 * 2 / 3, 2e-4 * 1 / 3])
    assert all(opt.defaults["fused"] for opt in trainer.optimizers)  # fused Adam on CPU too (``fused: null``)


def test_apply_warmup_scales_the_schedule_over_the_first_iterations():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.Adam(params, lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: linear_decay(e, 1, 2))  # 1, 2/3, 1/3 per epoch
    rates = []
    for step in range(6):  # 2 iterations per epoch, warm-up over 3: across the first epoch end
        apply_warmup([opt], [sched], step, 3)
        rates.append(opt.param_groups[0]["lr"])
        if step % 2 == 1:
            sched.step()
    assert rates == pytest.approx([1 / 3, 2 / 3, 2 / 3, 2 / 3, 1 / 3, 1 / 3])
    opt.param_groups[0]["lr"] = 0.5
    apply_warmup([opt], [sched], 0, 0)  # 0: off
    assert opt.param_groups[0]["lr"] == 0.5


def test_warmup_iters_in_training_and_checked(tmp_path):
    model = tiny_module(n_epochs=2, n_epochs_decay=1, warmup_iters=3)
    trainer = tiny_trainer(tmp_path, max_epochs=3, limit_train_batches=2, limit_val_batches=0)
    lrs = []

    import pytorch_lightning as pl

    class LR(pl.Callback):
        def on_train_batch_end(self, trainer, module, *args):
            lrs.append([opt.param_groups[0]["lr"] for opt in trainer.optimizers])

    trainer.callbacks.append(LR())
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    expected = [2e-4 * f for f in (1 / 3, 2 / 3, 1, 1, 0.5, 0.5)]  # warm-up, then constant, then the decay epoch
    assert [g for g, _ in lrs] == pytest.approx(expected) and [d for _, d in lrs] == pytest.approx(expected)
    with pytest.raises(ConfigValueError, match="warmup_iters"):
        tiny_module(warmup_iters=-1)


def test_checkpoint_resume_continues_with_identical_optimizer_state(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    torch.manual_seed(0)
    dm = tiny_data(tmp_path)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0,
                           enable_checkpointing=True, callbacks=[ckpt_cb])
    model = tiny_module(n_epochs=1, n_epochs_decay=1)
    trainer.fit(model, datamodule=dm)
    last = tmp_path / "ckpt" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == 6  # 2 optimizer steps per CUT iteration

    resumed = tiny_module(n_epochs=1, n_epochs_decay=1)
    states = {}

    import pytorch_lightning as pl

    class Grab(pl.Callback):
        def on_train_start(self, trainer, module):
            states["step"] = trainer.global_step
            states["epoch"] = trainer.current_epoch
            states["opt"] = [copy.deepcopy(o.state_dict()) for o in trainer.optimizers]
            states["sched"] = [s.scheduler.state_dict() for s in trainer.lr_scheduler_configs]
            states["params"] = snapshot(module)

    t2 = tiny_trainer(tmp_path, max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[Grab()])
    t2.fit(resumed, datamodule=dm, ckpt_path=str(last))
    assert states["step"] == 6 and states["epoch"] == 1
    for got, ref in zip(states["opt"], saved["optimizer_states"]):
        for pid, st in ref["state"].items():
            torch.testing.assert_close(got["state"][pid]["exp_avg"], st["exp_avg"], rtol=0, atol=0)
            torch.testing.assert_close(got["state"][pid]["exp_avg_sq"], st["exp_avg_sq"], rtol=0, atol=0)
            assert float(got["state"][pid]["step"]) == float(st["step"]) == 3
    assert states["sched"][0]["last_epoch"] == 1
    for k, v in saved["state_dict"].items():
        if k in states["params"]:
            torch.testing.assert_close(states["params"][k], v, rtol=0, atol=0)
    assert t2.global_step == 12


def test_load_from_checkpoint_without_arguments_and_translate(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from cutlight import CUTModule, load_generator

    torch.manual_seed(0)
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0, enable_checkpointing=True,
                           callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    model = tiny_module()
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    path = tmp_path / "ckpt" / "last.ckpt"
    loaded = CUTModule.load_from_checkpoint(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    model.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)  # same weights, same computation
        gen = load_generator(path)
        y = gen(x)
    torch.testing.assert_close(y, model(x), rtol=0, atol=0)
    assert y.shape == (1, 3, 32, 32) and y.abs().max() <= 1


def test_user_generator_by_target_trains_and_reloads_without_arguments(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from cutlight import CUTModule
    from helpers import PlainGenerator

    torch.manual_seed(0)
    model = tiny_module(generator={"_target_": "helpers.PlainGenerator", "width": 6},
                        objective={"nce_layers": [0, 1], "num_patches": 8}, val_metrics=False)
    assert isinstance(model.generator, PlainGenerator) and model.sampler.in_channels == [6, 6]
    trainer = tiny_trainer(tmp_path, max_steps=2, limit_val_batches=0, enable_checkpointing=True,
                           callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)])
    before = snapshot(model)
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    assert any(not torch.equal(before[k], v) for k, v in snapshot(model).items() if k.startswith("generator."))
    loaded = CUTModule.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    assert isinstance(loaded.generator, PlainGenerator) and loaded.generator.convs[0].out_channels == 6
    x = torch.rand(1, 3, 10, 14) * 2 - 1  # size_multiple 1: any size
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_generator_instance_is_not_saved_and_is_passed_again(tmp_path):
    from cutlight import CUTModule
    from helpers import PlainGenerator

    model = tiny_module(generator=PlainGenerator(width=4), objective={"nce_layers": [0, 2], "num_patches": 8},
                        val_metrics=False)
    assert "generator" not in model.hparams and model.sampler.in_channels == [4, 3]
    path = tmp_path / "m.ckpt"
    tiny_trainer(tmp_path, max_steps=1, limit_val_batches=0).fit(model, datamodule=tiny_data(tmp_path))
    model.trainer.save_checkpoint(path)
    loaded = CUTModule.load_from_checkpoint(path, generator=PlainGenerator(width=4))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)
    # without it (issue 27.9): was a raw "Missing key(s) in state_dict", now says what to pass
    from cutlight.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"trained with generator passed as an nn.Module instance, which "
                       r"checkpoints do not store: pass generator=<the same generator> again, e\.g\. "
                       r"CUTModule\.load_from_checkpoint\(path, generator=MyNet\(\.\.\.\)\)"):
        CUTModule.load_from_checkpoint(path)


def test_bad_network_specs_name_the_network():
    with pytest.raises(TypeError, match="cannot build generator cutlight.networks.generator.ResnetGenerator"):
        tiny_module(generator={"ngf": 8, "n_blocks": 1, "bogus": 1})
    with pytest.raises(ImportError, match="cannot import 'cutlight.networks.NowhereGen'"):
        tiny_module(generator={"_target_": "cutlight.networks.NowhereGen"})
    with pytest.raises(ValueError, match="refusing to import _target_ 'nowhere.Gen': it is not in cutlight's allowlist"):
        tiny_module(generator={"_target_": "nowhere.Gen"})


def test_missing_inception_weights_warn_once_and_validation_runs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there; nothing may be downloaded
    model = tiny_module(val_metrics=True)
    with caplog.at_level("WARNING"):
        tiny_trainer(tmp_path, max_steps=1, limit_val_batches=1).fit(model, datamodule=tiny_data(tmp_path))
    assert model.evaluator is None
    warnings = [r.getMessage() for r in caplog.records if "validation without FID/KID" in r.getMessage()]
    assert len(warnings) == 1 and "make fid-weights" in warnings[0]
