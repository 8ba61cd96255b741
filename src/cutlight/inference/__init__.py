"""Using a trained generator without the training config: loading, any-size translation, folders of files, export.

```
loading.py     load_generator / read_generator / build_generator (checkpoint, safetensors export, reference state
               dict); load_sampler (the PatchNCE heads, for the analysis)
tensors.py     translate (tensors or PIL images of any size), translate_tensor, pad_to_multiple, batches_by_size
               (the one "batch images of one size" implementation), image_to_tensor / tensor_to_image
files.py       resolve_inputs (files, folders, globs), output_size, plan_outputs, save_image (atomic),
               translate_folder -> TranslationReport
evaluation.py  evaluate_folders: FID / KID between two image folders
gallery.py     write_gallery: the static HTML pages of a translated folder
export.py      export_generator (TorchScript, ONNX, safetensors), load_export, verify_export
analysis.py    the paper's learned-similarity and feature-PCA figures for one image (matplotlib Figures)
```

No Lightning, no Hydra: what a checkpoint holds is enough. The commands in ``cutlight.cli`` call into these.
"""

from .evaluation import evaluate_folders
from .files import FORMATS, TranslationReport, translate_folder
from .loading import DIRECTIONS, GeneratorSpec, build_generator, load_generator, load_sampler, read_generator
from .tensors import (
    PRECISIONS,
    batches_by_size,
    image_to_tensor,
    pad_to_multiple,
    tensor_to_image,
    translate,
    translate_tensor,
)

__all__ = [
    "DIRECTIONS",
    "FORMATS",
    "PRECISIONS",
    "GeneratorSpec",
    "TranslationReport",
    "batches_by_size",
    "build_generator",
    "evaluate_folders",
    "image_to_tensor",
    "load_generator",
    "load_sampler",
    "pad_to_multiple",
    "read_generator",
    "tensor_to_image",
    "translate",
    "translate_folder",
    "translate_tensor",
]
