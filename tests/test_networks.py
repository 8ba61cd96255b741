import pytest
import torch

from cutlight.networks import (
    BlurDownsample,
    BlurUpsample,
    PatchDiscriminator,
    PatchSampler,
    ResnetGenerator,
    init_weights,
    load_network_weights,
)
from helpers import K_LAYER, K_NETWORK, assert_scaled_close

NCE_LAYERS = [0, 4, 8, 12, 16]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def gen():
    return ResnetGenerator()


def test_parameter_counts_match_paper(gen):
    assert n_params(gen) == 11_378_179
    assert n_params(PatchDiscriminator()) == 2_764_737
    assert n_params(PatchSampler(gen.feature_channels(NCE_LAYERS))) == 560_384


def test_encode_shapes_at_256(gen):
    feats = gen.encode(torch.randn(1, 3, 256, 256), NCE_LAYERS)
    assert [tuple(f.shape) for f in feats] == [
        (1, 3, 262, 262),
        (1, 128, 256, 256),
        (1, 256, 128, 128),
        (1, 256, 64, 64),
        (1, 256, 64, 64),
    ]
    assert gen.feature_channels(NCE_LAYERS) == [3, 128, 256, 256, 256]


def test_discriminator_output_30x30():
    assert PatchDiscriminator()(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)


def test_encode_stops_before_decoder():
    g = ResnetGenerator(ngf=8, n_blocks=6)
    calls = []
    for i, layer in enumerate(g.model):
        layer.register_forward_hook(lambda *_, i=i: calls.append(i))
    g.encode(torch.randn(1, 3, 32, 32), [0, 4, 8, 12, 16])
    assert max(calls) == 16
    calls.clear()
    out, feats = g.forward_with_features(torch.randn(1, 3, 32, 32), [4, 0])
    assert max(calls) == len(g.model) - 1 and out.shape == (1, 3, 32, 32)
    assert feats[0].shape[1] == 16 and feats[1].shape[1] == 3  # order of the request is kept


def test_forward_with_features_equals_encode_and_forward():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=8, n_blocks=2).eval()
    x = torch.randn(2, 3, 24, 40)
    out, feats = g.forward_with_features(x, [0, 4, 8, 12])
    torch.testing.assert_close(out, g(x), rtol=0, atol=0)  # the same ops on the same input: identical
    for a, b in zip(feats, g.encode(x, [0, 4, 8, 12])):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_generator_nonsquare_and_options(antialias, norm):
    g = ResnetGenerator(input_nc=1, output_nc=3, ngf=8, n_blocks=1, norm=norm, antialias=antialias,
                        antialias_up=antialias)
    y = g(torch.randn(2, 1, 36, 20))
    assert y.shape == (2, 3, 36, 20)
    assert y.abs().max() <= 1
    d = PatchDiscriminator(input_nc=3, ndf=8, norm=norm, antialias=antialias)
    assert d(torch.randn(2, 3, 64, 48)).shape[:2] == (2, 1)


def test_blur_layers_sizes_and_filters():
    down, up = BlurDownsample(4), BlurUpsample(4)
    assert torch.isclose(down.filt[0].sum(), torch.tensor(1.0))
    assert torch.isclose(up.filt[0].sum(), torch.tensor(4.0))
    x = torch.ones(1, 4, 10, 6)
    # constant images stay constant through blur-pool (filters are normalised)
    torch.testing.assert_close(down(x), torch.ones(1, 4, 5, 3))
    torch.testing.assert_close(up(x), torch.ones(1, 4, 20, 12))


