"""Inference without the training config: rebuild the generator from a checkpoint and translate folders.

``python -m cutlight.inference --ckpt last.ckpt --input DIR --output DIR [--size 256]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from .networks import ResnetGenerator, load_network_weights


def load_generator(
    path: str | os.PathLike, device: str | torch.device | None = None, **generator_kwargs
) -> ResnetGenerator:
    """A ready (eval-mode) generator from a ``CUTModule`` Lightning checkpoint, or from a plain generator
    state dict such as the reference implementation's ``latest_net_G.pth`` (then ``generator_kwargs`` describe the
    architecture; the defaults are the paper's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and "state_dict" in ckpt:  # Lightning checkpoint of a CUTModule
        hparams = ckpt.get("hyper_parameters", {})
        kwargs = {**hparams.get("generator", {}), **generator_kwargs}
        state = {k[len("generator."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("generator.")}
        if not state:
            raise ValueError(f"{str(path)!r} is a Lightning checkpoint without 'generator.*' weights")
        state = {k.replace("_orig_mod.", ""): v for k, v in state.items()}
    else:
        kwargs, state = generator_kwargs, ckpt
    generator = ResnetGenerator(**kwargs)
    load_network_weights(generator, state)
    return generator.to(device or "cpu").eval()


def _to_tensor(image: Image.Image, channels: int, size: int | None) -> torch.Tensor:
    image = image.convert("L" if channels == 1 else "RGB")
    if size:
        image = image.resize((size, size), Image.BICUBIC)
    else:  # the generator needs H and W divisible by 4
        w, h = image.size
        if w % 4 or h % 4:
            image = image.resize((max(4, w - w % 4), max(4, h - h % 4)), Image.BICUBIC)
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    x = x.view(image.size[1], image.size[0], channels).permute(2, 0, 1)  # (C, H, W)
    return x.float() / 127.5 - 1.0


@torch.no_grad()
def translate_folder(
    ckpt_path: str | os.PathLike,
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    size: int | None = None,
) -> Path:
    """Translate every image under ``input_dir`` (recursively) into PNGs under ``output_dir`` (same relative
    names). ``size`` resizes inputs to size x size; otherwise sizes are kept (rounded down to multiples of 4).
    Returns the output folder (default: ``<input_dir>_translated``)."""
    from .data import list_images

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    generator = load_generator(ckpt_path, device)
    input_dir = Path(input_dir)
    output_dir = Path(output_dir) if output_dir else input_dir.with_name(input_dir.name + "_translated")
    files = list_images(input_dir)
    batch: list[tuple[Path, torch.Tensor]] = []

    def flush() -> None:
        x = torch.stack([t for _, t in batch]).to(device)  # (B, C, H, W)
        y = ((generator(x).clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()
        for (src, _), img in zip(batch, y):
            dst = (output_dir / src.relative_to(input_dir)).with_suffix(".png")
            dst.parent.mkdir(parents=True, exist_ok=True)
            arr = img.permute(1, 2, 0).numpy()
            Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(dst)
        batch.clear()

    for path in tqdm(files, desc=f"translating {input_dir}", unit="img"):
        with Image.open(path) as im:
            t = _to_tensor(im, generator.input_nc, size)
        if batch and batch[0][1].shape != t.shape:
            flush()
        batch.append((path, t))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return output_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Translate a folder of images with a trained CUT generator.")
    parser.add_argument("--ckpt", required=True, help="CUTModule checkpoint (.ckpt) or generator state dict (.pth)")
    parser.add_argument("--input", required=True, help="folder of source-domain images")
    parser.add_argument("--output", default=None, help="output folder (default: <input>_translated)")
    parser.add_argument("--size", type=int, default=None, help="resize inputs to size x size")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    out = translate_folder(args.ckpt, args.input, args.output, args.device, args.batch_size, args.size)
    print(f"translations written to {out}")


if __name__ == "__main__":
    main()
