"""Cost of the non-finite guard per training iteration, measured side by side (interleaved, median ratio).

    python benchmarks/guard_overhead.py [--device cpu|cuda] [--size 64] [--iters 40] [--model small|paper]

Each round runs one plain CUT iteration (``CUTObjective.iteration`` with fused Adam) and one guarded iteration
(the same, plus what ``TranslationModule`` adds: the loss note before each backward, the pre-step gradient check
with the device-side skip, and the per-iteration check with its one host sync), in alternating order, on the same
networks. Prints the median time of each and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cutlight import CUTModule

MODELS = {"small": dict(generator={"ngf": 16, "n_blocks": 4}, discriminator={"ndf": 16}, sampler={"mlp_dim": 64},
                        objective={"num_patches": 64}),
          "paper": {}}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--model", choices=sorted(MODELS), default="small")
    args = p.parse_args()
    torch.manual_seed(0)
    module = CUTModule(**MODELS[args.model], val_metrics=False).to(args.device)
    (opt_g, opt_d), _ = module.configure_optimizers()  # attaches the guard's hooks
    guard = module.guard
    x = [torch.rand(1, 3, args.size, args.size, device=args.device) * 2 - 1 for _ in range(2)]

    def iteration(guarded: bool) -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        backward = (lambda loss: (guard.note_loss(loss), loss.backward())) if guarded else None
        losses = module.objective.iteration(module.nets, {"A": x[0], "B": x[1]},
                                            {"generator": opt_g, "discriminator": opt_d}, backward=backward)
        if guarded:
            guard.after_iteration(losses, "bench", "none")  # the one host sync
        else:
            float(losses["loss_g"])  # what logging reads anyway: the same sync point for the plain iteration
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def run(guarded: bool) -> float:
        if guarded:  # hooks on
            guard.attach([opt_g, opt_d], ["generator-side", "discriminator-side"])
        else:  # hooks off
            for handle in guard._handles:
                handle.remove()
            guard._handles = []
        return iteration(guarded)

    for _ in range(3):
        run(True), run(False)  # warm-up
    plain, guarded, ratios = [], [], []
    for i in range(args.iters):
        order = (False, True) if i % 2 else (True, False)
        t = {g: run(g) for g in order}
        plain.append(t[False]), guarded.append(t[True]), ratios.append(t[True] / t[False])
    print(f"{args.model} {args.size}px on {args.device}: plain {statistics.median(plain) * 1e3:.1f} ms, guarded "
          f"{statistics.median(guarded) * 1e3:.1f} ms, median ratio {statistics.median(ratios):.3f} "
          f"({args.iters} interleaved rounds)")


if __name__ == "__main__":
    main()
