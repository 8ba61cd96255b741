"""Exporting a trained generator (``cutlight-export``, ``python -m cutlight.cli.export``).

* ``torchscript``: ``torch.jit.trace`` of the generator; load with ``torch.jit.load(FILE)``.
* ``onnx``: ``torch.onnx.export`` (the torch.export-based exporter, opset 18); needs ``onnx`` and ``onnxscript``
  (``pip install 'cutlight[export]'``); run with e.g. onnxruntime.
* ``safetensors``: the weights plus the constructor arguments (with ``_target_``) as JSON in the file's metadata
  (key ``cutlight_generator``), so ``cutlight.load_generator(FILE)`` rebuilds the generator.

TorchScript and ONNX take a float32 (B, input_nc, H, W) tensor in [-1, 1] and return (B, output_nc, H, W) in
[-1, 1], the input's size, with the batch size, H and W free (dynamic) and H, W at least 2 * ``size_multiple``:
like ``cutlight.translate``, the graph reflect-pads H and W to multiples of ``size_multiple`` (4) at the bottom and
right, translates and crops back (:class:`PadCrop`), so a 250 x 187 input gives a 250 x 187 output. Both store
``input_nc``, ``output_nc``, ``size_multiple`` and the constructor arguments as JSON (TorchScript: extra file
``cutlight.json``; ONNX: metadata property ``cutlight``).

The graphs hold the generator's plain math: the training-time CPU fast paths of ``cutlight.networks.layers``
(blur downsampling's custom autograd Function, the channels-last last conv) switch themselves to the standard
ops they are proven equal to while tracing or exporting (``cpu_fast_path``). After writing, the export is checked against the eager generator
at two input sizes (max abs difference printed; ``--no-verify`` skips it; ONNX is checked with onnxruntime when
installed).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__

logger = logging.getLogger(__name__)

FORMATS = ("torchscript", "onnx", "safetensors")
ONNX_OPSET = 18
# (B, H, W) checked after export (the last one not a multiple of 4: padded and cropped); the trace uses (2, 48, 80)
VERIFY_SIZES = ((1, 64, 64), (2, 36, 92), (1, 47, 62))


class PadCrop(nn.Module):
    """``net`` on any H, W >= ``multiple``: reflect-pads (B, C, H, W) at the bottom and right to multiples of
    ``multiple``, runs ``net`` and crops its (B, C', H', W') output back to (B, C', H, W), as ``cutlight.translate``
    does. Written for the exporters: always one pad (of zero rows when none is needed), no branch on the size."""

    def __init__(self, net: nn.Module, multiple: int) -> None:
        super().__init__()
        self.net = net
        self.multiple = multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h = (self.multiple - h % self.multiple) % self.multiple
        pad_w = (self.multiple - w % self.multiple) % self.multiple
        y = self.net(F.pad(x, [0, pad_w, 0, pad_h], mode="reflect"))  # (B, C', H + pad_h, W + pad_w)
        return y[:, :, :h, :w]


def eager_generator(generator: nn.Module) -> nn.Module:
    """An eval-mode CPU float32 copy of ``generator`` for tracing, and for a ``ResnetGenerator`` its layer list
    alone (``model``: no Python shape checks). The CPU fast paths of ``cutlight.networks.layers`` see that they
    are traced or exported and run as standard ops (``cpu_fast_path``). (B, input_nc, H, W) -> (B, output_nc, H, W)."""
    net = copy.deepcopy(generator).float().cpu().eval()
    return net.model if isinstance(getattr(net, "model", None), nn.Sequential) else net


def _metadata(generator: nn.Module, config: dict | None) -> dict:
    return {
        "input_nc": int(generator.input_nc),
        "output_nc": int(generator.output_nc),
        "size_multiple": int(getattr(generator, "size_multiple", 1)),
        "value_range": [-1.0, 1.0],
        "generator": config,
        "cutlight_version": __version__,
    }


def _example(generator: nn.Module) -> torch.Tensor:
    m = int(getattr(generator, "size_multiple", 1))
    return torch.rand(2, generator.input_nc, 12 * m, 20 * m) * 2 - 1  # (2, C, 48, 80) for m = 4


def _export_torchscript(net: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    with warnings.catch_warnings():
        # group_norm's Python-side size check (the export is verified at other sizes), and torch >= 2.10 marking
        # TorchScript deprecated (it still works; ONNX is the maintained route)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module="torch.nn.functional")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
        traced = torch.jit.trace(net, example, check_trace=False)
        # the size logic scripted around the traced layers (a trace would freeze the pad of the example's size)
        scripted = torch.jit.script(PadCrop(traced, meta["size_multiple"]).eval())
        torch.jit.save(scripted, str(path), _extra_files={"cutlight.json": json.dumps(meta)})


def _export_onnx(net: nn.Module, example: torch.Tensor, path: Path, meta: dict) -> None:
    try:
        import onnx
        from torch.export import Dim
    except ImportError as err:
        raise ImportError(f"ONNX export needs onnx and onnxscript: pip install 'cutlight[export]' ({err})") from err
    m = meta["size_multiple"]
    height, width = Dim("h", min=2 * m, max=8192), Dim("w", min=2 * m, max=8192)  # any size: padded, cropped back
    dims = {0: Dim("batch", min=1, max=4096), 2: height, 3: width}
    torch.onnx.export(PadCrop(net, m).eval(), (example,), str(path), input_names=["input"], output_names=["output"],
                      dynamo=True,
                      external_data=False, opset_version=ONNX_OPSET, dynamic_shapes=(dims,), verbose=False)
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "cutlight", json.dumps(meta)
    onnx.save(model, str(path))


def _export_safetensors(generator: nn.Module, path: Path, config: dict | None) -> None:
    try:
        from safetensors.torch import save
    except ImportError as err:
        raise ImportError("safetensors export needs safetensors: pip install 'cutlight[export]'") from err
    if not config:
        raise ValueError("safetensors export needs the generator's constructor arguments (config=...), e.g. "
                         "read_generator(ckpt).config(); `python -m cutlight.cli.export` passes them")
    state = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    # bytes written by Python, not safetensors' save_file (which creates the file with mode 0600): the same
    # permissions (0666 less the umask) as the other formats' files
    path.write_bytes(save(state, metadata={"cutlight_generator": json.dumps(config), "format": "pt"}))


def export_generator(
    generator: nn.Module, path: str | os.PathLike, fmt: str, config: dict | None = None, overwrite: bool = False
) -> Path:
    """Write ``generator`` to ``path`` as ``fmt`` (one of :data:`FORMATS`); returns the path.

    ``config``: constructor arguments with ``_target_`` (required for safetensors; stored with all formats).
    Raises ValueError for an unknown format or an existing file (unless ``overwrite``).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"'{path}' exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(generator, config)
    if fmt == "safetensors":
        _export_safetensors(generator, path, config)
        return path
    net, example = eager_generator(generator), _example(generator)
    with torch.no_grad():
        if fmt == "torchscript":
            _export_torchscript(net, example, path, meta)
        else:
            _export_onnx(net, example, path, meta)
    return path


