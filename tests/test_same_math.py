"""Same math, less work: ``CUTObjective.iteration`` equals the straightforward CUT iteration.

Two straightforward versions run from identical weights, inputs and RNG state (hence identical patch positions):
``straightforward_step`` below, written from the paper's / reference pseudo-code on our modules, and
``reference.cut_reference.ReferenceStep`` (tests/reference/), the reference-style step with its own layer implementations.
Losses and parameter updates must agree to 1e-5 in fp32.

Exception: a conv bias feeding straight into an instance norm has an exact gradient of zero (the norm removes
it), so its fp32 gradient is round-off, which Adam (eps 1e-8) scales to a +-lr step of arbitrary sign. For
those biases we check that both gradients are round-off-sized and the parameters moved at most lr per step.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cutlight.losses import patch_nce_loss
from cutlight.networks import BlurDownsample, BlurUpsample, PatchDiscriminator, PatchSampler, ResnetGenerator
from cutlight.networks.layers import ChannelsLastConv2d, InstanceNorm
from cutlight.objectives import CUTObjective
from reference.cut_reference import RefDiscriminator, RefDownsample, ReferenceStep, RefGenerator, RefUpsample

ADAM = {"lr": 2e-4, "betas": (0.5, 0.999)}
SIZE, ITERS = 32, 3

pytestmark = pytest.mark.usefixtures("one_thread")


def gan_term(pred, real: bool, mode: str):
    """The GAN objectives written out: LSGAN (squared error), vanilla / non-saturating (-log sigmoid of the
    target side), hinge (discriminator side)."""
    if mode == "lsgan":
        return ((pred - (1.0 if real else 0.0)) ** 2).mean()
    if mode in ("vanilla", "nonsaturating"):
        return -F.logsigmoid(pred if real else -pred).mean()
    return torch.relu(1 - pred).mean() if real else torch.relu(1 + pred).mean()


def straightforward_step(obj, G, D, H, opt_g, opt_d, real_a, real_b):
    """The paper's iteration: G on cat(a, b); D step on (b, fake.detach()); G step with the updated D and
    PatchNCE on re-encoded sources (keys with a graph, then detached in the loss)."""
    b = real_a.shape[0]
    real = torch.cat([real_a, real_b]) if obj.nce_idt else real_a
    flipped = obj.flip_equivariance and bool(torch.rand(()) < 0.5)
    if flipped:
        real = real.flip(3)
    fake = G(real)
    fake_b, idt_b = fake[:b], fake[b:]

    D.requires_grad_(True)
    opt_d.zero_grad()
    pred_fake, pred_real = D(fake_b.detach()), D(real_b)
    loss_d = 0.5 * (gan_term(pred_fake, False, obj.gan_mode) + gan_term(pred_real, True, obj.gan_mode))
    loss_d.backward()
    opt_d.step()

    D.requires_grad_(False)
    opt_g.zero_grad()
    pred = D(fake_b)
    loss_gan = (-pred.mean() if obj.gan_mode == "hinge" else gan_term(pred, True, obj.gan_mode)) * obj.lambda_gan

    def nce(src, tgt):
        feat_q = G.encode(tgt, obj.nce_layers)
        if flipped:
            feat_q = [f.flip(3) for f in feat_q]
        feat_k = G.encode(src, obj.nce_layers)
        k_pool, ids = H(feat_k, obj.num_patches)
        q_pool, _ = H(feat_q, patch_ids=ids)
        per_layer = [patch_nce_loss(q, k.detach(), obj.nce_temperature, obj.negatives).mean() * obj.lambda_nce
                     for q, k in zip(q_pool, k_pool)]
        return sum(per_layer) / len(per_layer)

    loss_nce = nce(real_a, fake_b)
    loss_nce_idt = nce(real_b, idt_b) if obj.nce_idt else torch.zeros(())
    loss_g = loss_gan + (0.5 * (loss_nce + loss_nce_idt) if obj.nce_idt else loss_nce)
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    out = {"loss_d": loss_d, "loss_g": loss_g, "loss_g_gan": loss_gan, "loss_nce": loss_nce,
           "loss_nce_idt": loss_nce_idt}
    return {k: v.detach() for k, v in out.items()}


def null_space_biases(net: nn.Module, keep: set[str] = frozenset()) -> set[str]:
    """Names of conv biases directly followed by an InstanceNorm2d (found on the reference-style copies, whose
    layers are plain torch modules), except the conv layers named in ``keep`` (PatchNCE features)."""
    names = set()
    for prefix, seq in net.named_modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                name = f"{prefix}.{i}"
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.InstanceNorm2d) and name not in keep:
                    names.add(f"{name}.bias")
    return names


CASES = {
    "cut_b1": ({}, 1, None),
    "cut_b2": ({}, 2, None),
    "fastcut_flipped": ({"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}, 1, 0.25),
    "fastcut_unflipped": ({"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}, 1, 0.75),
    "external_negatives": ({"negatives": "batch"}, 2, None),
    # ResnetGenerator(num_downsampling=1) (here with 6 blocks: layers 8..13)
    "one_downsampling": ({"nce_layers": [0, 4, 8, 10, 12]}, 2, None),
}
GENERATOR_KW = {"one_downsampling": {"num_downsampling": 1}}


def close(a, b, where: str, **tol) -> None:
    torch.testing.assert_close(a, b, msg=lambda m: f"{where}: {m}", **tol)


def sync(src_nets, src_opts, dst_nets, dst_opts):
    """Give the destination networks and optimizers the source's weights and Adam state."""
    for src, dst in zip(src_nets, dst_nets):
        dst.load_state_dict(copy.deepcopy(src.state_dict()))
    for src, dst in zip(src_opts, dst_opts):
        dst.load_state_dict(copy.deepcopy(src.state_dict()))


