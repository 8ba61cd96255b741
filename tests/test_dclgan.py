"""DCLGAN: the authors' state dicts load strictly, one iteration equals the paper's step written out below (float64),
and the method trains through the module and the Hydra entrypoint with its one config."""

import copy

import pytest
import torch
from torch import nn

from cutlight import TranslationModule, load_generator
from cutlight.checkpoint import checkpoint_roles
from cutlight.inference import load_sampler
from cutlight.objectives import DCLGANObjective
from helpers import TINY_DATA, run_entrypoint
from reference.cut_reference import RefDiscriminator, RefGenerator, RefSampler, ref_patch_nce

DCLGAN = {"_target_": "cutlight.objectives.DCLGANObjective"}


@pytest.fixture
def fp64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------- the authors' layout
def authors_generator_layout() -> dict[str, tuple]:
    """netG_A / netG_B: the reference ResNet generator (9 blocks, ngf 64, antialiased): 52 entries."""
    layout = {"model.1.weight": (64, 3, 7, 7), "model.1.bias": (64,), "model.4.weight": (128, 64, 3, 3),
              "model.4.bias": (128,), "model.7.filt": (128, 1, 3, 3), "model.8.weight": (256, 128, 3, 3),
              "model.8.bias": (256,), "model.11.filt": (256, 1, 3, 3)}
    for i in range(12, 21):
        for conv in (1, 5):
            layout[f"model.{i}.conv_block.{conv}.weight"] = (256, 256, 3, 3)
            layout[f"model.{i}.conv_block.{conv}.bias"] = (256,)
    layout.update({"model.21.filt": (256, 1, 4, 4), "model.22.weight": (128, 256, 3, 3), "model.22.bias": (128,),
                   "model.25.filt": (128, 1, 4, 4), "model.26.weight": (64, 128, 3, 3), "model.26.bias": (64,),
                   "model.30.weight": (3, 64, 7, 7), "model.30.bias": (3,)})
    return layout


def authors_discriminator_layout() -> dict[str, tuple]:
    """netD_A / netD_B: the 70x70 antialiased PatchGAN (ndf 64): 13 entries."""
    return {"model.0.weight": (64, 3, 4, 4), "model.0.bias": (64,), "model.2.filt": (64, 1, 3, 3),
            "model.3.weight": (128, 64, 4, 4), "model.3.bias": (128,), "model.6.filt": (128, 1, 3, 3),
            "model.7.weight": (256, 128, 4, 4), "model.7.bias": (256,), "model.10.filt": (256, 1, 3, 3),
            "model.11.weight": (512, 256, 4, 4), "model.11.bias": (512,), "model.14.weight": (1, 512, 4, 4),
            "model.14.bias": (1,)}


def authors_head_layout() -> dict[str, tuple]:
    """netF1 / netF2: MLP heads (width 256) on nce_layers 4, 8, 12, 16 (C = 128, 256, 256, 256): 16 entries."""
    layout = {}
    for i, c in enumerate((128, 256, 256, 256)):
        layout.update({f"mlp_{i}.0.weight": (256, c), f"mlp_{i}.0.bias": (256,), f"mlp_{i}.2.weight": (256, 256),
                       f"mlp_{i}.2.bias": (256,)})
    return layout


def test_the_authors_state_dicts_load_strictly():
    torch.manual_seed(0)
    module = TranslationModule(objective=DCLGAN, val_metrics=False)  # the defaults: the authors' networks
    assert module.role_names == ("gen_a", "gen_b", "disc_a", "disc_b", "head_a", "head_b")
    theirs = {"netG_A": authors_generator_layout(), "netG_B": authors_generator_layout(),
              "netD_A": authors_discriminator_layout(), "netD_B": authors_discriminator_layout(),
              "netF1": authors_head_layout(), "netF2": authors_head_layout()}
    ours = {"netG_A": "gen_a", "netG_B": "gen_b", "netD_A": "disc_a", "netD_B": "disc_b", "netF1": "head_a",
            "netF2": "head_b"}
    assert [len(v) for v in theirs.values()] == [52, 52, 13, 13, 16, 16]
    for name, layout in theirs.items():
        state = {k: torch.randn(shape) for k, shape in layout.items()}
        net = getattr(module, ours[name])
        net.load_state_dict(state, strict=True)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    # the heads project the features of their own generator: netF1 gets G_A's, netF2 G_B's
    assert module.head_a.in_channels == module.gen_a.feature_channels([4, 8, 12, 16]) == [128, 256, 256, 256]