def test_blur_upsample_matches_reference_formula():
    # Reference: replicate-pad 1, depthwise conv_transpose2d(stride 2, padding 2) and crop [1:-1]
    x = torch.randn(1, 2, 5, 7)
    a = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f = (a[:, None] * a[None, :]) / 64 * 4
    ref = torch.zeros(1, 2, 10, 14)
    xp = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    full = torch.zeros(1, 2, 2 * 7 + 2, 2 * 9 + 2)  # scatter-add form of a stride-2 transposed conv
    for i in range(7):
        for j in range(9):
            full[:, :, 2 * i: 2 * i + 4, 2 * j: 2 * j + 4] += xp[:, :, i, j, None, None] * f
    ref = full[:, :, 2:-2, 2:-2][:, :, 1:-1, 1:-1]
    assert_scaled_close(BlurUpsample(2)(x), ref, K_LAYER)


def test_state_dict_layout_matches_reference(gen):
    sd = gen.state_dict()
    assert len(sd) == 52
    assert sd["model.1.weight"].shape == (64, 3, 7, 7)
    assert sd["model.7.filt"].shape == (128, 1, 3, 3)
    assert sd["model.21.filt"].shape == (256, 1, 4, 4)
    assert sd["model.25.filt"].shape == (128, 1, 4, 4)
    assert sd["model.20.conv_block.5.weight"].shape == (256, 256, 3, 3)
    assert sd["model.30.weight"].shape == (3, 64, 7, 7)
    d = PatchDiscriminator().state_dict()
    assert len(d) == 13
    assert {k for k in d if k.endswith("filt")} == {"model.2.filt", "model.6.filt", "model.10.filt"}
    assert d["model.14.weight"].shape == (1, 512, 4, 4)
    s = PatchSampler([3, 128, 256, 256, 256]).state_dict()
    assert len(s) == 20
    assert s["mlp_1.0.weight"].shape == (256, 128) and s["mlp_4.2.weight"].shape == (256, 256)


def test_load_weights_with_module_prefix(tmp_path):
    src, dst = ResnetGenerator(ngf=8, n_blocks=1), ResnetGenerator(ngf=8, n_blocks=1)
    path = tmp_path / "latest_net_G.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    load_network_weights(dst, path)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(src(x), dst(x), rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        load_network_weights(dst, tmp_path / "nothing.pth")


def test_init_xavier_gain_and_zero_bias():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=16, n_blocks=1)
    w = g.model[4].weight  # conv 16 -> 32, 3x3
    fan_in, fan_out = 16 * 9, 32 * 9
    expected_std = 0.02 * (2.0 / (fan_in + fan_out)) ** 0.5
    assert abs(w.std().item() / expected_std - 1) < 0.1
    assert torch.all(g.model[4].bias == 0)
    for t in ["normal", "kaiming", "orthogonal"]:
        init_weights(ResnetGenerator(ngf=4, n_blocks=1), t)


