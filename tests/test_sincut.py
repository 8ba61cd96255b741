"""SinCUT's losses: the R1 penalty (formula, double backward, precision) and one SinCUT iteration against a
straightforward step written here (fp64: losses, gradients and updated parameters)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from cutlight.losses import r1_penalty
from cutlight.networks import PatchDiscriminator, PatchSampler, StyleGAN2Discriminator, StyleGAN2Generator
from cutlight.objectives import CUTObjective, SinCUTObjective
from helpers import K_NETWORK, assert_scaled_close

ADAM = {"lr": 0.002, "betas": (0.0, 0.99)}  # the reference's SinCUT optimiser


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def fp64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def tiny_d(size=16):
    return StyleGAN2Discriminator(ndf=1, size=size)


def explicit_r1(D, real, gamma):
    x = real.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    return gamma / 2 * sum(g.pow(2).sum() for g in grad) / real.shape[0]  # mean over images of ||grad_i||^2


def test_r1_matches_its_formula(fp64):
    torch.manual_seed(0)
    D, real = tiny_d(), torch.randn(3, 3, 16, 16)
    penalty, pred = r1_penalty(D, real, gamma=2.5)
    torch.testing.assert_close(penalty, explicit_r1(D, real, 2.5), rtol=1e-12, atol=0)
    torch.testing.assert_close(pred, D(real))
    params = list(D.parameters())  # the last bias does not enter the input gradient: no gradient (None)
    g_ours = torch.autograd.grad(penalty, params, allow_unused=True, materialize_grads=True)
    g_want = torch.autograd.grad(explicit_r1(D, real, 2.5), params, allow_unused=True, materialize_grads=True)
    assert g_ours[-1].abs().max() == 0 and g_ours[0].abs().max() > 0
    for a, b in zip(g_ours, g_want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_r1_gradient_wrt_discriminator_parameters_by_finite_differences(fp64):
    """Double backward: the penalty's gradient w.r.t. D's weights (through the input gradient) against central
    finite differences (gradcheck) on a few of D's parameter tensors."""
    torch.manual_seed(0)
    D, real = tiny_d(size=8), torch.randn(2, 3, 8, 8)
    # Weights at both ends of D (the first one's R1 gradient runs through the whole double-backward chain). Biases
    # enter the input gradient only through the leaky ReLUs' activation pattern: their R1 gradient is 0 a.e.
    checked = ["convs.0.0.weight", "final_linear.1.weight"]
    params = dict(D.named_parameters())
    fixed = {k: v.detach() for k, v in params.items() if k not in checked}

    def penalty(*values):
        state = {**fixed, **dict(zip(checked, values))}
        x = real.clone().requires_grad_()
        (grad,) = torch.autograd.grad(functional_call(D, state, (x,)).sum(), x, create_graph=True)
        return grad.pow(2).flatten(1).sum(1).mean() / 2

    values = tuple(params[n].detach().clone().requires_grad_() for n in checked)
    assert sum(v.numel() for v in values) == 96 + 64
    assert torch.autograd.gradcheck(penalty, values, eps=1e-6, atol=1e-7, rtol=1e-5)
    # and r1_penalty's parameter gradients are these analytic ones
    ours = torch.autograd.grad(r1_penalty(D, real)[0], [params[n] for n in checked])
    theirs = torch.autograd.grad(penalty(*values), values)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-14)


