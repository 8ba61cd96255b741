"""CycleGAN: the image pool, the iteration against the original algorithm written out here, the original layout."""

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cutlight.networks import load_network_weights
from cutlight.objectives import CycleGANObjective, ImagePool, cyclegan_networks
from helpers import K_NETWORK, assert_scaled_close

ADAM = {"lr": 2e-4, "betas": (0.5, 0.999)}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread avoids OpenMP spin-waits when other processes load the CPUs."""
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


def constant_images(values, size=4):
    """(N, 1, size, size) images, image k filled with values[k] (so an image is recognised by its value)."""
    return torch.tensor(values, dtype=torch.float32)[:, None, None, None].expand(-1, 1, size, size).clone()


def ids(images):
    return [float(im[0, 0, 0]) for im in images]


# ----------------------------------------------------------------------------- the image pool


def test_pool_fills_then_returns_new_images_while_not_full():
    pool = ImagePool(3)
    assert ids(pool.query(constant_images([0, 1]))) == [0, 1] and len(pool) == 2
    assert ids(pool.query(constant_images([2]))) == [2] and len(pool) == 3
    assert ids(pool.images) == [0, 1, 2]


def test_pool_size_zero_passes_through():
    pool = ImagePool(0)
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    out = pool.query(x)
    assert torch.equal(out, x) and not out.requires_grad and len(pool) == 0


def test_pool_returns_detached_images_and_stores_copies():
    pool = ImagePool(2)
    x = torch.randn(2, 1, 4, 4, requires_grad=True) * 1.0
    out = pool.query(x)
    assert not out.requires_grad
    with torch.no_grad():
        x.add_(1.0)  # later in-place changes of the caller's tensor do not reach the pool
    assert not torch.equal(pool.images[0], x[0])


def test_pool_half_stored_half_new_and_uniform_replacement():
    """Full pool: each query returns a stored image with p=0.5 (which the new image replaces), chosen uniformly."""
    torch.manual_seed(0)
    size, n = 5, 4000
    pool = ImagePool(size)
    pool.query(constant_images(list(range(size))))
    stored, slots = 0, [0] * size
    for k in range(n):
        new = 1000.0 + k
        before = ids(pool.images)
        (got,) = ids(pool.query(constant_images([new])))
        after = ids(pool.images)
        if got == new:  # returned the new image: pool unchanged
            assert after == before
        else:  # returned a stored one, which the new image replaced in its slot
            slot = before.index(got)
            assert after == before[:slot] + [new] + before[slot + 1:]
            stored, slots[slot] = stored + 1, slots[slot] + 1
    assert len(pool) == size
    assert abs(stored / n - 0.5) < 0.03  # binomial sd 0.008
    for count in slots:  # each slot about stored / size (sd ~ 13 at these counts)
        assert abs(count - stored / size) < 0.2 * stored / size


def test_pool_is_reproducible_under_a_seed():
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        pool = ImagePool(2)
        outs.append(torch.cat([pool.query(constant_images([k, k + 0.5])) for k in range(6)]))
    assert torch.equal(*outs)


def test_pool_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    pool = ImagePool(4)
    for _ in range(3):
        pool.query(torch.randn(2, 3, 8, 8))
    state = pool.state_dict()
    assert state["images"].shape == (4, 3, 8, 8) and state["pool_size"] == 4
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored = ImagePool(4)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(5, 3, 8, 8)
    torch.manual_seed(7)
    want = pool.query(x)
    torch.manual_seed(7)
    assert torch.equal(restored.query(x), want)
    assert all(torch.equal(a, b) for a, b in zip(restored.images, pool.images))


def test_pool_state_dict_empty_and_too_large():
    empty = ImagePool(3).state_dict()
    pool = ImagePool(3)
    pool.load_state_dict(empty)
    assert len(pool) == 0
    full = ImagePool(3)
    full.query(torch.randn(3, 1, 2, 2))
    with pytest.raises(ValueError, match="pool_size 2"):
        ImagePool(2).load_state_dict(full.state_dict())


def test_pool_moves_stored_images_to_the_query_dtype():
    pool = ImagePool(1)
    pool.query(torch.zeros(1, 1, 2, 2))
    torch.manual_seed(0)
    out = pool.query(torch.ones(8, 1, 2, 2, dtype=torch.float64))
    assert out.dtype == torch.float64 and pool.images[0].dtype == torch.float64


def test_objective_state_dict_carries_both_pools():
    torch.manual_seed(0)
    obj = CycleGANObjective(pool_size=3)
    obj.pool_a.query(torch.randn(2, 3, 8, 8))
    obj.pool_b.query(torch.randn(3, 3, 8, 8))
    buf = io.BytesIO()
    torch.save(obj.state_dict(), buf)
    buf.seek(0)
    other = CycleGANObjective(pool_size=3)
    other.load_state_dict(torch.load(buf, weights_only=True))  # strict
    assert len(other.pool_a) == 2 and len(other.pool_b) == 3
    for name in ("pool_a", "pool_b"):
        assert all(torch.equal(a, b) for a, b in zip(getattr(obj, name).images, getattr(other, name).images))
    container = nn.Module()  # as inside a LightningModule: the pools travel under the objective's prefix
    container.objective = obj
    assert "objective._extra_state" in container.state_dict()


# ----------------------------------------------------------------------------- the iteration, same math


class OriginalPool:
    """The original CycleGAN pool rule written out (with torch's RNG instead of python's ``random``)."""

    def __init__(self, size):
        self.size, self.images, self.swaps = size, [], 0

    def query(self, images):
        if self.size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif torch.rand(()).item() > 0.5:
                k = torch.randint(0, self.size, ()).item()
                out.append(self.images[k].clone())
                self.images[k] = image
                self.swaps += 1
            else:
                out.append(image)
        return torch.cat(out)


def gan(pred, target_is_real, mode):
    target = torch.full_like(pred, 1.0 if target_is_real else 0.0)
    if mode == "lsgan":
        return ((pred - target) ** 2).mean()
    return F.binary_cross_entropy_with_logits(pred, target)  # vanilla


def original_step(G_A, G_B, D_A, D_B, opt_g, opt_d, pool_a, pool_b, real_A, real_B, cfg):
    """The original ``optimize_parameters``: six separate generator calls, G step, then D_A and D_B."""
    lambda_A, lambda_B, lambda_idt, mode = cfg["lambda_a"], cfg["lambda_b"], cfg["lambda_identity"], cfg["gan_mode"]
    fake_B = G_A(real_A)
    rec_A = G_B(fake_B)
    fake_A = G_B(real_B)
    rec_B = G_A(fake_A)
    for net in (D_A, D_B):
        net.requires_grad_(False)
    opt_g.zero_grad()
    if lambda_idt > 0:
        loss_idt_A = (G_A(real_B) - real_B).abs().mean() * lambda_B * lambda_idt
        loss_idt_B = (G_B(real_A) - real_A).abs().mean() * lambda_A * lambda_idt
    else:
        loss_idt_A = loss_idt_B = torch.zeros(())
    loss_G_A = gan(D_A(fake_B), True, mode)
    loss_G_B = gan(D_B(fake_A), True, mode)
    loss_cycle_A = (rec_A - real_A).abs().mean() * lambda_A
    loss_cycle_B = (rec_B - real_B).abs().mean() * lambda_B
    loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
    loss_G.backward()
    opt_g.step()
    for net in (D_A, D_B):
        net.requires_grad_(True)
    opt_d.zero_grad()
    fake = pool_b.query(fake_B.detach())
    loss_D_A = 0.5 * (gan(D_A(real_B), True, mode) + gan(D_A(fake.detach()), False, mode))
    loss_D_A.backward()
    fake = pool_a.query(fake_A.detach())
    loss_D_B = 0.5 * (gan(D_B(real_A), True, mode) + gan(D_B(fake.detach()), False, mode))
    loss_D_B.backward()
    opt_d.step()
    out = {"loss_g": loss_G, "loss_g_a": loss_G_A, "loss_g_b": loss_G_B, "loss_cycle_a": loss_cycle_A,
           "loss_cycle_b": loss_cycle_B, "loss_idt_a": loss_idt_A, "loss_idt_b": loss_idt_B, "loss_d_a": loss_D_A,
           "loss_d_b": loss_D_B, "loss_d": loss_D_A + loss_D_B}
    return {k: v.detach() for k, v in out.items()}


def tiny_networks(**kw):
    return cyclegan_networks(ngf=8, ndf=8, n_blocks=2, **kw)


def optimizers(nets):
    return {"generator": torch.optim.Adam([*nets.gen_a.parameters(), *nets.gen_b.parameters()], **ADAM),
            "discriminator": torch.optim.Adam([*nets.disc_a.parameters(), *nets.disc_b.parameters()], **ADAM)}


CASES = {
    "defaults_pool3_b2": ({"pool_size": 3}, 2),
    "no_identity_b1": ({"pool_size": 1, "lambda_identity": 0.0}, 1),
    "vanilla_no_pool": ({"pool_size": 0, "gan_mode": "vanilla", "lambda_a": 5.0, "lambda_b": 7.0}, 2),
}


def null_space_biases(net):
    """Biases of convolutions followed by an instance norm: the norm removes them, so their exact gradient is 0 and
    the computed one is round-off (~1e-15 here), which Adam (eps 1e-8) turns into steps of ~1e-11 of either sign."""
    names = set()
    for prefix, seq in net.named_modules():
        if isinstance(seq, nn.Sequential):
            for i in range(len(seq) - 1):
                if isinstance(seq[i], (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(seq[i + 1], nn.InstanceNorm2d):
                    names.add(f"{prefix}.{i}.bias")
    return names


@pytest.mark.parametrize("case", list(CASES))
def test_iteration_equals_original_algorithm_fp64(case, fp64):
    kwargs, batch = CASES[case]
    torch.manual_seed(0)
    obj = CycleGANObjective(**kwargs)
    cfg = {"lambda_a": obj.lambda_a, "lambda_b": obj.lambda_b, "lambda_identity": obj.lambda_identity,
           "gan_mode": obj.gan_mode}
    ours = tiny_networks()
    assert ours.gen_a.model[1].weight.dtype == torch.float64
    theirs = copy.deepcopy(ours)
    ours_opt, their_opt = optimizers(ours), optimizers(theirs)
    pool_a, pool_b = OriginalPool(obj.pool_a.pool_size), OriginalPool(obj.pool_b.pool_size)
    for it in range(3):
        before = copy.deepcopy(ours)
        real_a, real_b = torch.randn(batch, 3, 32, 32).tanh(), torch.randn(batch, 3, 32, 32).tanh()
        torch.manual_seed(100 + it)  # same pool decisions for both
        got = obj.iteration(ours._asdict(), {"A": real_a, "B": real_b}, ours_opt)
        torch.manual_seed(100 + it)
        want = original_step(*theirs, *their_opt.values(), pool_a, pool_b, real_a, real_b, cfg)
        assert set(got) == set(want)
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-10, rtol=1e-10, msg=f"{name}, iteration {it}")
        for net, mine, other, old in zip(ours._fields, ours, theirs, before):
            moved, null = False, null_space_biases(mine)
            assert len(null) == (1 + 2 + 2 * 2 + 2 if net.startswith("gen") else 3)
            for (name, p), q, p0 in zip(mine.named_parameters(), other.parameters(), old.parameters()):
                if name in null:  # both gradients round-off sized; the parameters differ by Adam's noise only
                    assert p.grad.abs().max() < 1e-12 and q.grad.abs().max() < 1e-12, f"{net}.{name}"
                    torch.testing.assert_close(p, q, atol=1e-8, rtol=0, msg=f"{net}.{name}, iteration {it}")
                    continue
                torch.testing.assert_close(p, q, atol=1e-10, rtol=0, msg=f"{net}.{name}, iteration {it}")
                moved |= bool((p - p0).abs().max() > 1e-6)
            assert moved, f"{net} did not move in iteration {it}"
        for mine, other in ((obj.pool_a, pool_a), (obj.pool_b, pool_b)):
            assert len(mine.images) == len(other.images)
            for a, b in zip(mine.images, other.images):
                torch.testing.assert_close(a, b[0], atol=1e-10, rtol=0)
    if obj.pool_a.pool_size:
        assert pool_a.swaps + pool_b.swaps > 0  # the pools returned stored images: that path was compared too


def test_gradients_reach_only_the_stepped_networks():
    """G step: no D gradients at all; D step: the generators' gradients are left as the G step made them."""
    torch.manual_seed(0)
    nets, obj = tiny_networks(), CycleGANObjective(pool_size=2)
    opt_g, opt_d = optimizers(nets).values()
    gens = [*nets.gen_a.parameters(), *nets.gen_b.parameters()]
    discs = [*nets.disc_a.parameters(), *nets.disc_b.parameters()]
    seen = []

    def backward(loss):
        loss.backward()
        seen.append(([None if p.grad is None else p.grad.clone() for p in gens],
                     [p.grad is not None for p in discs]))

    obj.iteration(nets._asdict(), {"A": torch.randn(1, 3, 32, 32), "B": torch.randn(1, 3, 32, 32)},
                  {"generator": opt_g, "discriminator": opt_d}, backward=backward)
    (g_after_g, d_after_g), (g_after_d, d_after_d) = seen
    assert all(g is not None for g in g_after_g) and not any(d_after_g)
    assert all(d_after_d)
    assert all(torch.equal(a, b) for a, b in zip(g_after_g, g_after_d))
    assert all(p.requires_grad for p in discs)  # unfrozen again after the G step


