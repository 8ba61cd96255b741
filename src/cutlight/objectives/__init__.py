"""One training iteration of each method as plain PyTorch (no Lightning, no Hydra).

```
cut.py   CUTObjective: CUT / FastCUT and their ablations (PatchNCE + GAN)
```
"""

from .cut import CUTObjective

__all__ = ["CUTObjective"]