def test_r1_is_fp32_under_bf16_autocast_and_plain_under_no_grad():
    torch.manual_seed(0)
    D, real = tiny_d(), torch.randn(2, 3, 16, 16)
    want, pred_want = r1_penalty(D, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, pred = r1_penalty(D, real.bfloat16())  # a bf16 batch is upcast too
        assert D(real).dtype == torch.bfloat16  # (autocast is on around the call)
    assert got.dtype == pred.dtype == torch.float32 and got.requires_grad
    # only the input's bf16 rounding differs: a relative change of about one bf16 eps (2**-8 = 3.9e-3)
    torch.testing.assert_close(got, want, rtol=4 * torch.finfo(torch.bfloat16).eps, atol=0)
    got32, _ = r1_penalty(D, real)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got_fp32_input, _ = r1_penalty(D, real)
    assert_scaled_close(got_fp32_input, got32, K_NETWORK)  # both computed in fp32: round-off only
    with torch.no_grad():
        value, pred_ng = r1_penalty(D, real)
    assert not value.requires_grad and not pred_ng.requires_grad
    assert_scaled_close(value, want.detach(), K_NETWORK)


def test_r1_works_with_a_patch_discriminator():
    torch.manual_seed(0)
    D, real = PatchDiscriminator(ndf=4, n_layers=2), torch.randn(2, 3, 32, 32)
    penalty, pred = r1_penalty(D, real)
    assert pred.shape[1:] == (1, 6, 6)
    assert_scaled_close(penalty, explicit_r1(D, real, 1.0), K_NETWORK)  # fp32, two double-backward orders


def test_defaults_are_the_reference_sincut_settings():
    obj = SinCUTObjective()
    assert isinstance(obj, CUTObjective)
    assert (obj.lambda_gan, obj.lambda_nce, obj.nce_idt, obj.nce_layers, obj.num_patches, obj.negatives,
            obj.gan_mode, obj.flip_equivariance, obj.lambda_r1, obj.lambda_identity, obj.nce_temperature) == (
        1.0, 4.0, True, [0, 2, 4], 1, "batch", "nonsaturating", False, 1.0, 1.0, 0.07)
    with pytest.raises(ValueError, match="lambda_r1"):
        SinCUTObjective(lambda_r1=-1)
    heads = PatchSampler(StyleGAN2Generator().feature_channels(obj.nce_layers))  # the reference's netF, width 256
    assert heads.in_channels == [3, 160, 160] and sum(p.numel() for p in heads.parameters()) == 280_832


def straightforward_step(obj, G, D, H, opt_g, opt_d, real_a, real_b):
    """SinCUT's iteration as the reference computes it: G on cat(a, b); D step with separate calls on fakes and
    reals, the non-saturating loss, and R1 from the input gradient of D(real_b); G step with the updated D,
    PatchNCE with external negatives (each query against the keys of every image of its batch, positive on the
    diagonal), the identity NCE averaged in, and L1 identity.

    RNG order (noise draws, patch positions) follows the paper's order; with ``nce_idt`` off, G(real_b) for the
    identity term runs after the PatchNCE draws, as in the objective.
    """
    b = real_a.shape[0]
    fake = G(torch.cat([real_a, real_b]) if obj.nce_idt else real_a)
    fake_b, idt_b = fake[:b], (fake[b:] if obj.nce_idt else None)

    D.requires_grad_(True)
    x = real_b.detach().clone().requires_grad_()
    pred_real, pred_fake = D(x), D(fake_b.detach())
    loss_gan_d = 0.5 * (F.softplus(-pred_real).mean() + F.softplus(pred_fake).mean())
    (grad,) = torch.autograd.grad(pred_real.sum(), x, create_graph=True)
    loss_r1 = obj.lambda_r1 / 2 * grad.pow(2).sum(dim=(1, 2, 3)).mean()
    loss_d = loss_gan_d + loss_r1
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()

    D.requires_grad_(False)
    loss_gan = F.softplus(-D(fake_b)).mean() * obj.lambda_gan

    def nce(src, tgt):
        k_pool, ids = H(G.encode(src, obj.nce_layers), obj.num_patches)
        q_pool, _ = H(G.encode(tgt, obj.nce_layers), patch_ids=ids)
        per_layer = []
        for q, k in zip(q_pool, k_pool):
            q, k = q.flatten(0, 1), k.flatten(0, 1).detach()  # (B * S, D): every patch of the batch
            logits = q @ k.T / obj.nce_temperature  # (B*S, B*S), positives on the diagonal
            per_layer.append(F.cross_entropy(logits, torch.arange(len(q))) * obj.lambda_nce)
        return sum(per_layer) / len(per_layer)

    loss_nce = nce(real_a, fake_b)
    loss_nce_idt = nce(real_b, idt_b) if obj.nce_idt else torch.zeros(())
    if idt_b is None:
        idt_b = G(real_b)
    loss_idt = (idt_b - real_b).abs().mean() * obj.lambda_identity
    loss_g = loss_gan + (0.5 * (loss_nce + loss_nce_idt) if obj.nce_idt else loss_nce) + loss_idt
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    out = {"loss_d": loss_d, "loss_r1": loss_r1, "loss_g": loss_g, "loss_g_gan": loss_gan, "loss_nce": loss_nce,
           "loss_nce_idt": loss_nce_idt, "loss_idt": loss_idt}
    return {k: v.detach() for k, v in out.items()}


CASES = {"sincut": {}, "no_nce_idt": {"nce_idt": False}, "no_r1": {"lambda_r1": 0.0},
         "weights": {"lambda_r1": 10.0, "lambda_identity": 0.5, "lambda_nce": 2.0}}


@pytest.mark.parametrize("case", list(CASES))
def test_iteration_equals_straightforward_step_fp64(case, fp64):
    torch.manual_seed(0)
    obj = SinCUTObjective(**CASES[case])
    G = StyleGAN2Generator(ngf=1, n_blocks=2, crop_size=32)
    D = StyleGAN2Discriminator(ndf=1, size=16)
    H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=16)
    G.decoder.convs[1].noise.weight.data.fill_(0.3)  # the noise matters: both sides must draw the same
    nets = (G, D, H)
    plain = [copy.deepcopy(m) for m in nets]
    opt = lambda *ms: torch.optim.Adam([p for m in ms for p in m.parameters()], **ADAM)  # noqa: E731
    ours, theirs = (opt(G, H), opt(D)), (opt(plain[0], plain[2]), opt(plain[1]))
    for it in range(2):
        real_a, real_b = torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
        torch.manual_seed(100 + it)
        got = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                            dict(zip(("generator", "discriminator"), ours)))
        torch.manual_seed(100 + it)
        want = straightforward_step(obj, *plain, *theirs, real_a, real_b)
        assert got.keys() == want.keys()
        for k in got:
            torch.testing.assert_close(got[k], want[k], rtol=1e-10, atol=1e-12, msg=lambda m, k=k: f"{k}: {m}")
        assert got["loss_r1"] > 0 if obj.lambda_r1 else got["loss_r1"] == 0
        for name, mine, other in zip("GDH", nets, plain):
            theirs_p = dict(other.named_parameters())
            for pname, p in mine.named_parameters():
                q = theirs_p[pname]
                torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=lambda m, n=f"{name}.{pname}": f"{n}: {m}")
                if p.grad is not None and p.grad.abs().max() > 0:  # fp64: gradients agree tightly as well
                    scale = p.grad.abs().max().item()
                    torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-7 * scale)
    assert not torch.equal(G.decoder.convs[1].noise.weight, torch.full((1,), 0.3))  # the noise strength trains