def test_one_channel_to_three_without_identity():
    torch.manual_seed(0)
    nets = tiny_networks(input_nc=1, output_nc=3)
    obj = CycleGANObjective(lambda_identity=0.0, pool_size=0)
    out = obj.iteration(nets._asdict(), {"A": torch.randn(1, 1, 32, 32), "B": torch.randn(1, 3, 32, 32)},
                        optimizers(nets))
    assert out["loss_idt_a"] == 0 and out["loss_idt_b"] == 0 and torch.isfinite(out["loss_g"])


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown gan_mode 'wgan'; expected one of lsgan, vanilla"):
        CycleGANObjective(gan_mode="wgan")
    with pytest.raises(ValueError, match="lambda_a must be >= 0"):
        CycleGANObjective(lambda_a=-1.0)
    with pytest.raises(ValueError, match="pool_size must be >= 0"):
        CycleGANObjective(pool_size=-1)
    nets = tiny_networks(input_nc=1, output_nc=3)
    with pytest.raises(ValueError, match="lambda_identity=0.5 needs input_nc == output_nc"):
        CycleGANObjective().iteration(nets._asdict(), {"A": torch.randn(1, 1, 32, 32),
                                                       "B": torch.randn(1, 3, 32, 32)}, optimizers(nets))


# ----------------------------------------------------------------------------- the original layout

