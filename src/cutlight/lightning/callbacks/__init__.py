"""Logger-agnostic callbacks, one file each.

```
image_grid.py          ImageGrid: the same fixed validation images translated every N batches, labelled grids
full_image.py          FullImageTranslation: single-image data (SinCUT): the whole image translated, val/nce
loss_curves.py         LossCurves: training losses and validation metrics against training batches
perf.py                PerfMonitor: perf/sec_per_iter and perf/peak_mem_mb every batch
translation_score.py   TranslationScore: the datamodule's own score (built-in data: content_iou, style, score)
translation_writer.py  TranslationWriter: trainer.predict -> image files, each rank its shard
drawing.py             labelled grids, the full-image panel, images to the loggers
```

Pictures are always written as PNG files under the run's own directory (``dirpath``, else
``cutlight.lightning.rundir.run_dir``: the first logger's version folder, e.g. ``lightning_logs/version_3/images``,
never the current directory) and, when the trainer has loggers that accept images (W&B's ``log_image``,
TensorBoard's ``add_image``), logged there too. Steps are training batches done (``rundir.batches_done``).
Figures are drawn on ``matplotlib.figure.Figure`` objects and saved: no pyplot, no backend switch.

A callback that has something for the end-of-run summary says so with ``summary() -> dict[str, str]`` (label ->
path or numbers, empty when it has nothing); ``cutlight-train`` prints them.
"""

from .full_image import FullImageTranslation
from .image_grid import ImageGrid
from .loss_curves import LossCurves
from .perf import PerfMonitor, peak_memory_mb
from .translation_score import TranslationScore
from .translation_writer import TranslationWriter

__all__ = ["FullImageTranslation", "ImageGrid", "LossCurves", "PerfMonitor", "TranslationScore",
           "TranslationWriter", "peak_memory_mb"]
