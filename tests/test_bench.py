"""The benchmark harness (benchmarks/bench.py) runs, and our CUT step does less work than the reference's."""

import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_bench_counts_macs_and_ours_skips_the_key_encoding(monkeypatch):
    """The worker counts MACs on the warm-up iterations. CUT: ours does not re-encode (real A, real B) for the
    keys, so its convolutions do fewer MACs than the reference's, by about the convolutions of that encoding.
    (Narrower networks than the paper's: the claim holds for any width, and FlopCounterMode is slow.)"""
    import functools

    from torch.utils.flop_counter import FlopCounterMode

    from cutlight.networks import ResnetGenerator

    monkeypatch.setattr(bench, "ResnetGenerator", functools.partial(bench.ResnetGenerator, ngf=16, n_blocks=3))
    monkeypatch.setattr(bench, "PatchDiscriminator", functools.partial(bench.PatchDiscriminator, ndf=16))

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
        encode = conv_gmac(ResnetGenerator(ngf=16, n_blocks=3).model[:17], torch.zeros(2, 3, 32, 32))
    assert 0.95 * encode < conv["reference"] - conv["ours"] < 1.1 * encode, (conv, encode)


_spec_cmp = importlib.util.spec_from_file_location(
    "compare_steps", Path(__file__).resolve().parents[1] / "benchmarks" / "compare_steps.py")
compare_steps = importlib.util.module_from_spec(_spec_cmp)
_spec_cmp.loader.exec_module(compare_steps)


def test_compare_steps_trains_both_implementations_from_the_same_start(tmp_path, capsys):
    """benchmarks/compare_steps.py: both steps start from the same networks (the same score before training),
    follow the configured learning rate, and the report pairs them by seed."""
    cfg = compare_steps.compose(["experiment=builtin_cpu", "debug=tiny", f"data.cache_dir={tmp_path}",
                                 "model.optimizer.lr=0.0003"])
    runs = [compare_steps.train(cfg, seed=s, impl=impl, eval_every=1, eval_images=4, max_iters=2)
            for s in (0, 1) for impl in ("ours", "reference")]
    for ours, ref in (runs[:2], runs[2:]):
        # iteration 0: the same generator (the reference-style layers round differently: a pixel may flip)
        scores = [{k: v for k, v in run["curve"][0].items() if k != "shift_px"} for run in (ours, ref)]
        assert scores[0] == pytest.approx(scores[1], abs=0.02)
        assert "shift_px" in ours["curve"][0]  # nan when the untrained generator draws no foreground
        assert [c["iter"] for c in ours["curve"]] == [c["iter"] for c in ref["curve"]] == [0, 1, 2]
    _, _, optimizers = compare_steps.make_step("reference", compare_steps.build(cfg, 0)[1])
    assert {g["lr"] for opt in optimizers for g in opt.param_groups} == {0.0003}
    out = tmp_path / "runs.jsonl"
    out.write_text("".join(compare_steps.json.dumps(r) + "\n" for r in runs))
    compare_steps.report([str(out)])
    table = capsys.readouterr().out
    assert "| mean ± sd |" in table and "ours - reference over 2 paired seeds" in table


def test_layout_shift_finds_a_layout_moved_as_a_whole():
    """benchmarks/layout_shift.py: the IoU lost to a layout drawn moved by whole pixels is found and undone."""
    spec = importlib.util.spec_from_file_location(
        "layout_shift", Path(__file__).resolve().parents[1] / "benchmarks" / "layout_shift.py")
    layout_shift = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layout_shift)
    from cutlight.data.builtin import generate_image
    from cutlight.data.shapes import pil_to_batch, shapes_score

    real = pil_to_batch([generate_image("test", "A", i) for i in range(8)])  # (8, 3, 64, 64)
    moved = torch.roll(real, (2, -1), (2, 3))  # drawn 1 px left, 2 px down
    assert shapes_score(real, moved)["content_iou"] < 0.85
    iou, dx, dy = layout_shift.best_moved_iou(real, moved)
    assert (dx, dy) == (-1, 2) and iou == pytest.approx(1.0)
