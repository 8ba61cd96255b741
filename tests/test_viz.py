import pytest
import torch

from cutlight.networks import PatchSampler, ResnetGenerator
from cutlight.viz import feature_pca, similarity_map


def test_similarity_map_peaks_at_query_for_identical_images():
    torch.manual_seed(0)
    g = ResnetGenerator(ngf=8, n_blocks=1)
    layers = [0, 4]
    s = PatchSampler(g.feature_channels(layers), mlp_dim=16)
    x = torch.randn(1, 3, 16, 16)
    sim = similarity_map(g, s, x, x, layers, layer=4, query=(5, 7))
    assert sim.shape == (16, 16)
    assert sim.argmax().item() == 5 * 16 + 7 and sim.max() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="outside the 16x16"):
        similarity_map(g, s, x, x, layers, layer=4, query=(20, 0))


def test_feature_pca_shapes_and_range():
    feats = [torch.randn(8, 6, 5), torch.randn(8, 4, 4)]
    out = feature_pca(feats)
    assert [o.shape for o in out] == [(3, 6, 5), (3, 4, 4)]
    assert all(o.min() >= 0 and o.max() <= 1 for o in out)