# From docs/reference-checkpoints.md: the original implementation's state dicts (resnet_9blocks, no antialiasing).
ORIGINAL_GENERATOR_KEYS = """
model.1.weight (64, 3, 7, 7)
model.1.bias (64,)
model.4.weight (128, 64, 3, 3)
model.4.bias (128,)
model.7.weight (256, 128, 3, 3)
model.7.bias (256,)
""" + "".join(
    f"model.{i}.conv_block.1.weight (256, 256, 3, 3)\nmodel.{i}.conv_block.1.bias (256,)\n"
    f"model.{i}.conv_block.5.weight (256, 256, 3, 3)\nmodel.{i}.conv_block.5.bias (256,)\n" for i in range(10, 19)
) + """
model.19.weight (256, 128, 3, 3)
model.19.bias (128,)
model.22.weight (128, 64, 3, 3)
model.22.bias (64,)
model.26.weight (3, 64, 7, 7)
model.26.bias (3,)
"""
ORIGINAL_DISCRIMINATOR_KEYS = """
model.0.weight (64, 3, 4, 4)
model.0.bias (64,)
model.2.weight (128, 64, 4, 4)
model.2.bias (128,)
model.5.weight (256, 128, 4, 4)
model.5.bias (256,)
model.8.weight (512, 256, 4, 4)
model.8.bias (512,)
model.11.weight (1, 512, 4, 4)
model.11.bias (1,)
"""


