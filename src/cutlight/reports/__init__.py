"""Reading what training runs left on disk and summarising sweeps of them (no Lightning).

```
records.py    one run's records: its CSV log (final / best metrics, pace), its summary.json
jobs.py       Job: the jobs of a Hydra multirun folder, as found on disk
sweep.py      write_report: summary.csv / .md, seeds.csv, the figures, the W&B report run
curves.py     the curve plot (curves_figure), shared by the sweep report and the LossCurves callback
plots.py      the sweep figures: the ablation scatter, the curves of every job (Figure objects, no pyplot)
intervals.py  outcomes over seeds: means with 95% intervals, paired differences to the baseline, verdicts
wandb_log.py  the report as a W&B run
```
"""