def sign_flips(p, q, g_p, g_q, atol, most=2):
    """Mask of the elements where the two fp32 updates ``p`` and ``q`` differ only through Adam's sign
    amplification (all False unless every difference beyond ``atol`` is such a flip); ``close`` checks the rest.

    Adam's first step moves a weight by about ``lr * sign(grad)``, whatever the gradient's size. A gradient that is
    zero up to fp32 round-off can get opposite signs from two correct implementations (another summation order),
    and then the weights end ``2 * lr`` apart. Allowed for at most ``most`` elements per tensor, each differing by
    at most ``2 * lr``, with opposite-signed gradients of at most 1e-3 of the tensor's largest (measured: 3e-6 to
    1e-4; fp32 round-off in the ill-conditioned PatchNCE gradients, see TOLERANCES). fp64 allows no such element.
    """
    diff = (p - q).abs()
    bad = diff > atol
    tiny = 1e-3 * max(g_p.abs().max().item(), g_q.abs().max().item())
    flip = bad & (diff <= 2 * ADAM["lr"] * (1 + 1e-3)) & (g_p * g_q <= 0) & (g_p.abs() <= tiny) & (g_q.abs() <= tiny)
    return flip if flip.sum() <= most and torch.equal(flip, bad) else torch.zeros_like(bad)


def test_sign_flips_excuses_only_round_off_sign_flips():
    lr, g = ADAM["lr"], torch.tensor([5.0, -3.0, 1e-4, -2e-4, 2.0])
    p = torch.zeros(5)
    flipped = p.clone()
    flipped[2] = 2 * lr  # the one tiny gradient whose sign differs
    g_other = g.clone()
    g_other[2] = -1e-4
    assert sign_flips(flipped, p, g, g_other, 1e-5).tolist() == [False, False, True, False, False]
    cases = [  # (difference, other gradient): each must stay visible to ``close``
        ((2, 3 * lr), g_other),  # moved farther than Adam's sign flip
        ((4, 2 * lr), g),  # a large gradient of one sign
        ((2, 2 * lr), g),  # the same sign in both: not a flip
    ]
    for (i, d), other in cases:
        moved = p.clone()
        moved[i] = d
        assert not sign_flips(moved, p, g, other, 1e-5).any(), (i, d)
    g3, g3_other = torch.tensor([5.0, 1e-4, 1e-4, 1e-4, 2.0]), torch.tensor([5.0, -1e-4, -1e-4, -1e-4, 2.0])
    three = torch.tensor([0.0, 2 * lr, 2 * lr, 2 * lr, 0.0])  # three round-off flips: more than allowed
    assert not sign_flips(three, p, g3, g3_other, 1e-5).any()
    two = three * torch.tensor([0, 1, 1, 0, 0])  # two: allowed
    assert sign_flips(two, p, g3, g3_other, 1e-5).tolist() == [False, True, True, False, False]


