"""The sweep report (``cutlight.reports``) and the per-run record (``cutlight.cli.run_record``).

Fast tests build sweep folders by hand (Hydra's layout: ``<job>/.hydra/overrides.yaml``, ``<job>/csv/metrics.csv``,
``<job>/summary.json``); the slow test runs a real multirun with a failing job through ``python -m cutlight.cli.train``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cutlight.cli.report import main
from cutlight.cli.run_record import RunRecord
from cutlight.reports.jobs import NotASweepError, collect_jobs
from cutlight.reports.records import SUMMARY_FILE, read_metrics_csv, summarize_metrics
from cutlight.reports.sweep import seed_table
from cutlight.reports.sweep import write_report as report
from train_cli import TINY, job_dirs, output, run_module, run_train

HEADER = ["epoch", "perf/peak_mem_mb", "perf/sec_per_iter", "step", "train/loss_g_gan", "train/loss_nce",
          "val/content_iou", "val/fid", "val/kid"]


def metric_rows(fids, ious=None, steps_per_epoch=4):
    """CSV rows like Lightning's: training rows each step, one validation row per epoch."""
    rows = []
    for epoch, fid in enumerate(fids):
        for i in range(steps_per_epoch):
            step = epoch * steps_per_epoch + i
            rows.append({"epoch": epoch, "step": step, "perf/sec_per_iter": 0.1 * (i + 1), "perf/peak_mem_mb": 100 + step,
                         "train/loss_g_gan": 1.0 / (step + 1), "train/loss_nce": 5.0 - 0.1 * step})
        rows.append({"epoch": epoch, "step": epoch * steps_per_epoch + steps_per_epoch - 1, "val/fid": fid,
                     "val/kid": fid / 100, **({"val/content_iou": ious[epoch]} if ious else {})})
    return rows


def make_job(sweep: Path, num: int, overrides: list[str], rows=None, state="finished", error=None, log=""):
    """A job folder as Hydra, the CSV logger and RunRecord leave it (``state=None``: no summary.json)."""
    job = sweep / f"{num}_{','.join(overrides)}"
    (job / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}), job / ".hydra" / "hydra.yaml")
    OmegaConf.save(OmegaConf.create({"seed": 0, "logger": {"csv": {}}}), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"trainer": {"max_epochs": 2}}), job / "config_resolved.yaml")
    (job / "train.log").write_text(log)
    if rows is not None:
        (job / "csv").mkdir()
        with open(job / "csv" / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=HEADER)
            writer.writeheader()
            writer.writerows(rows)
    if state is not None:
        summary = {"state": state, "wall_s": 12.5, **({"error": error} if error else {})}
        (job / SUMMARY_FILE).write_text(json.dumps(summary))
    return job


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------- cutlight.reports.records
def test_summarize_metrics_final_best_and_pace(tmp_path):
    rows = metric_rows([50.0, 30.0, float("nan")], ious=[0.2, 0.5, 0.4])
    s = summarize_metrics(rows)
    assert math.isnan(s["final"]["val/fid"])  # the last validation, even when it diverged
    assert s["best"]["val/fid"] == 30.0 and s["best_step"]["val/fid"] == 7 and s["best_epoch"]["val/fid"] == 1
    assert s["best"]["val/content_iou"] == 0.5 and s["final"]["val/content_iou"] == 0.4  # higher is better
    assert s["steps"] == 11 and s["epochs"] == 3
    # the test after fit logs at the next epoch index: it is not a fourth epoch (the report said "6/5" of 5)
    assert summarize_metrics([*rows, {"epoch": 3, "step": 11, "test/fid": 40.0}])["epochs"] == 3
    assert s["sec_per_iter"] == pytest.approx(statistics.median([0.1, 0.2, 0.3, 0.4] * 3))
    assert s["peak_mem_mb"] == 111
    assert "val/score" not in s["final"]


