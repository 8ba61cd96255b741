"""The Lightning layer: a shared translation base and one thin LightningModule per method.

```
base.py   TranslationModule: optimizers + schedule, validation FID/KID (Evaluator), translation, predict, logging
cut.py       CUTModule: CUT / FastCUT, SinCUT and the one-sided baselines on one G, one D (and the PatchNCE heads)
cyclegan.py  CycleGANModule: two generators, two discriminators, image pools
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
