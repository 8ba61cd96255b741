"""One-sided baselines: GcGAN, DistanceGAN, SelfDistance losses against loop references; their iterations."""

import copy
import inspect
import itertools

import pytest
import torch

from cutlight.losses import (
    cycle_loss,
    distance_loss,
    distance_stats,
    geometric_transform,
    geometry_consistency_loss,
    half_distances,
    pairwise_distances,
    self_distance_loss,
)
from cutlight.networks import PatchDiscriminator, ResnetGenerator
from cutlight.objectives import CUTObjective, DistanceGANObjective, GcGANObjective, SelfDistanceObjective
from helpers import K_LAYER, K_NETWORK, K_OP, assert_scaled_close

ADAM = {"lr": 2e-4, "betas": (0.5, 0.999)}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fp64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


# ----------------------------------------------------------------------------- loop references


def loop_transform(x, transform, inverse=False):
    """Pixel by pixel: clockwise rotation out[i, j] = x[H-1-j, i] (inverse: out[i, j] = x[j, W-1-i]) or vflip."""
    b, c, h, w = x.shape
    if transform == "vflip":
        return torch.stack([x[:, :, h - 1 - i, :] for i in range(h)], dim=2)
    if not inverse:  # output (W, H)
        rows = [torch.stack([x[:, :, h - 1 - j, i] for j in range(h)], dim=-1) for i in range(w)]
    else:  # counter-clockwise, output (W, H)
        rows = [torch.stack([x[:, :, j, w - 1 - i] for j in range(h)], dim=-1) for i in range(w)]
    return torch.stack(rows, dim=2)


def loop_mean_abs(a, b):
    total, n = 0.0, 0
    for idx in itertools.product(*(range(s) for s in a.shape)):
        total = total + (a[idx] - b[idx]).abs()
        n += 1
    return total / n


@pytest.mark.parametrize("transform", ["rot90", "vflip"])
def test_geometric_transform_equals_pixel_loop(transform):
    x = torch.randn(2, 3, 4, 6)
    y = geometric_transform(x, transform)
    torch.testing.assert_close(y, loop_transform(x, transform), rtol=0, atol=0)
    torch.testing.assert_close(geometric_transform(y, transform, inverse=True), x, rtol=0, atol=0)
    torch.testing.assert_close(geometric_transform(x, transform, inverse=True), loop_transform(x, transform, True),
                               rtol=0, atol=0)  # a permutation: exact


@pytest.mark.parametrize("transform", ["rot90", "vflip"])
def test_geometry_consistency_loss_equals_loop_reference(transform):
    """Value and gradients: each side's target is a constant (the GcGAN code detaches both targets)."""
    fake = torch.randn(2, 3, 4, 6, requires_grad=True)
    gc_shape = (2, 3, 6, 4) if transform == "rot90" else (2, 3, 4, 6)
    fake_gc = torch.randn(gc_shape, requires_grad=True)
    got = geometry_consistency_loss(fake, fake_gc, transform)
    g_fake, g_gc = torch.autograd.grad(got, (fake, fake_gc))

    f2, gc2 = fake.detach().clone().requires_grad_(), fake_gc.detach().clone().requires_grad_()
    want = (loop_mean_abs(f2, loop_transform(gc2.detach(), transform, inverse=True))
            + loop_mean_abs(gc2, loop_transform(f2.detach(), transform)))
    w_fake, w_gc = torch.autograd.grad(want, (f2, gc2))
    assert_scaled_close(got, want, K_OP)  # a mean vs a loop sum: round-off
    assert_scaled_close(g_fake, w_fake, K_OP)
    assert_scaled_close(g_gc, w_gc, K_OP)
    n = fake.numel()  # L1 mean: each element's gradient is +-1/N, from its own term only
    assert_scaled_close(g_fake.abs(), torch.full_like(g_fake, 1 / n), K_OP)


def test_cycle_loss_is_mean_absolute_error():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert_scaled_close(cycle_loss(a, b), loop_mean_abs(a, b), K_OP)


def loop_distance_loss(real, fake, stats_r, stats_f):
    terms = []
    for i in range(real.shape[0]):
        for j in range(i + 1, real.shape[0]):
            d_r = loop_mean_abs(real[i], real[j])
            d_f = loop_mean_abs(fake[i], fake[j])
            terms.append(((d_r - stats_r[0]) / stats_r[1] - (d_f - stats_f[0]) / stats_f[1]).abs())
    return sum(terms) / len(terms)


