"""SimDCL: the authors' state dicts (DCLGAN's six networks and netF3..netF6) load strictly, one iteration equals the
step of the authors' simdcl_model.py written out below (float64), and it trains through its one config."""

import copy

import pytest
import torch
from torch import nn

from cutlight import TranslationModule
from cutlight.objectives import SimDCLObjective
from helpers import TINY_DATA, run_entrypoint
from reference.cut_reference import RefDiscriminator, RefGenerator, RefSampler, ref_patch_nce
from test_dclgan import (
    authors_discriminator_layout,
    authors_generator_layout,
    authors_head_layout,
    null_space_biases,
)

SIMDCL = {"_target_": "cutlight.objectives.SimDCLObjective"}
SIMS = ("sim_real_a", "sim_fake_b", "sim_real_b", "sim_fake_a")


@pytest.fixture
def fp64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def authors_mapping_layout(num_layers: int = 4) -> dict[str, tuple]:
    """netF3..netF6 (MappingF): conv(L -> 64, 3x3, stride 2), then Linear(64, 64) twice: 6 entries."""
    return {"model.0.weight": (64, num_layers, 3, 3), "model.0.bias": (64,), "model.4.weight": (64, 64),
            "model.4.bias": (64,), "model.6.weight": (64, 64), "model.6.bias": (64,)}


def test_the_authors_state_dicts_load_strictly():
    module = TranslationModule(objective=SIMDCL, val_metrics=False)
    theirs = {"gen_a": authors_generator_layout(), "gen_b": authors_generator_layout(),
              "disc_a": authors_discriminator_layout(), "disc_b": authors_discriminator_layout(),
              "head_a": authors_head_layout(), "head_b": authors_head_layout(),
              **{role: authors_mapping_layout() for role in SIMS}}  # netF3, netF4, netF5, netF6
    assert module.role_names == tuple(theirs)
    for role, layout in theirs.items():
        getattr(module, role).load_state_dict({k: torch.randn(s) for k, s in layout.items()}, strict=True)
    heads = list(module.objective.optimizers()["heads"].roles)
    assert heads == ["head_a", "head_b", *SIMS] and module.objective.optimizers()["heads"].settings == {}


