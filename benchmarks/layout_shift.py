"""Where a built-in run's content_iou went: shapes moved as a whole, per domain, and what PatchNCE says about it.

``python benchmarks/layout_shift.py CKPT [CKPT ...] [--images 64] [--frame]`` (``--frame``: a run on the framed data,
``data.frame=true`` as in ``experiment=builtin_cpu``)

For each checkpoint of a run on the built-in data (``experiment=builtin_cpu``; a ``CUTModule`` checkpoint):

* ``content_iou`` of G on the built-in test A images, and the best IoU after moving G(A) back by a whole number of
  pixels (up to 3 in x and y): when the best is much higher, the generator drew the layout in place but moved
  as a whole (the IoU lost at every outline), not lost or deformed shapes;
* the mean displacement (pixels, x and y) of the foreground of G(A) against A and of G(B) against B (the
  identity branch of CUT, ``nce_idt``);
* the PatchNCE loss of every NCE layer (all positions, the run's heads and temperature) between A and G(A) as
  drawn, and between A and G(A) moved back by the displacement. Layers whose loss is lower as drawn have learned
  the displacement (the encoder sees domain A and B features at different places); layer 0 (the image itself)
  cannot learn it, but on flat colours it cannot see a displacement either.
"""

from __future__ import annotations

import argparse

import torch

from cutlight.data.builtin import generate_image
from cutlight.data.shapes import layout_displacement, pil_to_batch, shapes_score
from cutlight.lightning.cut import CUTModule
from cutlight.losses import patch_nce_loss


def best_moved_iou(real: torch.Tensor, fake: torch.Tensor, reach: int = 3, frame: bool = False
                   ) -> tuple[float, int, int]:
    """(IoU, dx, dy): the content_iou of fake moved back by (dx, dy) whole pixels, the best within +-reach."""
    return max((shapes_score(real, torch.roll(fake, (-dy, -dx), (2, 3)), frame)["content_iou"], dx, dy)
               for dx in range(-reach, reach + 1) for dy in range(-reach, reach + 1))


@torch.no_grad()
def nce_per_layer(module: CUTModule, real_a: torch.Tensor, fake_b: torch.Tensor) -> list[float]:
    G, H, obj = module.generator, module.sampler, module.objective
    layers = list(obj.nce_layers)
    keys, ids = H(G.encode(real_a, layers), None)  # every position
    queries, _ = H(G.encode(fake_b, layers), None, ids)
    return [patch_nce_loss(q, k, obj.nce_temperature).mean().item() for q, k in zip(queries, keys)]


@torch.no_grad()
def diagnose(path: str, images: int, size: int, frame: bool = False) -> None:
    module = CUTModule.load_from_checkpoint(path, map_location="cpu").eval()
    real = {d: pil_to_batch([generate_image("test", d, i, size, frame) for i in range(images)]) for d in "AB"}
    fake = {d: torch.cat([module.generator(c) for c in real[d].split(16)]) for d in "AB"}
    score = shapes_score(real["A"], fake["A"], frame)
    moved, dx, dy = best_moved_iou(real["A"], fake["A"], frame=frame)
    print(f"{path}\n  content_iou {score['content_iou']:.3f}, style {score['style']:.3f}, score {score['score']:.3f}; "
          f"best after moving G(A) back by ({dx}, {dy}) px: content_iou {moved:.3f}")
    for d in "AB":
        x, y = layout_displacement(real[d], fake[d], frame).nanmean(0).tolist()
        print(f"  G({d}) against {d}: displaced by x {x:+.2f}, y {y:+.2f} px")
    as_drawn = nce_per_layer(module, real["A"], fake["A"])
    back = nce_per_layer(module, real["A"], torch.roll(fake["A"], (-dy, -dx), (2, 3)))
    layers = list(module.objective.nce_layers)
    print("  PatchNCE(A, G(A)) per layer " + " ".join(f"{layer:>6d}" for layer in layers))
    print("    as drawn                 " + " ".join(f"{v:6.3f}" for v in as_drawn))
    print(f"    moved back by ({dx:+d}, {dy:+d})    " + " ".join(f"{v:6.3f}" for v in back))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--images", type=int, default=64, help="built-in test images per domain (default 64)")
    parser.add_argument("--size", type=int, default=64, help="image size the run was trained on (default 64)")
    parser.add_argument("--frame", action="store_true", help="the run trained on the framed data (make train's)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    for path in args.checkpoints:
        diagnose(path, args.images, args.size, args.frame)


if __name__ == "__main__":
    main()
