"""SinCUT's StyleGAN2-style networks: reference layout and sizes, strict loading, shapes, gradients (fp64 gradcheck)."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from cutlight.networks import StyleGAN2Discriminator, StyleGAN2Generator, load_network_weights
from cutlight.networks.stylegan2 import (
    Blur,
    ConvLayer,
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    ResBlock,
    StyledConv,
    blur,
    make_blur_kernel,
)
from helpers import K_LAYER, K_OP, assert_scaled_close

# The reference checkpoints' keys and shapes (docs: reference-checkpoints.md), SinCUT settings.
REFERENCE_G = """
encoder.convs.1.0.weight (80, 3, 1, 1)
encoder.convs.1.1.bias (1, 80, 1, 1)
encoder.convs.2.conv1.0.weight (80, 80, 3, 3)
encoder.convs.2.conv1.1.bias (1, 80, 1, 1)
encoder.convs.2.conv2.0.kernel (4, 4)
encoder.convs.2.conv2.1.weight (160, 80, 3, 3)
encoder.convs.2.conv2.2.bias (1, 160, 1, 1)
encoder.convs.2.skip.0.kernel (4, 4)
encoder.convs.2.skip.1.weight (160, 80, 1, 1)
""" + "".join(f"""
{part}.convs.{i}.conv1.0.weight (160, 160, 3, 3)
{part}.convs.{i}.conv1.1.bias (1, 160, 1, 1)
{part}.convs.{i}.conv2.0.weight (160, 160, 3, 3)
{part}.convs.{i}.conv2.1.bias (1, 160, 1, 1)""" for part, idx in (("encoder", (3, 4, 5)), ("decoder", (0, 1, 2)))
                for i in idx) + """