def parse_layout(text):
    out = {}
    for line in text.strip().splitlines():
        if line.strip():
            key, shape = line.split(" ", 1)
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def random_state(layout, seed):
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(shape, generator=gen) * (0.05 if k.endswith("weight") else 0.1) for k, shape in layout.items()}


class OriginalBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
                                        nn.ReLU(True), nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3),
                                        nn.InstanceNorm2d(dim))

    def forward(self, x):
        return x + self.conv_block(x)


class Original(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


def original_generator(ngf=64, n_blocks=9):
    """The original CycleGAN resnet generator, written out with stock torch layers."""
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for m in (1, 2):
        layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1), nn.InstanceNorm2d(ngf * m * 2),
                   nn.ReLU(True)]
    layers += [OriginalBlock(ngf * 4) for _ in range(n_blocks)]
    for m in (4, 2):
        layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(ngf * m // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    return Original(layers)


def original_discriminator(ndf=64):
    """The original 3-layer PatchGAN (instance norm), with stock torch layers."""
    layers = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    for prev, mult in ((1, 2), (2, 4)):
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(ndf * 4, ndf * 8, 4, padding=1), nn.InstanceNorm2d(ndf * 8), nn.LeakyReLU(0.2, True),
               nn.Conv2d(ndf * 8, 1, 4, padding=1)]
    return Original(layers)


