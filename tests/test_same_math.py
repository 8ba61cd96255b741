"""Same math, less work: ``CUTObjective.iteration`` equals the straightforward CUT iteration.

Two straightforward versions run from identical weights, inputs and RNG state (hence identical patch positions):
``straightforward_step`` below, written from the paper's / reference pseudo-code on our modules, and
``reference.cut_reference.ReferenceStep`` (tests/reference/), the reference-style step with its own layer
implementations. Exactness is proven in float64 (losses and Adam updates to 1e-10, weight gradients to 1e-7 of
their largest); float32 is checked against the float64 truth by the tolerance policy of tests/helpers.py.

Exception: a conv bias feeding straight into an instance norm has an exact gradient of zero (the norm removes
it), so its gradient is round-off, which Adam (eps 1e-8) scales to a +-lr step of arbitrary sign. For
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
from helpers import K_LAYER, K_OP, assert_scaled_close
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


def assert_same_update(net, mine, other, before, null):
    """fp64: parameters and gradients of ``mine`` and ``other`` after one Adam step from the state ``before``."""
    theirs = dict(other.named_parameters())
    for name, p in mine.named_parameters():
        q, g = theirs[name], p.grad
        if name in null:
            step = 1.5 * ADAM["lr"]  # Adam moves a parameter by about lr at most
            assert (p - before[name]).abs().max() <= step and (q - before[name]).abs().max() <= step
            weight_grad = dict(mine.named_parameters())[name[: -len("bias")] + "weight"].grad.abs().max()
            assert g.abs().max() < 1e-3 * weight_grad and q.grad.abs().max() < 1e-3 * weight_grad, f"{net}.{name}"
            continue
        close(p, q, f"{net}.{name}", atol=1e-10, rtol=0)
        if name.endswith("weight"):  # bias gradients: sums with heavy cancellation
            close(g, q.grad, f"grad {net}.{name}", atol=1e-7 * g.abs().max().item(), rtol=0)


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def build(case):
    """The case's objective and fresh networks (seeded), in the default dtype."""
    kwargs, _, _ = CASES[case]
    torch.manual_seed(0)
    obj = CUTObjective(**kwargs)
    G, D = ResnetGenerator(ngf=8, n_blocks=6, **GENERATOR_KW.get(case, {})), PatchDiscriminator(ndf=8)
    H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=32)
    return obj, G, D, H


def force_flip(case, monkeypatch):
    """Force the flip decision of a flip-equivariance case in every implementation."""
    flip_draw = CASES[case][2]
    if flip_draw is not None:
        monkeypatch.setattr(torch, "rand", lambda *a, **k: torch.tensor(flip_draw))


@pytest.mark.parametrize("case", list(CASES))
def test_iteration_equals_straightforward(case, float64, monkeypatch):
    """Exactness, in float64: losses, Adam updates and weight gradients of three iterations equal the
    straightforward step and the reference-style step, each iteration from one shared state."""
    batch = CASES[case][1]
    force_flip(case, monkeypatch)
    obj, G, D, H = build(case)
    assert G.model[1].weight.dtype == H.mlp_0[0].weight.dtype == torch.float64
    ref = ReferenceStep(obj, G, D, H)  # reference-style copies, built before any update
    plain = [copy.deepcopy(m) for m in (G, D, H)]
    opt = lambda *nets: torch.optim.Adam([p for n in nets for p in n.parameters()], **ADAM)  # noqa: E731
    ours_opts, plain_opts = (opt(G, H), opt(D)), (opt(plain[0], plain[2]), opt(plain[1]))

    nce_convs = {f"model.{i}" for i in obj.nce_layers}
    null = {"G": null_space_biases(RefGenerator(G.state_dict()), nce_convs),
            "D": null_space_biases(RefDiscriminator(D.state_dict())), "H": set()}
    up_convs = GENERATOR_KW.get(case, {}).get("num_downsampling", 2)
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
                close(got[name], other[name], f"{name}, iteration {it}", atol=1e-10, rtol=1e-10)
        for (net, mine), others in zip((("G", G), ("D", D), ("H", H)), zip(plain, (ref.G, ref.D, ref.F))):
            for other in others:
                assert_same_update(net, mine, other, before[net], null[net])


