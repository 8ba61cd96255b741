"""The Lightning layer: one LightningModule for every method, and what runs around it.

```
base.py      TranslationModule: builds the objective's networks by role, runs its iteration with the optimizers
             it declares, schedule, validation FID/KID (Evaluator), test, translation, predict, logging
cut.py       CUTModule: TranslationModule with CUT as the default objective (the one-sided baselines train in it too)
cyclegan.py  CycleGANModule: TranslationModule with CycleGAN's objective and schedule (100 + 100 epochs)
rundir.py    where a run's files go (run_dir), steps = training batches (batches_done, log_step), test table
reliability.py  non-finite guard, resume state of the loggers and the data order
resume.py    AtomicCheckpoint, finding and checking the checkpoint a run resumes from
callbacks/   one file per callback: ImageGrid, FullImageTranslation, LossCurves, PerfMonitor, TranslationScore,
             TranslationWriter (trainer.predict -> image files, each rank its shard); drawing.py: grids, panels
```

Below: ``cutlight.inference`` (translation of tensors, files) and the core; above: ``cutlight.cli``.
"""

from .base import TranslationModule
from .cut import CUTModule
from .cyclegan import CycleGANModule

__all__ = ["CUTModule", "CycleGANModule", "TranslationModule"]
