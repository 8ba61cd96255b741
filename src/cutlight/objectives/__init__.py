"""One training iteration of each method as plain PyTorch (no Lightning, no Hydra).

```
contract.py  Objective, Role, OptimizerGroup, build_networks: what a method declares (networks by role, optimizers,
             the translating roles, one iteration(nets, batch, optimizers, backward))
cut.py       CUTObjective: CUT / FastCUT and their ablations (PatchNCE + GAN)
sincut.py    SinCUTObjective: single-image CUT (CUT + R1 penalty on real B + L1 identity)
cyclegan.py  CycleGANObjective, ImagePool, cyclegan_networks (the original layout); pieces shared with:
onesided.py  OneSidedObjective: the G-then-D iteration of the one-sided baselines (CUT's G and D, no heads)
gcgan.py     GcGANObjective: geometry consistency (rot90 / vflip)
distance.py  DistanceGANObjective, SelfDistanceObjective: distance preservation
dclgan.py    DCLGANObjective: dual contrastive learning (two generators, two discriminators, two heads)
simdcl.py    SimDCLObjective: DCLGAN plus the similarity loss (four small mappings)
```
"""

from .contract import Objective, OptimizerGroup, Role, build_networks
from .cut import CUTObjective
from .cyclegan import CycleGANObjective, ImagePool, cyclegan_networks
from .dclgan import DCLGANObjective
from .distance import DistanceGANObjective, SelfDistanceObjective
from .gcgan import GcGANObjective
from .onesided import OneSidedObjective
from .simdcl import SimDCLObjective
from .sincut import SinCUTObjective

__all__ = [
    "CUTObjective",
    "CycleGANObjective",
    "DCLGANObjective",
    "DistanceGANObjective",
    "GcGANObjective",
    "ImagePool",
    "Objective",
    "OptimizerGroup",
    "Role",
    "OneSidedObjective",
    "SelfDistanceObjective",
    "SimDCLObjective",
    "SinCUTObjective",
    "build_networks",
    "cyclegan_networks",
]