def test_cyclegan_networks_have_the_original_layout_and_counts():
    nets = cyclegan_networks()
    for net, layout, count in ((nets.gen_a, ORIGINAL_GENERATOR_KEYS, 11_378_179),
                               (nets.disc_a, ORIGINAL_DISCRIMINATOR_KEYS, 2_764_737)):
        want = parse_layout(layout)
        got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert got == want
        assert sum(p.numel() for p in net.parameters()) == count == sum(torch.Size(s).numel() for s in want.values())
    assert len(parse_layout(ORIGINAL_GENERATOR_KEYS)) == 48 and len(parse_layout(ORIGINAL_DISCRIMINATOR_KEYS)) == 10
    std = torch.cat([p.flatten() for n, p in nets.gen_a.named_parameters() if n.endswith("weight")]).std()
    assert abs(std - 0.02) < 0.001  # the original's N(0, 0.02) initialisation


@pytest.mark.parametrize("prefix", ["", "module."])
def test_original_state_dicts_load_strict_and_give_identical_outputs(prefix):
    """Exact in float64 (1e-12 of the output's scale); in float32 within K_NETWORK round-off units of the float64
    original (the depth of a 9-block generator; 116 of 12288 elements exceeded a fixed 1e-5 on an AVX2 CPU)."""
    nets = cyclegan_networks()
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64).tanh()
    for ours, original, layout, seed in ((nets.gen_a, original_generator(), ORIGINAL_GENERATOR_KEYS, 1),
                                         (nets.disc_a, original_discriminator(), ORIGINAL_DISCRIMINATOR_KEYS, 2)):
        state = random_state(parse_layout(layout), seed)
        original.load_state_dict(state, strict=True)
        load_network_weights(ours, {prefix + k: v for k, v in state.items()}, strict=True)
        with torch.no_grad():
            want, got32 = original.double()(x), ours(x.float())
            got = ours.double()(x)
        assert got.shape == want.shape
        assert_scaled_close(got, want, 4096, "float64")
        assert_scaled_close(got32, want, K_NETWORK, "float32")
    assert nets.disc_a(torch.zeros(1, 3, 256, 256, dtype=torch.float64)).shape == (1, 1, 30, 30)
