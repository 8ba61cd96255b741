"""Outcomes over seeds in the sweep report: t-based 95% intervals, paired differences to the baseline, verdicts
against the paper's direction read from the configs (cutlight.reports.intervals)."""

import csv
import math
import statistics

import pytest
from omegaconf import OmegaConf

from cutlight.reports.intervals import mean_ci, seed_comparison, t975, verdict
from cutlight.reports.jobs import Job
from cutlight.reports.sweep import varying_overrides


def test_t_quantiles_and_interval():
    assert t975(1) == pytest.approx(12.706) and t975(2) == pytest.approx(4.303) and t975(30) == pytest.approx(2.042)
    assert t975(60) == pytest.approx(2.000, abs=2e-3) and t975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError, match="degrees of freedom"):
        t975(0)
    values = [0.8, 0.7, 0.9]
    mean, half = mean_ci(values)
    assert mean == pytest.approx(0.8) and half == pytest.approx(4.303 * statistics.stdev(values) / math.sqrt(3))
    assert mean_ci([0.5]) == (0.5, None) and mean_ci([]) == (None, None)
    assert mean_ci([1.0, float("nan"), 3.0])[0] == pytest.approx(2.0)  # a diverged run does not poison the mean


@pytest.mark.parametrize("diff, half, direction, higher, expected", [
    (-0.2, 0.1, "worse", True, "reproduced"),  # score down, interval below 0
    (0.2, 0.1, "worse", True, "opposite"),
    (-0.05, 0.1, "worse", True, "not resolved at 3 seeds"),  # the interval holds 0
    (30.0, 10.0, "worse", False, "reproduced"),  # FID up
    (-30.0, 10.0, "better", False, "reproduced"),
    (0.01, 0.1, "same", True, "not resolved at 3 seeds"),  # equivalence is never claimed from an interval alone
    (0.5, 0.1, "same", True, "opposite"),
    (-0.2, 0.1, None, True, "-"),
    (-0.2, None, "worse", True, "not resolved at 3 seeds"),
])
def test_verdict(diff, half, direction, higher, expected):
    assert verdict(diff, half, 3, direction, higher) == expected


def fake_job(tmp_path, num, overrides, score, fid, paper=None, tested=True, state="finished"):
    path = tmp_path / f"{num}"
    (path / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create({"seed": 0, "paper": paper}), path / ".hydra" / "config.yaml")
    final = {"val/score": score - 0.05, "val/fid": fid + 5}  # the tested checkpoint is what counts when there is one
    if tested:
        with open(path / "test_results.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["checkpoint", "test/score", "test/fid"])
            writer.writeheader()
            writer.writerow({"checkpoint": "best.ckpt", "test/score": score, "test/fid": fid})
    return Job(num=num, overrides=overrides, state=state, path=path, metrics={"final": final})


def test_paired_differences_and_verdicts_over_seeds(tmp_path):
    worse = {"direction": "worse", "note": "external negatives hurt"}
    jobs, num = [], 0
    cut = {0: 0.80, 1: 0.70, 2: 0.75}
    for seed in range(3):
        jobs.append(fake_job(tmp_path, num := num + 1, ["ablation=cut", f"seed={seed}"], cut[seed], 50.0))
        # 0.2 lower than CUT on every seed, although the seeds spread by 0.1: pairing resolves it
        jobs.append(fake_job(tmp_path, num := num + 1, ["ablation=external_negatives", f"seed={seed}"],
                             cut[seed] - 0.2, 60.0, paper=worse))
        # better than CUT on every seed: the opposite of the paper's direction
        jobs.append(fake_job(tmp_path, num := num + 1, ["ablation=last_layer", f"seed={seed}"], cut[seed] + 0.1,
                             40.0, paper={"direction": "worse"}))
        # no consistent difference
        jobs.append(fake_job(tmp_path, num := num + 1, ["ablation=no_idt", f"seed={seed}"],
                             cut[seed] + (0.1 if seed % 2 else -0.1), 50.0, paper={"direction": "worse"}))
    jobs.append(fake_job(tmp_path, 99, ["ablation=no_idt", "seed=3"], 0.1, 90.0, state="failed"))  # not counted
    rows, baseline, primary = seed_comparison(jobs, varying_overrides(jobs))
    assert baseline == "ablation=cut" and primary == "score"
    by = {r.label: r for r in rows}
    assert by["ablation=cut"].verdict == "-" and by["ablation=cut"].paired == {}
    assert by["ablation=cut"].stats["score"][0] == pytest.approx(0.75)  # the tested values, not val/ ones
    diff, half, n = by["ablation=external_negatives"].paired["score"]
    assert (diff, half, n) == (pytest.approx(-0.2), pytest.approx(0.0, abs=1e-12), 3)
    assert by["ablation=external_negatives"].verdict == "reproduced"
    assert by["ablation=last_layer"].verdict == "opposite"
    assert by["ablation=no_idt"].verdict == "not resolved at 3 seeds" and len(by["ablation=no_idt"].seeds) == 3
    assert by["ablation=external_negatives"].paired["fid"][0] == pytest.approx(10.0)
    rows, baseline, primary = seed_comparison(jobs, varying_overrides(jobs), baseline="ablation=no_idt",
                                              primary="fid")
    assert baseline == "ablation=no_idt" and primary == "fid"
    with pytest.raises(ValueError, match="baseline 'ablation=nope' is not a configuration of this sweep"):
        seed_comparison(jobs, varying_overrides(jobs), baseline="ablation=nope")


def test_report_writes_the_comparison_for_any_sweep(tmp_path):
    """A user's sweep without seeds or ablations: rows are override sets, no paired columns, no word 'seed'."""
    from cutlight.reports.intervals import comparison_markdown

    jobs = [fake_job(tmp_path, i, [f"model.objective.lambda_nce={lam}"], 0.5 + i / 10, 50.0 - i, tested=False)
            for i, lam in enumerate((1, 2, 4))]
    rows, baseline, primary = seed_comparison(jobs, varying_overrides(jobs))
    assert baseline is None and primary == "score"
    text = "\n".join(comparison_markdown(rows, baseline, primary, several_seeds=False))
    assert "seed" not in text.lower() and "Per configuration" in text and "verdict" not in text
    assert rows[0].stats["score"] == (pytest.approx(0.45), None)  # final val/ values without a test table