# ----------------------------------------------------------------------------- one step from the paper
def paper_step(nets: dict, opts: dict, real_a, real_b, obj: DCLGANObjective) -> dict:
    """One DCLGAN iteration written from the paper (section 3 and Eq. 6), on the reference networks:

    L_GAN(G, D) = E[(D(y) - 1)^2] / 2 + E[D(G(x))^2] / 2 for D, E[(D(G(x)) - 1)^2] for G (LSGAN);
    L_PatchNCE with dual encoders: the translation G_A(x) is encoded by G_B's encoder and projected by H_B (queries),
    the source x by G_A's encoder and H_A (keys), and vice versa; L_idt = ||G_A(y) - y||_1 + ||G_B(x) - x||_1;
    L = lambda_GAN (L_GAN_A + L_GAN_B) / 2 + lambda_NCE (L_NCE1 + L_NCE2) / 2 + lambda_IDT (L_idt_A + L_idt_B) / 2.
    D is updated first, then G and the heads.
    """
    G_A, G_B, D_A, D_B, H_A, H_B = (nets[k] for k in ("gen_a", "gen_b", "disc_a", "disc_b", "head_a", "head_b"))
    fake_b, fake_a, idt_a, idt_b = G_A(real_a), G_B(real_b), G_A(real_b), G_B(real_a)

    def d_loss(D, real, fake):
        return 0.5 * ((D(real) - 1) ** 2).mean() + 0.5 * (D(fake.detach()) ** 2).mean()

    opts["discriminator"].zero_grad()
    loss_d_a, loss_d_b = d_loss(D_A, real_b, fake_b), d_loss(D_B, real_a, fake_a)
    (loss_d_a + loss_d_b).backward()
    opts["discriminator"].step()

    for p in [*D_A.parameters(), *D_B.parameters()]:
        p.requires_grad_(False)
    layers, s, tau = obj.nce_layers, obj.num_patches, obj.nce_temperature

    def nce(enc_q, head_q, enc_k, head_k, fake, real):
        feat_k, ids = head_k(enc_k(real, layers, encode_only=True), s)
        feat_q, _ = head_q(enc_q(fake, layers, encode_only=True), s, ids)
        total = sum(ref_patch_nce(q, k, real.shape[0], tau, all_negatives=True).mean() for q, k in zip(feat_q, feat_k))
        return total / len(layers)

    g_a, g_b = ((D_A(fake_b) - 1) ** 2).mean(), ((D_B(fake_a) - 1) ** 2).mean()
    nce1 = nce(G_B, H_B, G_A, H_A, fake_b, real_a)
    nce2 = nce(G_A, H_A, G_B, H_B, fake_a, real_b)
    idt_a_l1, idt_b_l1 = (idt_a - real_b).abs().mean(), (idt_b - real_a).abs().mean()
    loss_g = (obj.lambda_gan * (g_a + g_b) / 2 + obj.lambda_nce * (nce1 + nce2) / 2
              + obj.lambda_idt * (idt_a_l1 + idt_b_l1) / 2)
    opts["generator"].zero_grad()
    opts["heads"].zero_grad()
    loss_g.backward()
    opts["generator"].step()
    opts["heads"].step()
    for p in [*D_A.parameters(), *D_B.parameters()]:
        p.requires_grad_(True)
    values = {"loss_d_a": loss_d_a, "loss_d_b": loss_d_b, "loss_d": loss_d_a + loss_d_b, "loss_g": loss_g,
              "loss_g_a": g_a * obj.lambda_gan, "loss_g_b": g_b * obj.lambda_gan, "loss_nce1": nce1 * obj.lambda_nce,
              "loss_nce2": nce2 * obj.lambda_nce, "loss_idt_a": idt_a_l1 * obj.lambda_idt,
              "loss_idt_b": idt_b_l1 * obj.lambda_idt}
    return {k: v.detach() for k, v in values.items()}


def null_space_biases(net, nce_layers=()) -> set[str]:
    """Biases of convolutions followed by an instance norm (and whose output is no NCE feature): the norm removes
    them, so their exact gradient is 0."""
    names = {f"model.{i}.bias" for i in nce_layers}  # taken out again at the end
    feature_biases = set(names)
    for prefix, seq in net.named_modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.InstanceNorm2d):
                    names.add(f"{prefix}.{i}.bias")
    return names - feature_biases


def optimizers_for(nets: dict, obj: DCLGANObjective) -> dict:
    adam = {"lr": 2e-4, "betas": (0.5, 0.999)}
    return {"generator": torch.optim.Adam([*nets["gen_a"].parameters(), *nets["gen_b"].parameters()], **adam),
            "discriminator": torch.optim.Adam([*nets["disc_a"].parameters(), *nets["disc_b"].parameters()], **adam),
            "heads": torch.optim.Adam([*nets["head_a"].parameters(), *nets["head_b"].parameters()],
                                      **obj.heads_optimizer)}