decoder.convs.3.conv.weight (1, 80, 160, 3, 3)
decoder.convs.3.conv.blur.kernel (4, 4)
decoder.convs.3.noise.weight (1,)
decoder.convs.3.activate.bias (1, 80, 1, 1)
decoder.convs.4.0.weight (3, 80, 1, 1)
decoder.convs.4.1.bias (1, 3, 1, 1)
"""
REFERENCE_D = "convs.0.0.weight (32, 3, 1, 1)\nconvs.0.1.bias (1, 32, 1, 1)\n" + "".join(f"""
convs.{i}.conv1.0.weight ({c}, {c}, 3, 3)
convs.{i}.conv1.1.bias (1, {c}, 1, 1)
convs.{i}.conv2.0.kernel (4, 4)
convs.{i}.conv2.1.weight ({o}, {c}, 3, 3)
convs.{i}.conv2.2.bias (1, {o}, 1, 1)
convs.{i}.skip.0.kernel (4, 4)
convs.{i}.skip.1.weight ({o}, {c}, 1, 1)""" for i, c, o in ((1, 32, 64), (2, 64, 128), (3, 128, 256), (4, 256, 384))) + """
final_conv.0.weight (384, 384, 3, 3)
final_conv.1.bias (1, 384, 1, 1)
final_linear.0.weight (384, 6144)
final_linear.0.bias (384,)
final_linear.1.weight (1, 384)
final_linear.1.bias (1,)
"""


def parse(listing: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in listing.strip().splitlines():
        if line.strip():
            key, shape = line.split(" ", 1)
            out[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return StyleGAN2Generator(), StyleGAN2Discriminator()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_layout_and_parameter_counts(nets):
    g, d = nets
    for net, listing, entries, params in ((g, REFERENCE_G, 39, 3_068_404), (d, REFERENCE_D, 36, 5_885_473)):
        want = parse(listing)
        got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        assert len(want) == entries and got == want  # same keys, same order-independent shapes
        assert list(got) == list(want)  # and the same order
        assert n_params(net) == params
    assert g.channels == {32: 160, 64: 80} and g.size_multiple == 2


def test_strict_load_of_a_reference_state_dict(nets, tmp_path):
    g, d = nets
    for net, listing in ((g, REFERENCE_G), (d, REFERENCE_D)):
        torch.manual_seed(1)
        state = {k: (make_blur_kernel([1, 3, 3, 1], 4 if ".conv.blur." in k else 1) if k.endswith("kernel")
                     else torch.randn(shape)) for k, shape in parse(listing).items()}
        torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "net.pth")
        fresh = type(net)()
        load_network_weights(fresh, tmp_path / "net.pth")  # strict, with the DataParallel prefix
        for k, v in fresh.state_dict().items():
            assert torch.equal(v, state[k]), k
        with pytest.raises(RuntimeError):  # strict loading does reject a missing entry
            type(net)().load_state_dict({k: v for k, v in state.items() if "kernel" not in k})


def test_shapes_at_reference_settings(nets):
    g, d = nets
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        y, feats = g.forward_with_features(x, [0, 2, 4])
        assert y.shape == (2, 3, 64, 64)
        assert [tuple(f.shape) for f in feats] == [(2, 3, 64, 64), (2, 160, 32, 32), (2, 160, 32, 32)]
        assert torch.equal(feats[0], x)  # layer 0 is the input image
        assert g.feature_channels([0, 2, 4]) == [3, 160, 160]
        assert g.feature_channels(range(g.num_layers)) == [3, 80, 160, 160, 160, 160, 160, 160, 160, 80, 3]
        assert d(x).shape == (2, 1)
        assert g(torch.rand(1, 3, 48, 80)).shape == (1, 3, 48, 80)  # fully convolutional, not square


def test_any_even_size_and_odd_sizes_rejected():
    torch.manual_seed(0)
    g = StyleGAN2Generator(ngf=1, n_blocks=2, crop_size=32)
    for h, w in ((2, 2), (6, 10), (34, 18)):
        assert g(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)
    # Why only even sizes: the downsampling blocks map H to floor(H / 2) and the upsampling conv doubles exactly.
    x = torch.randn(1, 3, 7, 9)
    low = g.encoder.convs(x)
    assert low.shape[-2:] == (3, 4) and g.decoder.convs(low).shape[-2:] == (6, 8)
    with pytest.raises(ValueError, match="multiples of 2"):
        g(x)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        g(torch.randn(1, 1, 8, 8))


def test_upsampling_conv_doubles_every_size():
    up = ModulatedConv2d(2, 3, 3, upsample=True)
    for h in range(1, 8):
        assert up(torch.randn(1, 2, h, h + 1)).shape == (1, 3, 2 * h, 2 * h + 2)


def test_encode_stops_after_deepest_layer_and_checks_indices():
    g = StyleGAN2Generator(ngf=1, n_blocks=4, crop_size=32)
    calls = []
    for i, layer in enumerate(g.numbered_layers()):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    feats = g.encode(torch.randn(1, 3, 16, 16), [4, 0, 2])
    assert max(calls) == 4 and [f.shape[1] for f in feats] == g.feature_channels([4, 0, 2]) == [32, 3, 32]
    calls.clear()
    out, _ = g.forward_with_features(torch.randn(1, 3, 16, 16), [0])
    assert max(calls) == g.num_layers - 1 and out.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="out of range"):
        g.encode(torch.randn(1, 3, 16, 16), [g.num_layers])


def test_channel_rules():
    g = StyleGAN2Generator(ngf=64, load_size=256, crop_size=256, num_downsampling=2)
    assert g.channels == {64: 512, 128: 256, 256: 128}  # min(512, round(c * 64 / 32))
    assert StyleGAN2Discriminator(ndf=64, size=16).convs[0][0].weight.shape[0] == 384  # min(384, 1024)
    with pytest.raises(ValueError, match="power of two"):
        StyleGAN2Discriminator(size=48)
    with pytest.raises(ValueError, match="resolutions in 4..1024"):
        StyleGAN2Generator(crop_size=8, num_downsampling=2)


def test_discriminator_input_check():
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        StyleGAN2Discriminator(ndf=1, size=16)(torch.randn(1, 3, 32, 32))


def test_initialisation_is_stylegan2_not_xavier(nets):
    g, d = nets
    weights = [p for n, p in [*g.named_parameters(), *d.named_parameters()] if n.endswith("weight") and p.dim() > 1]
    assert all(0.9 < w.std().item() < 1.1 for w in weights if w.numel() > 1000)  # N(0, 1), scaled at run time
    assert all(p.abs().max() == 0 for n, p in g.named_parameters() if n.endswith("bias") or "noise" in n)


def test_blur_kernel_and_upfirdn_semantics():
    k = make_blur_kernel([1, 3, 3, 1])
    assert torch.allclose(k, torch.outer(torch.tensor([1, 3, 3, 1.0]), torch.tensor([1, 3, 3, 1.0])) / 64)
    assert make_blur_kernel([1, 3, 3, 1], 4).sum().item() == pytest.approx(4.0)
    # upfirdn2d (up = down = 1) = pad, then a true convolution (flipped kernel): check with an asymmetric kernel
    kernel = torch.arange(1.0, 7.0).view(2, 3)
    x = torch.randn(2, 3, 5, 6)
    got = blur(x, kernel, (2, 1))
    xp = F.pad(x, (2, 1, 2, 1))
    oh, ow = 5 + 3 - 2 + 1, 6 + 3 - 3 + 1
    want = sum(xp[..., a: a + oh, b: b + ow] * kernel[1 - a, 2 - b] for a in range(2) for b in range(3))
    assert_scaled_close(got, want, K_LAYER)  # conv vs shifted sums: round-off
    assert dict(Blur([1, 3, 3, 1], (1, 1)).named_buffers()).keys() == {"kernel"}


def test_demodulated_weight_has_unit_norm_per_output_channel():
    conv = ModulatedConv2d(5, 4, 3)
    w = conv.effective_weight()
    assert_scaled_close(w.pow(2).sum((1, 2, 3)), torch.ones(4), K_OP)


def _gradcheck(module, *inputs):
    """gradcheck w.r.t. the inputs and every parameter of ``module`` (fp64)."""
    module = module.double()
    names = [n for n, _ in module.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in module.named_parameters()]
    inputs = [x.double().requires_grad_() for x in inputs]

    def fn(*args):
        return functional_call(module, dict(zip(names, args[len(inputs):])), tuple(args[: len(inputs)]))

    assert torch.autograd.gradcheck(fn, (*inputs, *params), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["equal_conv", "equal_linear", "conv_down", "modulated", "modulated_up",
                                  "styled_up", "resblock_down"])
def test_gradcheck_fp64(case):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5)
    modules = {
        "equal_conv": EqualConv2d(3, 2, 3, padding=1),
        "equal_linear": EqualLinear(7, 4, activate=True),
        "conv_down": ConvLayer(3, 2, 3, downsample=True),
        "modulated": ModulatedConv2d(3, 2, 3),
        "modulated_up": ModulatedConv2d(3, 2, 3, upsample=True),
        "styled_up": StyledConv(3, 2, 3, upsample=True, inject_noise=False),
        "resblock_down": ResBlock(3, 2, downsample=True),
    }
    module = modules[case]
    for name, p in module.named_parameters():  # non-zero biases so the leaky ReLU's kink is not at the data
        if "bias" in name:
            p.data.normal_()
    _gradcheck(module, torch.randn(3, 7) if case == "equal_linear" else x)


def test_noise_comes_from_torch_rng_on_every_call():
    torch.manual_seed(0)
    g = StyleGAN2Generator(ngf=1, n_blocks=2, crop_size=32).eval()
    g.decoder.convs[1].noise.weight.data.fill_(0.5)
    x = torch.randn(1, 3, 8, 8)
    torch.manual_seed(3)
    y1 = g(x)
    torch.manual_seed(3)
    assert torch.equal(g(x), y1)
    assert not torch.equal(g(x), y1)  # a new draw
    quiet = StyleGAN2Generator(ngf=1, n_blocks=2, crop_size=32, inject_noise=False)
    quiet.load_state_dict(g.state_dict())
    assert torch.equal(quiet(x), quiet(x))


def test_bf16_autocast_forward_and_backward_on_cpu():
    torch.manual_seed(0)
    g, d = StyleGAN2Generator(ngf=1, n_blocks=2, crop_size=32), StyleGAN2Discriminator(ndf=1, size=16)
    x = torch.randn(2, 3, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = d(g(x))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in [*g.parameters(), *d.parameters()])