def test_read_metrics_csv_skips_empty_and_cut_off_cells(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,val/fid\n0,3,41.5\n0,4,\n1,7,3.2e")  # unparsable cell: skipped
    assert read_metrics_csv(path) == [{"epoch": 0, "step": 3, "val/fid": 41.5}, {"epoch": 0, "step": 4},
                                      {"epoch": 1, "step": 7}]


class _Return:  # hydra.core.utils.JobReturn's fields that RunRecord reads
    def __init__(self, status, value):
        self.status, self._return_value = status, value

    @property
    def return_value(self):
        if isinstance(self._return_value, Exception):
            raise self._return_value
        return self._return_value


def test_run_record_writes_running_then_failed_with_error(tmp_path, caplog):
    from hydra.core.utils import JobStatus

    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}, "job": {"num": 3},
                                         "overrides": {"task": ["seed=1"]}}})
    record = RunRecord()
    record.on_job_start(config=config)
    first = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert first["state"] == "running" and first["job_num"] == 3 and first["overrides"] == ["seed=1"]
    try:
        raise ValueError("unknown gan_mode 'foo'")
    except ValueError as e:
        error = e
    log_file = logging.FileHandler(tmp_path / "train.log")  # as Hydra's job logging: a console and a file
    logging.getLogger().addHandler(log_file)
    try:
        record.on_job_end(config=config, job_return=_Return(JobStatus.FAILED, error))
    finally:
        logging.getLogger().removeHandler(log_file)
        log_file.close()
    done = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert done["state"] == "failed" and done["error"] == "ValueError: unknown gan_mode 'foo'"
    assert "Traceback" in done["traceback"] and done["wall_s"] >= 0 and done["metrics"] is None
    # the console: one line (Hydra prints the error itself); the run's log file: the line and the traceback
    assert "run failed: ValueError: unknown gan_mode 'foo'" in caplog.text and "Traceback" not in caplog.text
    logged = (tmp_path / "train.log").read_text()
    assert "run failed: ValueError: unknown gan_mode 'foo'" in logged and "Traceback" in logged

    record.on_job_start(config=config)
    record.on_job_end(config=config, job_return=_Return(JobStatus.COMPLETED, 12.5))
    done = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert done["state"] == "finished" and done["optimized_metric"] == 12.5 and "error" not in done


def test_run_record_only_on_rank_zero(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    config = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}, "job": {"num": 0},
                                         "overrides": {"task": []}}})
    RunRecord().on_job_start(config=config)
    assert not (tmp_path / SUMMARY_FILE).exists()


# -------------------------------------------------------------------------------------- cutlight.reports.sweep
@pytest.fixture
def sweep(tmp_path):
    """A sweep with one job in each situation the report must show."""
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["objective=cut"], metric_rows([40.0, 35.0], ious=[0.3, 0.6]))
    make_job(sweep, 1, ["objective=fastcut"], metric_rows([45.0, 50.0], ious=[0.2, 0.1]))
    make_job(sweep, 2, ["objective=cut_no_idt"], None, state="failed", error="ValueError: unknown gan_mode 'foo'")
    make_job(sweep, 3, ["objective=cut_last_layer"], metric_rows([60.0]), state="running")  # killed after epoch 0
    make_job(sweep, 4, ["objective=cut_patches"], None)  # finished, but its CSV logger was off
    make_job(sweep, 5, ["objective=cut_external_negatives"], metric_rows([44.0, 42.0]), state=None,
             log="...\ncutlight run finished: somewhere\n")  # a run from before summary.json
    broken = make_job(sweep, 6, ["objective=fastcut", "seed=1"], metric_rows([1.0]))
    (broken / ".hydra" / "overrides.yaml").write_text("[unclosed")
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper"
                                                                      ".BasicSweeper", "params": None},
                                               "overrides": {"task": [
                                                   "objective=cut,fastcut,cut_no_idt,cut_last_layer,cut_patches,"
                                                   "cut_external_negatives,fastcut,cut"]}}}),
                   sweep / "multirun.yaml")
    return sweep


def test_report_rows_for_every_job_state(sweep, capsys):
    path = report(sweep, wandb="off")
    rows = {int(r["num"]): r for r in read_csv(path)}
    assert sorted(rows) == list(range(8))
    assert [rows[i]["state"] for i in range(8)] == ["finished", "finished", "failed", "unfinished", "finished",
                                                   "finished", "unreadable", "not started"]
    assert float(rows[0]["fid_final"]) == 35.0 and float(rows[0]["fid_best"]) == 35.0
    assert float(rows[1]["fid_final"]) == 50.0 and float(rows[1]["fid_best"]) == 45.0
    assert rows[1]["fid_best_step"] == "3" and float(rows[1]["content_iou_best"]) == 0.2
    assert float(rows[0]["kid_final"]) == pytest.approx(0.35) and float(rows[0]["wall_s"]) == 12.5
    assert rows[2]["error"] == "ValueError: unknown gan_mode 'foo'" and rows[2]["fid_final"] == ""
    assert "no end record" in rows[3]["error"] and float(rows[3]["fid_final"]) == 60.0  # partial metrics kept
    assert "no metrics.csv" in rows[4]["error"]
    assert rows[5]["error"] == "" and float(rows[5]["fid_final"]) == 42.0  # judged finished from its log
    assert "overrides.yaml" in rows[6]["error"]
    assert rows[7]["overrides"] == "objective=cut" and "never launched" in rows[7]["error"]
    assert rows[0]["label"] == "objective=cut" and rows[0]["objective"] == "cut"  # one column per swept key
    md = (sweep / "summary.md").read_text()
    assert "| 2 | `objective=cut_no_idt` | failed |" in md and "unknown gan_mode 'foo'" in md
    assert "4 finished, 1 failed, 1 unfinished, 1 not started, 1 unreadable (8 jobs)" in md
    for png in ("ablation.png", "curves.png"):
        assert (sweep / png).stat().st_size > 5000
    assert not (sweep / "seeds.csv").exists()  # no seed axis (seed=1 only in the unreadable job)
    assert "overwriting" not in capsys.readouterr().out