class RefMapping(nn.Module):
    """The authors' MappingF on one image's stacked patches (1, L, S, D) -> (1, 64), L2-normalised."""

    def __init__(self, state: dict):
        super().__init__()
        dim, layers = state["model.0.weight"].shape[:2]
        self.model = nn.Sequential(nn.Conv2d(layers, dim, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.load_state_dict(state)

    def forward(self, x):
        x = self.model(x)
        return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7)


def code_step(nets: dict, opts: dict, real_a, real_b, obj: SimDCLObjective) -> dict:
    """One iteration as the authors' simdcl_model.py computes it (batch size 1, as that code requires), on the
    reference networks: D_A, D_B step; then G and all heads on
    0.5 (GAN_A + GAN_B) + 0.5 (NCE1 + NCE2) + 0.5 (L1(G_A(b), b) + L1(G_B(a), a)) + L_sim."""
    G_A, G_B, D_A, D_B, F1, F2 = (nets[k] for k in ("gen_a", "gen_b", "disc_a", "disc_b", "head_a", "head_b"))
    F3, F4, F5, F6 = (nets[k] for k in SIMS)
    fake_b, fake_a, idt_a, idt_b = G_A(real_a), G_B(real_b), G_A(real_b), G_B(real_a)

    def d_loss(D, real, fake):
        return 0.5 * ((D(real) - 1) ** 2).mean() + 0.5 * (D(fake.detach()) ** 2).mean()

    opts["discriminator"].zero_grad()
    loss_d_a, loss_d_b = d_loss(D_A, real_b, fake_b), d_loss(D_B, real_a, fake_a)
    (loss_d_a + loss_d_b).backward()
    opts["discriminator"].step()
    for p in [*D_A.parameters(), *D_B.parameters()]:
        p.requires_grad_(False)
    g_a, g_b = ((D_A(fake_b) - 1) ** 2).mean(), ((D_B(fake_a) - 1) ** 2).mean()
    idt_a_l1, idt_b_l1 = (idt_a - real_b).abs().mean(), (idt_b - real_a).abs().mean()
    layers, m, tau = obj.nce_layers, obj.num_patches, obj.nce_temperature
    feat_q1, feat_k1 = G_B(fake_b, layers, encode_only=True), G_A(real_a, layers, encode_only=True)
    feat_q2, feat_k2 = G_A(fake_a, layers, encode_only=True), G_B(real_b, layers, encode_only=True)
    k_pool1, ids1 = F1(feat_k1, m, None)
    q_pool1, _ = F2(feat_q1, m, ids1)
    q_pool1_free, _ = F2(feat_q1, m, None)
    k_pool2, ids2 = F2(feat_k2, m, None)
    q_pool2, _ = F1(feat_q2, m, ids2)
    q_pool2_free, _ = F1(feat_q2, m, None)
    n = real_a.shape[0]
    nce1 = sum(ref_patch_nce(q, k, n, tau, True).mean() for q, k in zip(q_pool1, k_pool1)) / len(layers)
    nce2 = sum(ref_patch_nce(q, k, n, tau, True).mean() for q, k in zip(q_pool2, k_pool2)) / len(layers)

    def stacked(pool):  # per layer (S, D) rows of the one image -> (1, L, S, D)
        return torch.stack(list(pool))[None]

    sim = ((F3(stacked(k_pool1)) - F6(stacked(q_pool2_free))).abs().mean()
           + (F4(stacked(q_pool1_free)) - F5(stacked(k_pool2))).abs().mean())
    loss_g = 0.5 * (g_a + g_b) + 0.5 * (nce1 + nce2) + 0.5 * (idt_a_l1 + idt_b_l1) + sim
    opts["generator"].zero_grad()
    opts["heads"].zero_grad()
    loss_g.backward()
    opts["generator"].step()
    opts["heads"].step()
    for p in [*D_A.parameters(), *D_B.parameters()]:
        p.requires_grad_(True)
    values = {"loss_d_a": loss_d_a, "loss_d_b": loss_d_b, "loss_d": loss_d_a + loss_d_b, "loss_g": loss_g,
              "loss_g_a": g_a, "loss_g_b": g_b, "loss_nce1": nce1, "loss_nce2": nce2, "loss_idt_a": idt_a_l1,
              "loss_idt_b": idt_b_l1, "loss_sim": sim}
    return {k: v.detach() for k, v in values.items()}


def optimizers_for(nets: dict) -> dict:
    adam = {"lr": 2e-4, "betas": (0.5, 0.999)}  # SimDCL's heads: the generators' settings
    return {"generator": torch.optim.Adam([*nets["gen_a"].parameters(), *nets["gen_b"].parameters()], **adam),
            "discriminator": torch.optim.Adam([*nets["disc_a"].parameters(), *nets["disc_b"].parameters()], **adam),
            "heads": torch.optim.Adam([p for k in ("head_a", "head_b", *SIMS) for p in nets[k].parameters()],
                                      **adam)}


def test_one_iteration_equals_the_authors_step_fp64(fp64):
    torch.manual_seed(0)
    module = TranslationModule(generator={"ngf": 4, "n_blocks": 9}, discriminator={"ndf": 4, "n_layers": 2},
                               sampler={"mlp_dim": 64}, objective={**SIMDCL, "num_patches": 16}, val_metrics=False)
    obj, ours = module.objective, module.nets
    with torch.no_grad():  # non-zero biases: no all-zero head output row (the reference's L2 norm has NaN gradients)
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    refs = {"gen_a": RefGenerator, "gen_b": RefGenerator, "disc_a": RefDiscriminator, "disc_b": RefDiscriminator,
            "head_a": RefSampler, "head_b": RefSampler, **{k: RefMapping for k in SIMS}}
    theirs = {role: cls(copy.deepcopy(ours[role].state_dict())).double() for role, cls in refs.items()}
    ours_opt, their_opt = optimizers_for(ours), optimizers_for(theirs)
    for it in range(2):
        real_a, real_b = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
        torch.manual_seed(100 + it)
        got = obj.iteration(ours, {"A": real_a, "B": real_b}, ours_opt)
        torch.manual_seed(100 + it)
        want = code_step(theirs, their_opt, real_a, real_b, obj)
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-10, rtol=1e-10, msg=f"{name}, iteration {it}")
        for role in ours:
            mine, ref, null = ours[role].state_dict(), theirs[role].state_dict(), null_space_biases(ours[role],
                                                                                                   obj.nce_layers)
            for key in ref:
                tol = 1e-6 if key in null else 1e-10  # null-space biases: round-off gradients, see test_dclgan
                torch.testing.assert_close(mine[key], ref[key], atol=tol, rtol=1e-10, msg=f"{role}.{key}, it {it}")
        assert all(ours[k].model[0].weight.grad.abs().sum() > 0 for k in SIMS)  # the mappings train


def test_batches_of_several_images_and_clear_errors():
    torch.manual_seed(0)
    module = TranslationModule(generator={"ngf": 4, "n_blocks": 9}, discriminator={"ndf": 4, "n_layers": 2},
                               sampler={"mlp_dim": 16}, objective={**SIMDCL, "num_patches": 16}, val_metrics=False)
    optimizers, _ = module.configure_optimizers()
    names = list(module.objective.optimizers())
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    losses = module.objective.iteration(module.nets, batch, dict(zip(names, optimizers)))
    assert torch.isfinite(losses["loss_sim"]) and losses["loss_sim"] > 0
    big = TranslationModule(generator={"ngf": 4, "n_blocks": 9}, objective={**SIMDCL, "num_patches": 100},
                            val_metrics=False)  # at 32 px layers 4 and 8 have 16 x 16 positions, 12 and 16 8 x 8
    optimizers, _ = big.configure_optimizers()
    with pytest.raises(ValueError, match=r"offered \[100, 100, 64, 64\] positions"):
        big.objective.iteration(big.nets, batch, dict(zip(names, optimizers)))


@pytest.mark.slow
def test_simdcl_trains_through_the_entrypoint(tmp_path):
    res = run_entrypoint([*TINY_DATA, "objective=simdcl", "model.objective.num_patches=16", "model.sampler.mlp_dim=16",
                          "model.objective.nce_layers=[4,8,12]", "model.generator.n_blocks=2",
                          f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert {k.split(".")[0] for k in ckpt["state_dict"]} >= {"gen_a", "gen_b", *SIMS}