def assert_same_update(net, mine, other, before, null, tol):
    """Parameters (and, in fp64, gradients) of ``mine`` and ``other`` after one step from the state ``before``."""
    theirs = dict(other.named_parameters())
    for name, p in mine.named_parameters():
        q, g = theirs[name], p.grad
        if name in null:
            step = 1.5 * ADAM["lr"]  # Adam moves a parameter by about lr at most
            assert (p - before[name]).abs().max() <= step and (q - before[name]).abs().max() <= step
            weight_grad = dict(mine.named_parameters())[name[: -len("bias")] + "weight"].grad.abs().max()
            assert g.abs().max() < 1e-3 * weight_grad and q.grad.abs().max() < 1e-3 * weight_grad, f"{net}.{name}"
            continue
        if tol["grad"] is None:  # fp32: allow Adam's amplification of a round-off sign flip (see sign_flips)
            p = torch.where(sign_flips(p, q, g, q.grad, tol["param"]), q, p)
        close(p, q, f"{net}.{name}", atol=tol["param"], rtol=0)
        if tol["grad"] is not None and name.endswith("weight"):  # bias gradients: sums with heavy cancellation
            close(g, q.grad, f"grad {net}.{name}", atol=tol["grad"] * g.abs().max().item(), rtol=0)


# fp32 as required; fp64 adds a tight gradient check. At this init PatchNCE is ill-conditioned (the heads output
# ~1e-4, then L2-normalised): in fp32 a 1e-7 relative change of the input already moves some weight gradients by
# ~2e-3 of their max by the third step, so fp32 gradients are not compared.
TOLERANCES = {torch.float32: {"loss": 1e-5, "param": 1e-5, "grad": None},
              torch.float64: {"loss": 1e-10, "param": 1e-10, "grad": 1e-7}}


@pytest.fixture
def default_dtype(request):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    yield request.param
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64], indirect=True, ids=["fp32", "fp64"])
@pytest.mark.parametrize("case", list(CASES))
def test_iteration_equals_straightforward(case, default_dtype, monkeypatch):
    kwargs, batch, flip_draw = CASES[case]
    tol = TOLERANCES[default_dtype]
    if flip_draw is not None:  # force the flip decision in all three implementations
        monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(flip_draw))
    torch.manual_seed(0)
    obj = CUTObjective(**kwargs)
    g_kw = GENERATOR_KW.get(case, {})
    G, D = ResnetGenerator(ngf=8, n_blocks=6, **g_kw), PatchDiscriminator(ndf=8)
    H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=32)
    assert G.model[1].weight.dtype == H.mlp_0[0].weight.dtype == default_dtype
    ref = ReferenceStep(obj, G, D, H)  # reference-style copies, built before any update
    plain = [copy.deepcopy(m) for m in (G, D, H)]
    opt = lambda *nets: torch.optim.Adam([p for n in nets for p in n.parameters()], **ADAM)  # noqa: E731
    ours_opts, plain_opts = (opt(G, H), opt(D)), (opt(plain[0], plain[2]), opt(plain[1]))

    nce_convs = {f"model.{i}" for i in obj.nce_layers}
    null = {"G": null_space_biases(RefGenerator(G.state_dict()), nce_convs),
            "D": null_space_biases(RefDiscriminator(D.state_dict())), "H": set()}
    up_convs = g_kw.get("num_downsampling", 2)
    assert len(null["G"]) == 1 + 2 * 6 + up_convs and len(null["D"]) == 3  # conv1, 2 per block, up-convs; D's 3

    for it in range(ITERS):  # each iteration from one shared state (weights + Adam state) on all three
        sync((G, D, H), ours_opts, plain, plain_opts)
        sync((G, D, H), ours_opts, (ref.G, ref.D, ref.F), (ref.opt_g, ref.opt_d))
        before = {name: copy.deepcopy(net.state_dict()) for name, net in (("G", G), ("D", D), ("H", H))}
        real_a, real_b = torch.randn(batch, 3, SIZE, SIZE).tanh(), torch.randn(batch, 3, SIZE, SIZE).tanh()
        torch.manual_seed(100 + it)
        got = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                            dict(zip(("generator", "discriminator"), ours_opts)))
        torch.manual_seed(100 + it)
        want = straightforward_step(obj, *plain, *plain_opts, real_a, real_b)
        torch.manual_seed(100 + it)
        want_ref = ref.step(real_a, real_b)
        for name in got:
            for other in (want, want_ref):
                close(got[name], other[name], f"{name}, iteration {it}", atol=tol["loss"], rtol=tol["loss"])
        for (net, mine), others in zip((("G", G), ("D", D), ("H", H)), zip(plain, (ref.G, ref.D, ref.F))):
            for other in others:
                assert_same_update(net, mine, other, before[net], null[net], tol)