def test_report_announces_overwrites(sweep, capsys):
    report(sweep, wandb="off")
    capsys.readouterr()
    report(sweep, wandb="off")
    out = capsys.readouterr().out
    for name in ("summary.csv", "summary.md", "ablation.png", "curves.png"):
        assert f"overwriting {name}" in out


def test_seed_axis_mean_and_std(tmp_path):
    sweep = tmp_path / "sweep"
    fids = {("cut", 0): [40, 30], ("cut", 1): [36, 34], ("cut", 2): [38, 39], ("fastcut", 0): [50, 45],
            ("fastcut", 1): [48, 47]}
    for num, ((loss, seed), fid) in enumerate(fids.items()):
        make_job(sweep, num, [f"objective={loss}", f"seed={seed}", "debug=tiny"], metric_rows(fid, ious=[0.5, 0.5]))
    make_job(sweep, 9, ["objective=fastcut", "seed=2", "debug=tiny"], None, state="failed", error="RuntimeError: x")
    report(sweep, wandb="off")
    rows = {r["label"]: r for r in read_csv(sweep / "seeds.csv")}
    assert set(rows) == {"objective=cut", "objective=fastcut"}  # debug=tiny is common to all: not part of the label
    cut, fast = rows["objective=cut"], rows["objective=fastcut"]
    assert (cut["seeds"], cut["finished"], fast["seeds"], fast["finished"]) == ("3", "3", "3", "2")
    assert float(cut["fid_final_mean"]) == pytest.approx(statistics.fmean([30, 34, 39]))
    assert float(cut["fid_final_std"]) == pytest.approx(statistics.stdev([30, 34, 39]))
    assert float(cut["fid_best_mean"]) == pytest.approx(statistics.fmean([30, 34, 38]))
    assert float(fast["fid_best_std"]) == pytest.approx(statistics.stdev([45, 47]))
    assert float(fast["kid_final_mean"]) == pytest.approx(statistics.fmean([0.45, 0.47]))
    md = (sweep / "summary.md").read_text()
    assert "## Over seeds" in md and "| `objective=fastcut` | 3 (2) |" in md
    assert seed_table(collect_jobs(sweep)) is not None


@pytest.mark.parametrize("kind", ["missing", "empty", "file", "single_run"])
def test_not_a_sweep_is_a_clear_error_and_writes_nothing(tmp_path, kind, capsys):
    target = tmp_path / "x"
    if kind == "empty":
        target.mkdir()
    elif kind == "file":
        target.write_text("hello")
    elif kind == "single_run":
        (target / ".hydra").mkdir(parents=True)
        (target / ".hydra" / "overrides.yaml").write_text("[]\n")
    error = FileNotFoundError if kind == "missing" else NotASweepError
    with pytest.raises(error, match="does not exist" if kind == "missing" else "not a Hydra multirun|is a file"):
        report(target, wandb="off")
    assert main([str(target)]) == 2
    assert "cutlight-report: error:" in capsys.readouterr().err
    if kind == "single_run":
        assert sorted(p.name for p in target.iterdir()) == [".hydra"]  # nothing written


def test_unknown_wandb_mode(sweep):
    with pytest.raises(ValueError, match="expected one of auto, on, off"):
        report(sweep, wandb="maybe")


