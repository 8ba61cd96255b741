"""The benchmark harness (benchmarks/bench.py) runs, and our CUT step does less work than the reference's."""

import importlib.util
from pathlib import Path

import torch

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_bench_worker_times_both_implementations():
    cfg = {"preset": "FastCUT", "size": 32, "batch": 1, "precision": "fp32", "device": "cpu", "mode": "time",
           "impls": ["ours", "reference"], "warmup": 0, "iters": 1, "inference_reps": 1}
    out = bench.worker(cfg)
    assert len(out["times"]["ours"]) == 1 and out["images_per_s"] > 0


def test_bench_counts_macs_and_ours_skips_the_key_encoding():
    """The worker counts MACs on the warm-up iterations. CUT: ours does not re-encode (real A, real B) for the
    keys, so its convolutions do fewer MACs than the reference's, by about the convolutions of that encoding."""
    from torch.utils.flop_counter import FlopCounterMode

    from cutlight.networks import ResnetGenerator

    cfg = {"preset": "CUT", "size": 32, "batch": 1, "precision": "fp32", "device": "cpu", "mode": "time",
           "impls": ["ours", "reference"], "warmup": 1, "iters": 1, "inference_reps": 1}
    macs = bench.worker(cfg)["gmac_per_iter"]
    assert set(macs) == {"ours", "reference"} and min(macs.values()) > 0

    def conv_gmac(run, *args) -> float:
        with FlopCounterMode(display=False) as flops:
            run(*args)
        return sum(v for k, v in flops.get_flop_counts()["Global"].items() if "convolution" in str(k)) / 2e9

    conv = {impl: conv_gmac(bench._setup(cfg, impl)[0], 0) for impl in ("ours", "reference")}
    with torch.no_grad():  # the reference's extra key encoding: layers 0..16 on (real A, real B)
        encode = conv_gmac(ResnetGenerator().model[:17], torch.zeros(2, 3, 32, 32))
    assert 0.95 * encode < conv["reference"] - conv["ours"] < 1.1 * encode, (conv, encode)


def test_bench_single_implementation_reports_its_peak():
    cfg = {"preset": "CUT", "size": 32, "batch": 1, "precision": "fp32", "device": "cpu", "mode": "time",
           "impls": ["ours"], "warmup": 0, "iters": 1, "inference_reps": 1}
    out = bench.worker(cfg)
    assert out["peak_mb"] > 0 and out["images_per_s"] > 0  # timed alone: no separate memory process needed