def load_export(path: str | os.PathLike, fmt: str):
    """A callable (B, C, H, W) float32 tensor -> tensor running the exported file (ONNX: onnxruntime, CPU)."""
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.jit.*deprecated")
            return torch.jit.load(str(path), map_location="cpu").eval()
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"input": x.detach().cpu().numpy()})[0])
    if fmt == "safetensors":
        from .loading import load_generator
        from .tensors import translate_tensor

        generator = load_generator(path)
        return lambda x: translate_tensor(generator, x)  # any size, as the other formats
    raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")


@torch.no_grad()
def verify_export(path: str | os.PathLike, fmt: str, generator: nn.Module, sizes=VERIFY_SIZES) -> list[float]:
    """Max abs difference between the exported file and the eager generator (CPU, float32) per (B, H, W) size."""
    from .tensors import translate_tensor

    run = load_export(path, fmt)
    reference = copy.deepcopy(generator).float().cpu().eval()
    torch.manual_seed(0)
    diffs = []
    for b, h, w in sizes:
        x = torch.rand(b, generator.input_nc, h, w) * 2 - 1
        out, expected = run(x), translate_tensor(reference, x)  # any size: padded and cropped back
        if out.shape != expected.shape:
            raise ValueError(f"the {fmt} export returns {tuple(out.shape)} for a {tuple(x.shape)} input; "
                             f"expected {tuple(expected.shape)}")
        diffs.append(float((out - expected).abs().max()))
    return diffs