def relative_error(x: torch.Tensor, truth: torch.Tensor) -> float:
    """Norm-wise relative error of an fp32 tensor against its float64 truth."""
    return ((x.double() - truth).norm() / truth.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("case", list(CASES))
def test_iteration_in_float32_is_as_accurate_as_straightforward(case, monkeypatch):
    """float32, by the tolerance policy (tests/helpers.py): one iteration of ours, of the straightforward step and
    of the reference-style step, each against the float64 truth (the straightforward step on float64 copies).

    Losses: within ``K_LAYER`` round-off units of the truth. Gradients (the step's input, not weights after it;
    SGD, so that the D step that the G step sees moves the weights linearly in the gradient, not by Adam's sign):
    at this init PatchNCE is ill-conditioned (the heads output ~1e-4, then L2-normalised) and fp32 gradients are
    only accurate to ~1e-3 of their norm on some tensors, so no constant tolerance fits every machine. Instead our
    norm-wise error must be within 4x of the larger of the two straightforward implementations' errors (floor
    ``K_OP`` eps): our fast path loses no accuracy against the plain one, on whatever kernels this CPU runs
    (measured ratios <= 1.7). Conv biases in front of an instance norm (exact gradient zero) are round-off only.
    """
    batch = CASES[case][1]
    force_flip(case, monkeypatch)
    obj, G, D, H = build(case)
    assert G.model[1].weight.dtype == torch.float32
    ref = ReferenceStep(obj, G, D, H)
    plain = [copy.deepcopy(m) for m in (G, D, H)]
    truth = [copy.deepcopy(m).double() for m in (G, D, H)]
    sgd = lambda *nets: torch.optim.SGD([p for n in nets for p in n.parameters()], lr=0.1)  # noqa: E731
    ref.opt_g, ref.opt_d = sgd(ref.G, ref.F), sgd(ref.D)
    nce_convs = {f"model.{i}" for i in obj.nce_layers}
    null = {"G": null_space_biases(RefGenerator(G.state_dict()), nce_convs),
            "D": null_space_biases(RefDiscriminator(D.state_dict())), "H": set()}

    real_a, real_b = torch.randn(batch, 3, SIZE, SIZE).tanh(), torch.randn(batch, 3, SIZE, SIZE).tanh()
    torch.manual_seed(100)
    got = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                        {"generator": sgd(G, H), "discriminator": sgd(D)})
    torch.manual_seed(100)
    want = straightforward_step(obj, *plain, sgd(plain[0], plain[2]), sgd(plain[1]), real_a, real_b)
    torch.manual_seed(100)
    want_ref = ref.step(real_a, real_b)
    torch.manual_seed(100)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        exact = straightforward_step(obj, *truth, sgd(truth[0], truth[2]), sgd(truth[1]),
                                     real_a.double(), real_b.double())
    finally:
        torch.set_default_dtype(previous)

    for name in got:
        for label, result in (("ours", got), ("straightforward", want), ("reference-style", want_ref)):
            assert_scaled_close(result[name], exact[name], K_LAYER, f"{label} {name}")
    eps = torch.finfo(torch.float32).eps
    for net, nets in zip("GDH", ((G, plain[0], ref.G, truth[0]), (D, plain[1], ref.D, truth[1]),
                                (H, plain[2], ref.F, truth[2]))):
        params = [dict(n.named_parameters()) for n in nets]
        for name, t in params[3].items():
            grads = [p[name].grad for p in params[:3]]
            if name in null[net]:  # exact gradient 0 (the norm removes it): each fp32 one must be round-off
                weight = params[3][name[: -len("bias")] + "weight"].grad.abs().max()
                assert all(g.abs().max() < 1e-3 * weight for g in grads), f"{net}.{name}"
                continue
            ours, *others = (relative_error(g, t.grad) for g in grads)
            bound = 4 * max(*others, K_OP * eps)
            assert ours <= bound, f"grad {net}.{name}: error {ours:.3g} vs straightforward {others} (bound {bound:.3g})"


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
    """Our layer formulations against the reference ones (forward and input gradient), incl. channels-last
    inputs and upstream gradients: exact in float64; in float32 within ``K_LAYER`` round-off of the float64 truth."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x64 = (torch.randn(batch, 8, *size, dtype=torch.float64) * 3 + 1).contiguous(memory_format=fmt)
    conv = ChannelsLastConv2d(8, 3, 7, padding=3).double()
    pairs = [
        (InstanceNorm(8), lambda t: F.instance_norm(t.contiguous())),
        (BlurUpsample(8).double(), RefUpsample(8, BlurUpsample(8).filt).double()),
        (BlurDownsample(8).double(), RefDownsample(8, BlurDownsample(8).filt).double()),
        (conv, lambda t: F.conv2d(t, conv.weight, conv.bias, padding=3)),
    ]
    for ours, ref in pairs:
        name = type(ours).__name__
        x1, x2 = x64.clone().requires_grad_(), x64.clone().contiguous().requires_grad_()
        y1, y2 = ours(x1), ref(x2)
        g = torch.randn_like(y2).contiguous(memory_format=fmt)  # the upstream gradient in the input's layout
        grad1, grad2 = torch.autograd.grad(y1, x1, g)[0], torch.autograd.grad(y2, x2, g.contiguous())[0]
        close(y1, y2, name, atol=1e-12, rtol=1e-12)
        close(grad1, grad2, f"grad {name}", atol=1e-12, rtol=1e-12)
        ours32 = copy.deepcopy(ours).float() if isinstance(ours, nn.Module) else ours
        x32 = x64.float().requires_grad_()
        y32 = ours32(x32)
        assert_scaled_close(y32, y2.detach(), K_LAYER, f"{name} fp32")
        assert_scaled_close(torch.autograd.grad(y32, x32, g.float())[0], grad2, K_LAYER, f"grad {name} fp32")


def test_instance_norm_is_immune_to_the_channels_last_batch_1_backward_bug():
    """torch 2.14's CPU ``F.instance_norm`` backward is wrong when the upstream gradient is channels-last at batch
    size 1 (for ``x = randn(1, 8, 6, 6)`` the input gradients for ``g`` and ``g.contiguous()`` differ by ~4).
    The authors' sampler (``permute`` then gather) sends such gradients into ``nn.InstanceNorm2d``. Our
    ``InstanceNorm`` (group norm, one group per channel) gives the same input gradient for both layouts, and the
    generator's encoder gradient at batch 1 with ``channels_last=True`` equals float64 finite differences."""
    torch.manual_seed(0)
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(1, 8, 6, 6, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    norm = InstanceNorm(8)
    close(torch.autograd.grad(norm(x), x, g)[0], torch.autograd.grad(norm(x), x, g.contiguous())[0],
          "InstanceNorm input gradient, channels-last vs contiguous upstream", atol=1e-12, rtol=1e-12)

    G = ResnetGenerator(ngf=4, n_blocks=1).double().to(memory_format=torch.channels_last)  # channels_last=True
    layers = [4, 8]
    real = torch.randn(1, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weights = [torch.randn(f.shape, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
               for f in G.encode(real, layers)]

    def objective(img):  # a scalar of the encoder's features whose gradients arrive channels-last, as PatchNCE's
        return sum((f * w).sum() for f, w in zip(G.encode(img, layers), weights))

    inp = real.clone().requires_grad_()
    (grad,) = torch.autograd.grad(objective(inp), inp)
    direction = torch.randn_like(real)
    h = 1e-6
    with torch.no_grad():
        numeric = (objective(real + h * direction) - objective(real - h * direction)) / (2 * h)
    close((grad * direction).sum(), numeric, "encoder gradient vs finite differences", atol=1e-6, rtol=1e-6)