def test_distance_loss_equals_loop_reference():
    torch.manual_seed(0)
    real = torch.randn(4, 2, 4, 6)
    fake = torch.randn(4, 3, 4, 6, requires_grad=True)
    stats_r, stats_f = (0.9, 0.2), (1.1, 0.3)
    got = distance_loss(real, fake, stats_r, stats_f)
    fake2 = fake.detach().clone().requires_grad_()
    want = loop_distance_loss(real, fake2, stats_r, stats_f)
    assert_scaled_close(got, want, K_LAYER)
    assert_scaled_close(torch.autograd.grad(got, fake)[0], torch.autograd.grad(want, fake2)[0], K_LAYER)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]  # documented pair order
    assert_scaled_close(pairwise_distances(real), torch.stack([loop_mean_abs(real[i], real[j]) for i, j in pairs]), K_OP)
    with pytest.raises(ValueError, match="size >= 2"):
        distance_loss(real[:1], fake[:1])


@pytest.mark.parametrize("halves", ["left_right", "top_bottom"])
def test_self_distance_loss_equals_loop_reference(halves):
    torch.manual_seed(0)
    real, fake = torch.randn(3, 2, 4, 6), torch.randn(3, 2, 4, 6, requires_grad=True)
    stats_r, stats_f = (0.5, 0.1), (0.7, 0.2)
    h, w = real.shape[-2:]

    def split(x):
        return (x[:, :, : w // 2], x[:, :, w // 2:]) if halves == "left_right" else (x[:, : h // 2], x[:, h // 2:])

    fake2 = fake.detach().clone().requires_grad_()
    terms = []
    for i in range(3):
        d_r = loop_mean_abs(*split(real[i]))
        d_f = loop_mean_abs(*split(fake2[i]))
        terms.append(((d_r - stats_r[0]) / stats_r[1] - (d_f - stats_f[0]) / stats_f[1]).abs())
    want = sum(terms) / 3
    got = self_distance_loss(real, fake, stats_r, stats_f, halves)
    assert_scaled_close(got, want, K_LAYER)
    assert_scaled_close(torch.autograd.grad(got, fake)[0], torch.autograd.grad(want, fake2)[0], K_LAYER)
    with pytest.raises(ValueError, match="must be even"):
        half_distances(torch.zeros(1, 1, 5, 5), halves)


def test_distance_stats_equal_loops():
    torch.manual_seed(0)
    x = torch.randn(5, 2, 4, 4)
    d = [loop_mean_abs(x[i], x[j]) for i in range(5) for j in range(i + 1, 5)]
    d = torch.stack(d).double()
    mean, std = distance_stats(x, chunk=2)  # chunks of 2 rows: exercises the chunking
    assert mean == pytest.approx(float(d.mean()), rel=1e-6) and std == pytest.approx(float(d.std(unbiased=False)),
                                                                                      rel=1e-5)
    halves = torch.stack([loop_mean_abs(im[:, :, :2], im[:, :, 2:]) for im in x]).double()
    mean, std = distance_stats(x, self_distance=True)
    assert mean == pytest.approx(float(halves.mean()), rel=1e-6)
    assert std == pytest.approx(float(halves.std(unbiased=False)), rel=1e-5)
    with pytest.raises(ValueError, match="at least 2 images"):
        distance_stats(x[:1])


def test_bad_choices_raise():
    with pytest.raises(ValueError, match="unknown transform 'rot180'; expected one of rot90, vflip"):
        geometric_transform(torch.zeros(1, 1, 2, 2), "rot180")
    with pytest.raises(ValueError, match="unknown transform 'hflip'"):
        GcGANObjective(transform="hflip")
    with pytest.raises(ValueError, match="unknown halves 'diagonal'"):
        SelfDistanceObjective(halves="diagonal")
    with pytest.raises(ValueError, match="unknown gan_mode 'wgan'"):
        DistanceGANObjective(gan_mode="wgan")
    with pytest.raises(ValueError, match="stats_a must be \\(mean, std\\) with std > 0"):
        DistanceGANObjective(stats_a=(0.5, 0.0))


# ----------------------------------------------------------------------------- iterations

def tiny_nets(input_nc=3, output_nc=3):
    return (ResnetGenerator(input_nc, output_nc, ngf=8, n_blocks=1), PatchDiscriminator(output_nc, ndf=8, n_layers=2))


def adams(G, D):
    return {"generator": torch.optim.Adam(G.parameters(), **ADAM),
            "discriminator": torch.optim.Adam(D.parameters(), **ADAM)}


OBJECTIVES = {
    "gcgan_rot90": (lambda: GcGANObjective(pool_size=2), 1, (32, 32)),
    "gcgan_vflip_no_identity": (lambda: GcGANObjective(transform="vflip", lambda_identity=0.0), 2, (32, 32)),
    "gcgan_rot90_non_square": (lambda: GcGANObjective(pool_size=0), 1, (32, 48)),
    "distancegan_online": (lambda: DistanceGANObjective(pool_size=2), 3, (32, 32)),
    "distancegan_stats": (lambda: DistanceGANObjective(stats_a=(0.5, 0.1), stats_b=(0.6, 0.1)), 2, (32, 32)),
    "selfdistance_b1": (lambda: SelfDistanceObjective(), 1, (32, 32)),
}


def test_iteration_has_cuts_signature():
    want = list(inspect.signature(CUTObjective.iteration).parameters)
    for cls in (GcGANObjective, DistanceGANObjective, SelfDistanceObjective):
        assert list(inspect.signature(cls.iteration).parameters) == want


@pytest.mark.parametrize("case", list(OBJECTIVES))
def test_iteration_updates_g_then_d_and_nothing_else(case):
    """G step: G gradients only (D frozen); D step: D gradients, G's left as the G step made them; both move."""
    make, batch, (h, w) = OBJECTIVES[case]
    torch.manual_seed(0)
    obj, (G, D) = make(), tiny_nets()
    opt_g, opt_d = adams(G, D).values()
    before = copy.deepcopy((G, D))
    seen = []

    def grads(net):
        return [None if p.grad is None else p.grad.clone() for p in net.parameters()]

    def backward(loss):  # records G's gradients and which D gradients this backward changed
        d_before = grads(D)
        loss.backward()
        changed = [a is None and b is not None or (a is not None and not torch.equal(a, b))
                   for a, b in zip(d_before, grads(D))]
        seen.append((grads(G), changed))

    for _ in range(2):
        seen.clear()
        batch_ab = {"A": torch.randn(batch, 3, h, w).tanh(), "B": torch.randn(batch, 3, h, w).tanh()}
        out = obj.iteration({"generator": G, "discriminator": D}, batch_ab, {"generator": opt_g, "discriminator": opt_d},
                            backward=backward)
        (g_after_g, d_changed_by_g), (g_after_d, d_changed_by_d) = seen
        assert all(g is not None for g in g_after_g) and not any(d_changed_by_g)
        assert all(d_changed_by_d) and all(torch.equal(a, b) for a, b in zip(g_after_g, g_after_d))
        assert all(p.requires_grad for p in D.parameters())
        assert all(torch.isfinite(v) and not v.requires_grad for v in out.values())
        assert {"loss_g", "loss_d"} <= set(out)
    for new, old in zip((G, D), before):
        assert all((p - q).abs().max() > 0 for p, q in zip(new.parameters(), old.parameters()) if p.dim() > 1)


def gan_ls(pred, real):
    return ((pred - (1.0 if real else 0.0)) ** 2).mean()


def straightforward_gcgan(obj, G, D, opt_g, opt_d, pools, real_a, real_b):
    """GcGAN's iteration as in the authors' code, with one G and one D: separate calls, G step, then D step."""
    f = (lambda x: torch.rot90(x, -1, (2, 3))) if obj.transform == "rot90" else (lambda x: x.flip(2))
    f_inv = (lambda x: torch.rot90(x, 1, (2, 3))) if obj.transform == "rot90" else (lambda x: x.flip(2))
    real_gc_a, real_gc_b = f(real_a), f(real_b)
    D.requires_grad_(False)
    opt_g.zero_grad()
    fake_b, fake_gc_b = G(real_a), G(real_gc_a)
    loss_gan = gan_ls(D(fake_b), True) * obj.lambda_gan
    loss_gan_gc = gan_ls(D(fake_gc_b), True) * obj.lambda_gan
    loss_gc = ((fake_b - f_inv(fake_gc_b.detach())).abs().mean() + (fake_gc_b - f(fake_b.detach())).abs().mean())
    loss_gc = loss_gc * obj.lambda_ab * obj.lambda_gc
    loss_idt = (G(real_b) - real_b).abs().mean() * obj.lambda_ab * obj.lambda_identity
    loss_idt_gc = (G(real_gc_b) - real_gc_b).abs().mean() * obj.lambda_ab * obj.lambda_identity
    loss_g = loss_gan + loss_gan_gc + loss_gc + loss_idt + loss_idt_gc
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    opt_d.zero_grad()
    fake = pools[0].query(fake_b.detach())
    fake_gc = pools[1].query(fake_gc_b.detach())
    loss_d_b = 0.5 * (gan_ls(D(real_b), True) + gan_ls(D(fake), False))
    loss_d_gc = 0.5 * (gan_ls(D(real_gc_b), True) + gan_ls(D(fake_gc), False))
    (loss_d_b + loss_d_gc).backward()
    opt_d.step()
    return {"loss_g": loss_g, "loss_g_gan": loss_gan, "loss_g_gan_gc": loss_gan_gc, "loss_gc": loss_gc,
            "loss_idt": loss_idt, "loss_idt_gc": loss_idt_gc, "loss_d_b": loss_d_b, "loss_d_gc": loss_d_gc,
            "loss_d": loss_d_b + loss_d_gc}


def straightforward_distance(obj, G, D, opt_g, opt_d, pools, real_a, real_b):
    """DistanceGAN / SelfDistance with given stats, written with the loop references above."""
    D.requires_grad_(False)
    opt_g.zero_grad()
    fake_b = G(real_a)
    loss_gan = gan_ls(D(fake_b), True) * obj.lambda_gan
    if isinstance(obj, SelfDistanceObjective):
        w = real_a.shape[-1] // 2
        terms = [((loop_mean_abs(r[..., :w], r[..., w:]) - obj.stats_a[0]) / obj.stats_a[1]
                  - (loop_mean_abs(f[..., :w], f[..., w:]) - obj.stats_b[0]) / obj.stats_b[1]).abs()
                 for r, f in zip(real_a, fake_b)]
        loss_distance = sum(terms) / len(terms)
    else:
        loss_distance = loop_distance_loss(real_a, fake_b, obj.stats_a, obj.stats_b)
    loss_distance = loss_distance * obj.lambda_distance
    loss_g = loss_gan + loss_distance
    loss_g.backward()
    opt_g.step()
    D.requires_grad_(True)
    opt_d.zero_grad()
    fake = pools[0].query(fake_b.detach())
    loss_d = 0.5 * (gan_ls(D(real_b), True) + gan_ls(D(fake), False))
    loss_d.backward()
    opt_d.step()
    return {"loss_g": loss_g, "loss_g_gan": loss_gan, "loss_distance": loss_distance, "loss_d": loss_d}


SAME_MATH = {
    "gcgan_rot90": (lambda: GcGANObjective(pool_size=2, lambda_gan=0.7), straightforward_gcgan, 2, (16, 16)),
    "gcgan_vflip": (lambda: GcGANObjective(transform="vflip", pool_size=1), straightforward_gcgan, 1, (16, 16)),
    "distancegan": (lambda: DistanceGANObjective(lambda_distance=2.0, stats_a=(0.6, 0.2), stats_b=(0.5, 0.3),
                                                 pool_size=2), straightforward_distance, 3, (16, 16)),
    "selfdistance": (lambda: SelfDistanceObjective(stats_a=(0.4, 0.1), stats_b=(0.3, 0.2), pool_size=1),
                     straightforward_distance, 1, (16, 16)),
}


@pytest.mark.parametrize("case", list(SAME_MATH))
def test_iteration_equals_straightforward_step_fp64(case, fp64):
    """Losses and updated parameters equal the straightforward step's (unbatched calls, loop losses), over two
    iterations (the second with pools holding images)."""
    from test_cyclegan import OriginalPool, null_space_biases

    make, reference, batch, (h, w) = SAME_MATH[case]
    torch.manual_seed(0)
    obj, (G, D) = make(), tiny_nets()
    G2, D2 = copy.deepcopy(G), copy.deepcopy(D)
    opts, opts2 = adams(G, D), adams(G2, D2)
    pools = [OriginalPool(p.pool_size) for p in obj.pools().values()]
    null = null_space_biases(G) | {f"d.{n}" for n in null_space_biases(D)}
    for it in range(2):
        real_a, real_b = torch.randn(batch, 3, h, w).tanh(), torch.randn(batch, 3, h, w).tanh()
        torch.manual_seed(10 + it)
        got = obj.iteration({"generator": G, "discriminator": D}, {"A": real_a, "B": real_b}, opts)
        torch.manual_seed(10 + it)
        want = reference(obj, G2, D2, *opts2.values(), pools, real_a, real_b)
        assert set(got) == set(want)
        for k in want:
            torch.testing.assert_close(got[k], want[k].detach(), rtol=1e-10, atol=1e-10, msg=f"{k}, iteration {it}")
        params = itertools.chain(G.named_parameters(), (("d." + n, p) for n, p in D.named_parameters()))
        for (name, p), q in zip(params, itertools.chain(G2.parameters(), D2.parameters())):
            atol = 1e-8 if name in null else 1e-10  # see test_cyclegan.null_space_biases
            torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=f"{name}, iteration {it}")


def test_distancegan_online_stats_are_the_running_stats_of_all_real_distances():
    torch.manual_seed(0)
    obj, (G, D) = DistanceGANObjective(pool_size=0), tiny_nets()
    opts = adams(G, D)
    seen_a, seen_b = [], []
    for _ in range(3):
        a, b = torch.randn(3, 3, 16, 16).tanh(), torch.randn(3, 3, 16, 16).tanh()
        obj.iteration({"generator": G, "discriminator": D}, {"A": a, "B": b}, opts)
        seen_a.append(pairwise_distances(a))
        seen_b.append(pairwise_distances(b))
    for running, seen in ((obj.running_a, seen_a), (obj.running_b, seen_b)):
        d = torch.cat(seen).double()
        want = torch.stack([torch.tensor(float(d.numel()), dtype=d.dtype), d.mean(), ((d - d.mean()) ** 2).sum()])
        for got_value, want_value in zip(running, want):  # fp32 running statistics (Welford) vs float64
            assert_scaled_close(got_value, want_value, K_LAYER)
    assert {"running_a", "running_b", "_extra_state"} <= set(obj.state_dict())
    given = DistanceGANObjective(stats_a=(0.5, 0.1), stats_b=(0.5, 0.1))
    given.iteration({"generator": G, "discriminator": D},
                    {"A": torch.randn(2, 3, 16, 16), "B": torch.randn(2, 3, 16, 16)}, opts)
    assert given.running_a.abs().sum() == 0  # given stats: no online estimate


def test_unnormalised_distances_equal_the_raw_loss():
    torch.manual_seed(0)
    obj, (G, D) = DistanceGANObjective(normalize_distances=False, pool_size=0), tiny_nets()
    a, b = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = distance_loss(a, G(a))
    got = obj.iteration({"generator": G, "discriminator": D}, {"A": a, "B": b}, adams(G, D))["loss_distance"]
    assert_scaled_close(got, want, K_NETWORK)


def test_distancegan_needs_pairs_and_gcgan_identity_needs_equal_channels():
    G, D = tiny_nets()
    with pytest.raises(ValueError, match="at least 2 images.*SelfDistanceObjective"):
        DistanceGANObjective().iteration({"generator": G, "discriminator": D},
                                         {"A": torch.randn(1, 3, 16, 16), "B": torch.randn(1, 3, 16, 16)}, adams(G, D))
    G, D = tiny_nets(1, 3)
    with pytest.raises(ValueError, match="lambda_identity=0.5 needs input_nc == output_nc"):
        GcGANObjective().iteration({"generator": G, "discriminator": D},
                                   {"A": torch.randn(1, 1, 16, 16), "B": torch.randn(1, 3, 16, 16)}, adams(G, D))
    out = GcGANObjective(lambda_identity=0).iteration(
        {"generator": G, "discriminator": D}, {"A": torch.randn(1, 1, 16, 16), "B": torch.randn(1, 3, 16, 16)},
        adams(G, D))
    assert out["loss_idt"] == 0
