"""The benchmark's baseline presets: each times the baseline's iteration against our CUT step in one process."""

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.fixture
def tiny_networks(monkeypatch):
    """The wiring is under test, not the paper-size networks: shrink them (and use one thread) to keep this fast."""
    monkeypatch.setattr(bench, "ResnetGenerator", functools.partial(bench.ResnetGenerator, ngf=8, n_blocks=1))
    monkeypatch.setattr(bench, "PatchDiscriminator", functools.partial(bench.PatchDiscriminator, ndf=8))
    monkeypatch.setattr(bench, "cyclegan_networks", functools.partial(bench.cyclegan_networks, ngf=8, ndf=8,
                                                                      n_blocks=1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("preset, batch", [("CycleGAN", 1), ("GcGAN", 1), ("DistanceGAN", 2), ("SelfDistance", 1)])
def test_baseline_preset_is_timed_against_cut(preset, batch, tiny_networks):
    cfg = {"preset": preset, "size": 32, "batch": batch, "precision": "fp32", "device": "cpu", "mode": "time",
           "impls": ["ours", "reference"], "warmup": 0, "iters": 1, "inference_reps": 1}
    out = bench.worker(cfg)
    assert len(out["times"]["ours"]) == len(out["times"]["reference"]) == 1 and out["images_per_s"] > 0
    step, G, x, _ = bench._setup(cfg, "ours")
    assert G.model[1].out_channels == 8 and x.shape == (batch, 3, 32, 32)
    if preset == "CycleGAN":  # the original layout (no blur-pool buffers)
        assert not any(k.endswith("filt") for k in G.state_dict())


def test_baseline_presets_are_selected_and_distancegan_skips_batch_1():
    presets = bench.parse_presets("CUT,CycleGAN,DistanceGAN")
    configs = bench._configs("cpu", quick=True, grid=[(256, 1), (128, 2)], presets=presets)
    got = {(c["preset"], c["batch"]) for c in configs if c["precision"] == "fp32"}
    assert got == {("CUT", 1), ("CycleGAN", 1), ("CUT", 2), ("CycleGAN", 2), ("DistanceGAN", 2)}
    assert all(c["impls"] == ["ours", "reference"] for c in configs if c["precision"] == "fp32")
    with pytest.raises(ValueError, match="unknown preset 'UNIT'"):
        bench.parse_presets("CUT,UNIT")