@pytest.mark.slow
def test_wandb_report_run_offline(tmp_path):
    """A sweep whose jobs logged to W&B offline gets an offline 'report' run with the table, in the jobs' group."""
    from test_wandb import read_wandb_records

    sweep = tmp_path / "sweep_42"
    for num, loss in enumerate(["cut", "fastcut"]):
        job = make_job(sweep, num, [f"objective={loss}", "logger=wandb"], metric_rows([40.0 + num, 30.0]))
        OmegaConf.save(OmegaConf.create({"logger": {"wandb": {"project": "proj", "entity": None, "group": None,
                                                               "offline": True, "save_dir": "${output_dir}"}}}),
                       job / ".hydra" / "config.yaml")
    proc = run_module("cutlight.cli.report", [str(sweep)], tmp_path, WANDB_MODE="offline")  # files complete at exit
    assert proc.returncode == 0 and "W&B: offline run" in proc.stdout, output(proc)
    runs = list((sweep / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    records = read_wandb_records(runs[0])
    kinds = [r.WhichOneof("record_type") for r in records]
    assert "run" in kinds and "exit" in kinds, kinds  # a complete run
    run = records[kinds.index("run")].run
    assert (run.project, run.run_group, run.display_name, run.job_type) == ("proj", "sweep_42", "report", "report")
    logged: dict[str, dict] = {}  # "report/summary" -> {"_type": ..., "nrows": ...}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for i in r.history.item:
                if len(i.nested_key) == 2:
                    logged.setdefault(i.nested_key[0], {})[i.nested_key[1]] = json.loads(i.value_json)
    assert logged["report/summary"]["_type"] == "table-file" and logged["report/summary"]["nrows"] == 2
    assert logged["report/ablation"]["_type"] == "image-file"
    table = next((runs[0].parent / "files").rglob("report/summary_*.table.json"))
    data = json.loads(table.read_text())
    assert [row[data["columns"].index("fid_final")] for row in data["data"]] == [30.0, 30.0]


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_multirun_with_a_failing_job_then_report(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_train(["-m", *TINY, "model.objective.gan_mode=lsgan,hinge,foo", f"hydra.sweep.dir={sweep}"],
                     tmp_path)
    assert proc.returncode != 0, output(proc)  # Hydra re-raises the failed job's error after the sweep
    jobs = job_dirs(sweep)
    assert len(jobs) == 3, output(proc)
    summaries = [json.loads((j / SUMMARY_FILE).read_text()) for j in jobs]
    assert [s["state"] for s in summaries] == ["finished", "finished", "failed"]
    assert summaries[0]["metrics"]["final"]["val/fid"] == summaries[0]["optimized_metric"]
    log0, log2 = (jobs[0] / "train.log").read_text(), (jobs[2] / "train.log").read_text()
    assert "cutlight run finished" in log0 and "final: " in log0  # the end-of-run summary, in the log file too
    assert "unknown model.objective.gan_mode 'foo'" in log2 and "Traceback" in log2

    proc = run_module("cutlight.cli.report", [str(sweep)], tmp_path)
    assert proc.returncode == 0, output(proc)
    assert f"table:   {sweep / 'summary.md'}" in proc.stdout and str(sweep / "ablation.png") in proc.stdout
    rows = read_csv(sweep / "summary.csv")
    assert [r["label"] for r in rows] == [f"model.objective.gan_mode={m}" for m in ("lsgan", "hinge", "foo")]
    assert [r["state"] for r in rows] == ["finished", "finished", "failed"]
    for r in rows[:2]:
        assert math.isfinite(float(r["fid_final"])) and math.isfinite(float(r["fid_best"]))
        assert float(r["fid_best"]) <= float(r["fid_final"])
        assert r["epochs"] == r["max_epochs"] == "2" and float(r["sec_per_iter"]) > 0
        assert 0 <= float(r["content_iou_final"]) <= 1  # the built-in score terms
    assert "unknown model.objective.gan_mode 'foo'" in rows[2]["error"] and rows[2]["fid_final"] == ""
    for png in ("ablation.png", "curves.png"):
        assert (sweep / png).stat().st_size > 5000


def test_curves_plot_the_unweighted_nce_and_name_a_64d_fid(tmp_path):
    """Issue 27.7: curves.png plotted the weighted train/loss_nce (FastCUT's lambda 10 looked 10x worse than CUT),
    and a debug=tiny FID on Inception's 64-d block was labelled like the standard one."""
    from cutlight.reports.plots import curve_titles, load_curves

    sweep = tmp_path / "sweep"
    for num, (name, lam) in enumerate((("cut", 1.0), ("fastcut", 10.0))):
        rows = [{**r, "train/loss_nce": lam * 2.0} if "train/loss_nce" in r else r for r in metric_rows([50, 40])]
        job = make_job(sweep, num, [f"objective={name}"], rows)
        OmegaConf.save(OmegaConf.create({"trainer": {"max_epochs": 2}, "model": {
            "objective": {"lambda_nce": lam}, "val_metrics": {"feature": 64}}}), job / "config_resolved.yaml")
    jobs = collect_jobs(sweep)
    assert [(j.lambda_nce, j.fid_feature) for j in jobs] == [(1.0, 64), (10.0, 64)]
    for job in jobs:  # the same unweighted loss for both methods
        assert set(load_curves(job)["train/loss_nce"][1]) == {2.0}
    titles = curve_titles(jobs)
    assert titles["train/loss_nce"] == "PatchNCE, unweighted (train/loss_nce / lambda_nce)"
    assert titles["val/fid"] == "val/fid on Inception's 64-d features (not the standard FID)"
    report(sweep, wandb="off")
    assert "FID and KID here are computed on Inception's 64-d features" in (sweep / "summary.md").read_text()
    jobs[0].fid_feature = 2048
    jobs[1].fid_feature = 2048
    assert "val/fid" not in curve_titles(jobs)