@pytest.mark.parametrize("batch", [1, 2])
def test_one_iteration_equals_the_paper_step_fp64(batch, fp64):
    torch.manual_seed(0)
    # 5 blocks: the smallest generator whose layer 16 (the last NCE layer) is a residual block's output
    module = TranslationModule(generator={"ngf": 4, "n_blocks": 5}, discriminator={"ndf": 4, "n_layers": 2},
                               sampler={"mlp_dim": 64}, objective={**DCLGAN, "num_patches": 16}, val_metrics=False)
    obj, ours = module.objective, module.nets
    with torch.no_grad():  # non-zero biases: no all-zero head output row (the reference's L2 norm has NaN gradients)
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    assert obj.heads_optimizer == {"lr": 1e-3, "betas": (0.9, 0.999)}  # PyTorch's Adam defaults, as the authors'
    assert next(ours["gen_a"].parameters()).dtype == torch.float64
    refs = {"gen_a": RefGenerator, "gen_b": RefGenerator, "disc_a": RefDiscriminator, "disc_b": RefDiscriminator,
            "head_a": RefSampler, "head_b": RefSampler}
    theirs = {role: cls(copy.deepcopy(ours[role].state_dict())).double() for role, cls in refs.items()}
    ours_opt, their_opt = optimizers_for(ours, obj), optimizers_for(theirs, obj)
    for it in range(2):
        real_a, real_b = torch.rand(batch, 3, 24, 24) * 2 - 1, torch.rand(batch, 3, 24, 24) * 2 - 1
        torch.manual_seed(100 + it)  # the same patch positions for both
        got = obj.iteration(ours, {"A": real_a, "B": real_b}, ours_opt)
        torch.manual_seed(100 + it)
        want = paper_step(theirs, their_opt, real_a, real_b, obj)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-10, rtol=1e-10, msg=f"{name}, iteration {it}")
        for role in ours:
            mine, ref, null = ours[role].state_dict(), theirs[role].state_dict(), null_space_biases(ours[role], obj.nce_layers)
            grads = dict(ours[role].named_parameters()), dict(theirs[role].named_parameters())
            for key in ref:
                if key in null:  # exact gradient 0, computed ~1e-12 on both sides: Adam (eps 1e-8) steps ~1e-8
                    assert max(float(g[key].grad.abs().max()) for g in grads) < 1e-10, f"{role}.{key}"
                    torch.testing.assert_close(mine[key], ref[key], atol=1e-6, rtol=0, msg=lambda m, role=role, key=key, it=it: f"{role}.{key}, it {it}: {m}")
                    continue
                torch.testing.assert_close(mine[key], ref[key], atol=1e-10, rtol=1e-10, msg=lambda m, role=role, key=key, it=it: f"{role}.{key}, it {it}: {m}")


def test_gradients_and_settings():
    torch.manual_seed(0)
    obj = DCLGANObjective(num_patches=8)
    with pytest.raises(ValueError, match="nce_idt=true needs equal channel counts"):
        TranslationModule(generator={"ngf": 4, "n_blocks": 9, "input_nc": 1}, objective=DCLGAN)
    one_to_three = TranslationModule(generator={"ngf": 4, "n_blocks": 9, "input_nc": 1},
                                     objective={**DCLGAN, "nce_idt": False, "num_patches": 8}, val_metrics=False)
    assert (one_to_three.gen_b.output_nc, one_to_three.disc_b.input_nc, one_to_three.disc_a.input_nc) == (1, 1, 3)
    optimizers, _ = one_to_three.configure_optimizers()
    losses = one_to_three.objective.iteration(one_to_three.nets, {"A": torch.rand(1, 1, 32, 32),
                                                                  "B": torch.rand(1, 3, 32, 32)},
                                              dict(zip(("generator", "discriminator", "heads"), optimizers)))
    assert losses["loss_idt_a"] == 0 and torch.isfinite(losses["loss_g"])
    assert obj.translators() == {"AtoB": "gen_a", "BtoA": "gen_b"}
    assert DCLGANObjective(heads_optimizer=None).optimizers()["heads"].settings == {}
    with pytest.raises(ValueError, match="negatives"):
        DCLGANObjective(negatives="all")


@pytest.mark.slow
def test_dclgan_trains_through_the_entrypoint(tmp_path):
    res = run_entrypoint([*TINY_DATA, "objective=dclgan", "model.objective.num_patches=16",
                          "model.sampler.mlp_dim=16", "model.objective.nce_layers=[4,8,12]",
                          "model.generator.n_blocks=2", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    saved = checkpoint_roles(ckpt)  # what the checkpoint says about its networks
    assert saved["translators"] == {"AtoB": "gen_a", "BtoA": "gen_b"}
    assert saved["heads"] == {"head_a": "gen_a", "head_b": "gen_b"} and saved["nce_layers"] == [4, 8, 12]
    assert saved["configs"]["gen_b"]["input_nc"] == 3 and saved["configs"]["head_a"]["in_channels"][0] == 16
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"  # inference, export and analysis load by role
    module = TranslationModule.load_from_checkpoint(path)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        for direction, role in (("AtoB", "gen_a"), ("BtoA", "gen_b")):
            torch.testing.assert_close(load_generator(path, direction=direction)(x), getattr(module, role).eval()(x))
    for direction, head in (("AtoB", module.head_a), ("BtoA", module.head_b)):
        sampler, layers = load_sampler(path, load_generator(path, direction=direction), direction)
        assert layers == [4, 8, 12] and all(torch.equal(a, b) for a, b in zip(sampler.state_dict().values(),
                                                                             head.state_dict().values()))
    with pytest.raises(ValueError, match="holds two generators"):
        load_generator(path)
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"gen_a", "gen_b", "disc_a", "disc_b", "head_a",
                                                             "head_b", "objective"}  # objective: its image pools
