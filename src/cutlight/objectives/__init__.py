"""One training iteration of each method as plain PyTorch (no Lightning, no Hydra).

```
cut.py     CUTObjective: CUT / FastCUT and their ablations (PatchNCE + GAN)
sincut.py  SinCUTObjective: single-image CUT (CUT + R1 penalty on real B + L1 identity)
```
"""

from .cut import CUTObjective
from .sincut import SinCUTObjective

__all__ = ["CUTObjective", "SinCUTObjective"]