VARIANTS = {  # (objective kwargs, generator kwargs, discriminator kwargs, sampler kwargs)
    "vanilla": ({"gan_mode": "vanilla"}, {}, {}, {}),
    "nonsaturating": ({"gan_mode": "nonsaturating"}, {}, {}, {}),
    "hinge": ({"gan_mode": "hinge"}, {}, {}, {}),
    "no_mlp": ({}, {}, {}, {"use_mlp": False}),
    "batch_norm": ({}, {"norm": "batch"}, {"norm": "batch"}, {}),
    "batch_norm_no_idt": ({"nce_idt": False}, {"norm": "batch"}, {"norm": "batch"}, {}),
    "dropout": ({}, {"dropout": 0.5}, {}, {}),
    "one_downsampling": ({"nce_layers": [0, 4, 8, 9]}, {"num_downsampling": 1}, {}, {}),  # as experiment=builtin_cpu
}


def deterministic_dropout(self, x):
    """Dropout whose mask is a fixed function of each value (not of the RNG), so that features of an image are
    the same in a joint forward and in a separate encoding, as they are without dropout."""
    if not self.training:
        return x
    keep = torch.frac(x.detach().abs() * 1000.0) >= self.p
    return x * keep / (1 - self.p)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_iteration_variants_equal_straightforward(variant, monkeypatch):
    """Every gan_mode, heads without MLP, batch norm (keys and queries encoded part by part, as the reference
    does) and dropout (masks made a function of the input: the two implementations draw their random masks in a
    different order, so only the math, not the draws, can be compared) against the straightforward step, fp64."""
    obj_kw, g_kw, d_kw, h_kw = VARIANTS[variant]
    monkeypatch.setattr(nn.Dropout, "forward", deterministic_dropout)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        obj = CUTObjective(num_patches=16, **obj_kw)
        G, D = ResnetGenerator(ngf=8, n_blocks=2, **g_kw), PatchDiscriminator(ndf=8, **d_kw)
        H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=16, **h_kw)
        plain = [copy.deepcopy(m) for m in (G, D, H)]
        opt = lambda *nets: torch.optim.Adam([p for n in nets for p in n.parameters()], **ADAM)  # noqa: E731
        ours_opts, plain_opts = (opt(G, H), opt(D)), (opt(plain[0], plain[2]), opt(plain[1]))
        for it in range(2):
            real_a, real_b = torch.randn(2, 3, SIZE, SIZE).tanh(), torch.randn(2, 3, SIZE, SIZE).tanh()
            torch.manual_seed(100 + it)
            got = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                                dict(zip(("generator", "discriminator"), ours_opts)))
            torch.manual_seed(100 + it)
            want = straightforward_step(obj, *plain, *plain_opts, real_a, real_b)
            for name in got:
                close(got[name], want[name], f"{variant} {name}, iteration {it}", atol=1e-9, rtol=1e-9)
            null = null_space_biases(G, {f"model.{i}" for i in obj.nce_layers}) | null_space_biases(D)
            for net, mine, other in zip("GDH", (G, D, H), plain):
                for (name, p), q in zip(mine.named_parameters(), other.parameters()):
                    if net != "H" and name in null:  # exact gradient 0: round-off, which Adam scales to ~lr
                        continue
                    close(p, q, f"{variant} {net}.{name}, iteration {it}", atol=1e-9, rtol=0)
    finally:
        torch.set_default_dtype(previous)


@pytest.mark.parametrize("size", [(10, 14), (11, 13), (2, 3)])
@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_layers_equal_reference_layers(size, batch, channels_last):
    """Our layer formulations against the reference ones (forward and input gradient), incl. channels-last."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(batch, 8, *size) * 3 + 1).contiguous(memory_format=fmt)
    pairs = [
        (InstanceNorm(8), lambda t: F.instance_norm(t.contiguous())),
        (BlurUpsample(8), RefUpsample(8, BlurUpsample(8).filt)),
        (BlurDownsample(8), RefDownsample(8, BlurDownsample(8).filt)),
    ]
    conv = ChannelsLastConv2d(8, 3, 7, padding=3)
    pairs.append((conv, lambda t: F.conv2d(t, conv.weight, conv.bias, padding=3)))
    for ours, ref in pairs:
        x1, x2 = x.clone().requires_grad_(), x.clone().contiguous().requires_grad_()
        y1, y2 = ours(x1), ref(x2)
        g = torch.randn_like(y2)
        close(y1, y2, type(ours).__name__, atol=1e-5, rtol=1e-5)
        close(torch.autograd.grad(y1, x1, g)[0], torch.autograd.grad(y2, x2, g)[0], f"grad {type(ours).__name__}",
              atol=1e-5, rtol=1e-5)