def test_sampler_shapes_norm_and_reuse():
    torch.manual_seed(0)
    s = PatchSampler([3, 16], mlp_dim=32)
    feats = [torch.randn(2, 3, 8, 8), torch.randn(2, 16, 4, 4)]
    out, ids = s(feats, num_patches=20)
    assert out[0].shape == (2, 20, 32) and out[1].shape == (2, 16, 32)  # 20 > 4*4 -> all 16 positions
    assert sorted(ids[1].tolist()) == list(range(16))
    # rows are divided by (norm + 1e-7), as in the reference; MLP outputs are ~1e-4 at init, so not exactly 1
    torch.testing.assert_close(out[0].norm(dim=-1), torch.ones(2, 20), atol=5e-3, rtol=0)
    out2, ids2 = s(feats, patch_ids=ids)
    assert all(torch.equal(a, b) for a, b in zip(ids, ids2))
    torch.testing.assert_close(out[0], out2[0], rtol=0, atol=0)
    # a sampled row is the MLP of the feature column at that position
    pos = ids[0][3].item()
    col = feats[0][1, :, pos // 8, pos % 8]
    expected = s.mlp_0(col)
    assert_scaled_close(out[0][1, 3], expected / (expected.norm() + 1e-7), K_LAYER)


def test_sampler_seed_determinism():
    s = PatchSampler([8], mlp_dim=16)
    feats = [torch.randn(1, 8, 16, 16)]
    torch.manual_seed(1)
    a, ia = s(feats, 32)
    torch.manual_seed(1)
    b, ib = s(feats, 32)
    torch.manual_seed(2)
    c, ic = s(feats, 32)
    assert torch.equal(ia[0], ib[0]) and torch.equal(a[0], b[0])
    assert not torch.equal(ia[0], ic[0])


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ResnetGenerator(norm="group"), "unknown norm 'group'; expected one of instance, batch, none"),
        (lambda: PatchDiscriminator(norm="layer"), "unknown norm 'layer'"),
        (lambda: ResnetGenerator(init_type="uniform"), "unknown init_type 'uniform'; expected one of xavier"),
        (lambda: ResnetGenerator(n_blocks=0), "n_blocks=0 is invalid: expected an integer >= 1"),
        (lambda: ResnetGenerator(num_downsampling=0), "num_downsampling=0 is invalid: expected an integer >= 1"),
    ],
)
def test_bad_construction_args(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_inputs():
    g = ResnetGenerator(ngf=4, n_blocks=1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\); got \(1, 4, 16, 16\)"):
        g(torch.randn(1, 4, 16, 16))
    with pytest.raises(ValueError, match="positive multiples of 4; got 18x16"):
        g(torch.randn(1, 3, 18, 16))
    with pytest.raises(ValueError, match="layer index 40 out of range; expected indices in 0..23"):
        g.encode(torch.randn(1, 3, 16, 16), [0, 40])
    with pytest.raises(ValueError, match="layer index 40"):
        g.feature_channels([40])
    with pytest.raises(ValueError, match="discriminator expects"):
        PatchDiscriminator(ndf=4)(torch.randn(1, 1, 32, 32))
    s = PatchSampler([3])
    with pytest.raises(ValueError, match="feature map 0 has 5 channels; the head was built for 3"):
        s([torch.randn(1, 5, 4, 4)])


@pytest.mark.parametrize("size", [(6, 6), (5, 7), (2, 3)])
def test_blur_downsample_function_gradcheck_and_double_backward(size):
    """The CPU fast path of BlurDownsample: exact gradients and second derivatives (fp64), equal to pad + conv."""
    import torch.nn.functional as F

    blur = BlurDownsample(3).double()
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    # fast_mode: checks the Jacobian along random directions (one pass per input, not one per element)
    assert torch.autograd.gradcheck(blur, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(blur, (x,), fast_mode=True)  # R1 penalties differentiate through D's backward
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), blur.filt, stride=2, groups=3)
    torch.testing.assert_close(blur(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_downsampling, blocks_from, size_multiple", [(1, 8, 2), (2, 12, 4), (3, 16, 8)])
def test_generator_num_downsampling(num_downsampling, blocks_from, size_multiple):
    """Each stage is 4 layers, the bottleneck is 2**num_downsampling times smaller, and the reference-style
    mirror (which reads the number of stages from the weights) computes the same function."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference.cut_reference import RefGenerator

    torch.manual_seed(0)
    g = ResnetGenerator(ngf=4, n_blocks=2, num_downsampling=num_downsampling).eval()
    assert g.size_multiple == size_multiple
    assert type(g.model[blocks_from]).__name__ == "ResnetBlock" and type(g.model[blocks_from - 1]) is BlurDownsample
    x = torch.randn(2, 3, 16, 24, dtype=torch.float64)
    (feat,) = g.encode(x.float(), [blocks_from])
    assert feat.shape == (2, 4 * 2**num_downsampling, 16 // size_multiple, 24 // size_multiple)
    out32 = g(x.float())
    assert out32.shape == x.shape
    want = RefGenerator(g.double().state_dict()).double().eval()(x)  # exact in float64, within K_NETWORK in float32
    assert_scaled_close(g(x), want, 4096)
    assert_scaled_close(out32, want, K_NETWORK)
    g.float()
    with pytest.raises(ValueError, match=f"positive multiples of {size_multiple}"):
        g(torch.randn(1, 3, 16 + size_multiple // 2, 16))
