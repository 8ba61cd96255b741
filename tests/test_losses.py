import math

import pytest
import torch
import torch.nn.functional as F

from cutlight.losses import PatchNCELoss, discriminator_loss, generator_loss, patch_nce_loss
from cutlight.networks import PatchSampler, ResnetGenerator
from helpers import K_LAYER, K_OP, assert_scaled_close


def slow_reference_nce(q, k, tau, negatives):
    """Per query: positive logit, the other patches (excluding itself) as negatives, CE with target 0."""
    b, s, _ = q.shape
    out = torch.zeros(b, s, dtype=torch.float64)
    q, k = q.double(), k.double()
    for bi in range(b):
        for si in range(s):
            pos = (q[bi, si] * k[bi, si]).sum()
            if negatives == "image":
                neg = [k[bi, j] for j in range(s) if j != si]
            else:
                neg = [k[bj, j] for bj in range(b) for j in range(s) if (bj, j) != (bi, si)]
            logits = torch.stack([pos] + [(q[bi, si] * n).sum() for n in neg]) / tau
            out[bi, si] = -logits[0] + torch.logsumexp(logits, 0)
    return out


@pytest.mark.parametrize("negatives", ["image", "batch"])
def test_patch_nce_equals_loop_reference(negatives):
    torch.manual_seed(0)
    q = F.normalize(torch.randn(3, 7, 16), dim=-1)
    k = F.normalize(torch.randn(3, 7, 16), dim=-1)
    got = patch_nce_loss(q, k, 0.07, negatives)
    assert got.shape == (3, 7)
    assert_scaled_close(got, slow_reference_nce(q, k, 0.07, negatives), K_LAYER)  # fp32 vs the fp64 loop
    got64 = patch_nce_loss(q.double(), k.double(), 0.07, negatives)
    assert_scaled_close(got64, slow_reference_nce(q, k, 0.07, negatives), K_LAYER)  # exact in fp64


def test_negative_modes_differ_only_with_batch_gt_1():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(1, 5, 8), dim=-1)
    k = F.normalize(torch.randn(1, 5, 8), dim=-1)
    assert_scaled_close(patch_nce_loss(q, k, negatives="image"), patch_nce_loss(q, k, negatives="batch"), K_OP)
    q2, k2 = torch.cat([q, q.flip(1)]), torch.cat([k, k.flip(1)])
    assert not torch.allclose(patch_nce_loss(q2, k2, negatives="image"), patch_nce_loss(q2, k2, negatives="batch"))


def test_perfect_match_gives_low_loss():
    k = F.normalize(torch.randn(2, 64, 32), dim=-1)
    assert patch_nce_loss(k.clone(), k).mean() < patch_nce_loss(k.roll(1, dims=1), k).mean()
    assert patch_nce_loss(k.clone(), k).mean() < math.log(64)


def test_no_gradient_into_keys_and_generator_gets_query_gradients():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=8, n_blocks=2)
    s = PatchSampler(g.feature_channels([0, 4, 8]), mlp_dim=16)
    x = torch.randn(2, 3, 16, 16)
    fake = g(x)
    x.requires_grad_(True)  # so that every source feature is part of a graph we can inspect
    src_feats = g.encode(x, [0, 4, 8])
    for f in src_feats:
        f.retain_grad()
    feats_k, ids = s(src_feats, 8)
    feats_q, _ = s(g.encode(fake, [0, 4, 8]), patch_ids=ids)
    loss = PatchNCELoss()(feats_q, feats_k)
    loss.backward()
    assert all(f.grad is None for f in src_feats)  # nothing flows back into the key branch
    assert g.model[1].weight.grad is not None and g.model[1].weight.grad.abs().sum() > 0
    assert s.mlp_1[0].weight.grad.abs().sum() > 0


def test_patch_nce_module_averages_layers():
    torch.manual_seed(0)
    qs = [F.normalize(torch.randn(2, 4, 8), dim=-1) for _ in range(3)]
    ks = [F.normalize(torch.randn(2, 4, 8), dim=-1) for _ in range(3)]
    expected = sum(patch_nce_loss(q, k).mean() for q, k in zip(qs, ks)) / 3
    assert_scaled_close(PatchNCELoss()(qs, ks), expected, K_OP)


def test_gan_losses():
    p = torch.tensor([[0.5, -1.0], [2.0, 0.0]])
    assert_scaled_close(generator_loss(p, "lsgan"), ((p - 1) ** 2).mean(), K_OP)
    assert_scaled_close(discriminator_loss(p, -p, "lsgan"), 0.5 * (((p - 1) ** 2).mean() + (p**2).mean()), K_OP)
    assert_scaled_close(generator_loss(p, "vanilla"), F.softplus(-p).mean(), K_OP)
    assert_scaled_close(generator_loss(p, "nonsaturating"), F.softplus(-p).mean(), K_OP)
    assert_scaled_close(discriminator_loss(p, p, "vanilla"), 0.5 * (F.softplus(-p).mean() + F.softplus(p).mean()), K_OP)
    assert_scaled_close(generator_loss(p, "hinge"), -p.mean(), K_OP)
    assert_scaled_close(discriminator_loss(p, p, "hinge"), 0.5 * (F.relu(1 - p).mean() + F.relu(1 + p).mean()), K_OP)


def test_bad_loss_args():
    q = torch.randn(1, 2, 4)
    with pytest.raises(ValueError, match="unknown negatives 'bank'; expected one of image, batch"):
        patch_nce_loss(q, q, negatives="bank")
    with pytest.raises(ValueError, match="unknown gan_mode 'wgan'; expected one of lsgan, vanilla, nonsaturating, hinge"):
        generator_loss(q, "wgan")
    with pytest.raises(ValueError, match="unknown gan_mode 'foo'"):
        discriminator_loss(q, q, "foo")
    with pytest.raises(ValueError, match=r"\(B, S, C\)"):
        patch_nce_loss(q, q[:, :1])


def test_l2_normalize_zero_row_has_finite_gradient_and_same_values():
    from cutlight.networks.sampler import l2_normalize

    x = torch.tensor([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = l2_normalize(x)
    ref = x.detach() / (x.detach().pow(2).sum(-1, keepdim=True).sqrt() + 1e-7)
    torch.testing.assert_close(y.detach(), ref, rtol=0, atol=0)
    (y * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    assert torch.isfinite(x.grad).all()  # the naive formula gives NaN for the zero row (sqrt'(0) = inf)
    assert torch.autograd.gradcheck(l2_normalize, (torch.randn(4, 5, dtype=torch.float64, requires_grad=True),))