def test_loss_r1_is_reported_without_a_discriminator_step():
    torch.manual_seed(0)
    obj = SinCUTObjective(lambda_gan=0.0)
    G, D = StyleGAN2Generator(ngf=1, n_blocks=2, crop_size=32), StyleGAN2Discriminator(ndf=1, size=16)
    H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=16)
    before = copy.deepcopy(D.state_dict())
    out = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": torch.randn(2, 3, 16, 16), "B": torch.randn(2, 3, 16, 16)},
                        {"generator": torch.optim.Adam([*G.parameters(), *H.parameters()], **ADAM),
                         "discriminator": torch.optim.Adam(D.parameters(), **ADAM)})
    assert out["loss_r1"] == 0 and out["loss_d"] == 0 and out["loss_idt"] > 0
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in before.items())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sincut_iteration_on_cuda_with_bf16_autocast():
    """Reference sizes on the GPU (the reference implementation runs only there): one iteration, fp32 R1."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    obj = SinCUTObjective()
    G, D = StyleGAN2Generator().to(dev), StyleGAN2Discriminator().to(dev)
    H = PatchSampler(G.feature_channels(obj.nce_layers)).to(dev)
    opt_g = torch.optim.Adam([*G.parameters(), *H.parameters()], **ADAM)
    opt_d = torch.optim.Adam(D.parameters(), **ADAM)
    real_a, real_b = torch.rand(16, 3, 64, 64, device=dev) * 2 - 1, torch.rand(16, 3, 64, 64, device=dev) * 2 - 1
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                            {"generator": opt_g, "discriminator": opt_d})
        penalty, _ = r1_penalty(D, real_b)
    assert penalty.dtype == torch.float32
    assert all(torch.isfinite(v) for v in out.values()), out
    fp32 = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                         {"generator": opt_g, "discriminator": opt_d})
    assert all(torch.isfinite(v) for v in fp32.values()), fp32
