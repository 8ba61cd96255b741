"""The Lightning layer: a shared translation base and one thin LightningModule per method.

```
base.py   TranslationModule: optimizers + schedule, validation FID/KID (Evaluator), translation, predict, logging
cut.py    CUTModule: CUT / FastCUT and the one-sided objectives on G, D and the PatchNCE heads
rundir.py where a run's files go (run_dir), steps = training batches (batches_done, log_step), test_results table
prediction.py  TranslationWriter: trainer.predict -> image files, each rank its shard
```
"""

from .base import TranslationModule
from .cut import CUTModule

__all__ = ["CUTModule", "TranslationModule"]
