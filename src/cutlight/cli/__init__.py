"""The commands: argument parsing and printing, calling into ``cutlight.inference``, ``cutlight.lightning``,
``cutlight.reports`` and the core. Each is ``python -m cutlight.cli.<name>`` and the console script
``cutlight-<name>``; Hydra is used by ``train`` alone.

```
train.py       cutlight-train: compose the Hydra config, train, test, print the end-of-run summary
run_record.py  RunRecord: the Hydra callback keeping each training job's summary.json
translate.py   cutlight-translate: image files / folders / globs -> translated files (+ HTML gallery, FID/KID)
evaluate.py    cutlight-evaluate: FID / KID between two folders (or of a checkpoint's translations)
export.py      cutlight-export: TorchScript / ONNX / safetensors, verified against the eager generator
analyze.py     cutlight-analyze: the paper's learned-similarity and feature-PCA figures
report.py      cutlight-report: the table and figures of a Hydra multirun folder
args.py        argument types shared by the commands
```
"""
