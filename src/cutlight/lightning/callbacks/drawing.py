"""Pictures for the callbacks: labelled image grids, the full-image panel, and sending images to the loggers.

Images are uint8 tensors (3, H, W) drawn with PIL; nothing here uses matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torchvision.utils import make_grid

from ...metrics import to_uint8


def log_image(trainer: pl.Trainer, key: str, image_u8: torch.Tensor, step: int) -> None:
    """Send a (3, H, W) uint8 image to every logger that takes images."""
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):  # W&B
            logger.log_image(key=key, images=[image_u8.permute(1, 2, 0).cpu().numpy()], step=step)
        elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
            logger.experiment.add_image(key, image_u8, global_step=step)


def to_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) with C in {1, 3, 4} -> (N, 3, H, W) for display (grayscale repeated, alpha dropped)."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


def unused_path(path: Path) -> Path:
    """``path``, or ``<stem>-resumed<N><suffix>`` with the smallest N not taken: a resumed run never overwrites
    a picture of the run it continues."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-resumed{n}{path.suffix}")
    return candidate


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable (FreeType)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()  # Pillow without FreeType: the small bitmap font


def labelled_grid(columns: list[torch.Tensor], titles: list[str], scale: int = 1, caption: str | None = None,
                  padding: int = 4) -> torch.Tensor:
    """Tiles in a table with a title over each column (and an optional caption line above the titles).

    Args:
        columns: K tensors (N, 3, H, W) in [-1, 1]: column k shows ``columns[k][i]`` in row i.
        titles: K column titles.
        scale: integer upscaling of every tile (nearest neighbour: pixels stay crisp).

    Returns: (3, H', W') uint8, white background.
    """
    import numpy as np
    from PIL import Image, ImageDraw

    if len(columns) != len(titles):
        raise ValueError(f"got {len(columns)} columns but {len(titles)} titles")
    tiles = torch.stack([c.detach().float().cpu() for c in columns], dim=1).flatten(0, 1)  # (N*K, 3, H, W)
    tiles = ((tiles.clamp(-1, 1) + 1) / 2).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    grid = make_grid(tiles, nrow=len(columns), padding=padding, pad_value=1.0)  # (3, Hg, Wg) in [0, 1]
    body = Image.fromarray((grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy())
    tile_w = columns[0].shape[-1] * scale
    font = _font(max(12, min(24, tile_w // 9)))
    line = font.getbbox("Ag")[3] + 6
    header = line * (2 if caption else 1)
    image = Image.new("RGB", (body.width, body.height + header), "white")
    image.paste(body, (0, header))
    draw = ImageDraw.Draw(image)
    if caption:
        draw.text((padding, 2), caption, fill=(0, 0, 0), font=font)
    for k, title in enumerate(titles):
        left = padding + k * (tile_w + padding)
        width = draw.textlength(title, font=font)
        draw.text((left + max(0.0, (tile_w - width) / 2), header - line + 2), title, fill=(0, 0, 0), font=font)
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()  # (3, H', W') uint8


def full_image_panel(source: torch.Tensor, translation: torch.Tensor, target: torch.Tensor, gap: int = 4
                     ) -> torch.Tensor:
    """source | translation | target side by side (the target scaled to the source's height, aspect kept), white
    gaps: (1, C, H, W) images in [-1, 1] (clamped) -> (3, H, W_total) uint8."""
    h = source.shape[-2]
    width = max(1, round(target.shape[-1] * h / target.shape[-2]))
    target = torch.nn.functional.interpolate(target.float(), size=(h, width), mode="bilinear", antialias=True)
    parts = [to_uint8(x.float(), rgb=True)[0] for x in (source, translation, target)]  # (3, H, W_i) each
    white = torch.full((3, h, gap), 255, dtype=torch.uint8)
    return torch.cat([parts[0], white, parts[1], white, parts[2]], dim=2)
