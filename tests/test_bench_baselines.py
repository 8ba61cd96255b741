"""The benchmark's baseline presets: each times the baseline's iteration against our CUT step in one process."""

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_baseline_presets_are_selected_and_distancegan_skips_batch_1():
    presets = bench.parse_presets("CUT,CycleGAN,DistanceGAN")
    configs = bench._configs("cpu", quick=True, grid=[(256, 1), (128, 2)], presets=presets)
    got = {(c["preset"], c["batch"]) for c in configs if c["precision"] == "fp32"}
    assert got == {("CUT", 1), ("CycleGAN", 1), ("CUT", 2), ("CycleGAN", 2), ("DistanceGAN", 2)}
    assert all(c["impls"] == ["ours", "reference"] for c in configs if c["precision"] == "fp32")
    with pytest.raises(ValueError, match="unknown preset 'UNIT'"):
        bench.parse_presets("CUT,UNIT")
