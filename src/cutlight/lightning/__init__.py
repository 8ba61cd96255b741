"""The Lightning layer: a shared translation base and one thin LightningModule per method.

```
base.py   TranslationModule: optimizers + schedule, validation FID/KID (Evaluator), translation, predict, logging
cut.py    CUTModule: CUT / FastCUT and the one-sided objectives on G, D and the PatchNCE heads
```
"""

from .base import TranslationModule
from .cut import CUTModule

__all__ = ["CUTModule", "TranslationModule"]
