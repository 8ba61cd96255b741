"""Training outcomes of our ``CUTObjective.iteration`` against the reference-style step, seed by seed.

``python benchmarks/compare_steps.py [--seeds 0 1 2] [--impl ours reference] [--out FILE] [override ...]``
``python benchmarks/compare_steps.py --report FILE [FILE ...]``

The same-math tests show that one iteration of ours equals one reference-style iteration (fp64, 1e-10). This
script checks what that cannot: that thousands of fp32 iterations end in the same place. For every seed both
implementations start from the same networks (``CUTModule`` built from the composed Hydra config, default
``experiment=builtin_cpu``: the ``make train`` setting, extra arguments are Hydra overrides), see the same data
in the same order and draw the same patch positions (both consume the global RNG identically, which
``tests/test_same_math.py`` checks), and follow the same learning-rate schedule (the configured warm-up, constant,
then linear decay stepped per epoch). The only differences are the implementations' floating-point round-off and
their Adam (ours: fused, as ``CUTModule``; the reference step's own plain Adam). No validation FID: the built-in score
(``shapes_score`` on the first ``--eval-images`` validation images: the built-in val split under builtin_cpu) is computed every ``--eval-every`` iterations and
at the end. Each finished run appends one JSON line to ``--out``; ``--report`` prints the per-seed table and the
means (and a paired comparison when both implementations ran on the same seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# The reference-style oracle is test code (tests/reference/), not part of the cutlight package.
sys.path.insert(0, str(ROOT / "tests"))
from cutlight.data import shapes_score  # noqa: E402
from cutlight.data.shapes import layout_displacement  # noqa: E402
from cutlight.optim import apply_warmup, linear_decay  # noqa: E402
from reference.cut_reference import ReferenceStep  # noqa: E402

TERMS = ("content_iou", "style", "score", "shift_px")


def compose(overrides: list[str]):
    """The training config as ``python -m cutlight.cli.train`` composes it (``conf/`` of this checkout)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import cutlight.cli.train  # noqa: F401  (registers the config resolvers)

    with initialize_config_module(config_module="cutlight.conf", version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def build(cfg, seed: int):
    """Seeded as ``cutlight.cli.train``: datamodule, then the CUTModule (its networks), then the data loader."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    pl.seed_everything(seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    module = instantiate(cfg.model)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule, module


def make_step(impl: str, module):
    """(step(real_a, real_b) -> losses, generator to evaluate, optimizers to schedule)."""
    G, D, H, obj = module.generator, module.discriminator, module.sampler, module.objective
    if impl == "reference":
        ref = ReferenceStep(obj, G, D, H)  # reference-style copies with the same weights, own (unfused) Adam
        adam = {"lr": 2e-4, "betas": (0.5, 0.999), **module.hparams.optimizer}  # as configure_optimizers
        for group in (g for opt in (ref.opt_g, ref.opt_d) for g in opt.param_groups):
            group["lr"], group["betas"] = float(adam["lr"]), tuple(adam["betas"])  # the configured values
        return ref.step, ref.G, (ref.opt_g, ref.opt_d)
    if impl != "ours":
        raise ValueError(f"unknown impl {impl!r}; expected ours or reference")
    (opt_g, opt_d), _ = module.configure_optimizers()  # fused Adam on CPU, as in training

    def step(real_a, real_b):
        return obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": real_a, "B": real_b},
                             {"generator": opt_g, "discriminator": opt_d})

    return step, G, (opt_g, opt_d)


@torch.no_grad()
def evaluate(generator, real_a: torch.Tensor, frame: bool = False) -> dict[str, float]:
    fake_b = torch.cat([generator(chunk) for chunk in real_a.split(16)])  # (N, 3, H, W)
    # shift_px: mean length of the images' layout displacement (shapes moved as a whole; nan: no foreground)
    shift = layout_displacement(real_a, fake_b, frame).norm(dim=1).nanmean().item()
    return {**shapes_score(real_a, fake_b, frame), "shift_px": shift}


def train(cfg, seed: int, impl: str, eval_every: int, eval_images: int, max_iters: int | None,
          grid_dir: str | None = None, save_dir: str | None = None) -> dict:
    datamodule, module = build(cfg, seed)
    step, generator, optimizers = make_step(impl, module)
    n, d = int(cfg.model.n_epochs), int(cfg.model.n_epochs_decay)
    warmup = int(cfg.model.get("warmup_iters") or 0)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, lambda e: linear_decay(e, n, d)) for opt in optimizers]
    val = datamodule.val_dataset_a
    real_a = torch.stack([val[i]["image"] for i in range(min(eval_images, len(val)))])  # (N, 3, H, W)
    frame = bool(getattr(datamodule, "frame", False))  # the framed built-in data: scored inside the frame
    curve, it, start, cpu0 = [], 0, time.perf_counter(), time.process_time()
    curve.append({"iter": 0, **evaluate(generator, real_a, frame)})
    for _ in range(n + d):
        for batch in datamodule.train_dataloader():
            apply_warmup(optimizers, schedulers, it, warmup)  # as TranslationModule, before every iteration
            step(batch["A"], batch["B"])
            it += 1
            if eval_every and it % eval_every == 0:
                curve.append({"iter": it, **evaluate(generator, real_a, frame)})
            if max_iters and it >= max_iters:
                break
        for scheduler in schedulers:
            scheduler.step()
        if max_iters and it >= max_iters:
            break
    final = evaluate(generator, real_a, frame)
    if curve[-1]["iter"] != it:
        curve.append({"iter": it, **final})
    if grid_dir:
        from torchvision.utils import save_image

        from cutlight.lightning.callbacks.drawing import labelled_grid

        with torch.no_grad():
            fake_b = generator(real_a[:8])
        real_b = torch.stack([datamodule.val_dataset_b[i]["image"] for i in range(8)])
        grid = labelled_grid([real_a[:8], fake_b, real_b], ["input (A)", "translation G(A)", "target (B)"], 2,
                             caption=f"{impl}, seed {seed}, {it} iterations")
        Path(grid_dir).mkdir(parents=True, exist_ok=True)
        save_image(grid.float() / 255, Path(grid_dir) / f"{impl}_seed{seed}.png")
    if save_dir:  # the trained generator, loadable by ResnetGenerator(**cfg.model.generator).load_state_dict
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        torch.save(generator.state_dict(), Path(save_dir) / f"{impl}_seed{seed}.pt")
    return {"seed": seed, "impl": impl, "iters": it, "wall_s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu0, "threads": torch.get_num_threads(), "final": final, "curve": curve}


def report(paths: list[str]) -> None:
    runs = [json.loads(line) for p in paths for line in Path(p).read_text().splitlines() if line.strip()]
    impls = sorted({r["impl"] for r in runs}, key=["ours", "reference"].index)
    by = {(r["impl"], r["seed"]): r["final"] for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    head = "| seed | " + " | ".join(f"{i} {t}" for i in impls for t in TERMS) + " |"
    print(head)
    print("|" + "---|" * (1 + len(impls) * len(TERMS)))
    for s in seeds:
        cells = [f"{by[(i, s)][t]:.3f}" if (i, s) in by and t in by[(i, s)] else "" for i in impls for t in TERMS]
        print(f"| {s} | " + " | ".join(cells) + " |")
    means = []
    for i in impls:
        for t in TERMS:
            vals = [by[(i, s)][t] for s in seeds if (i, s) in by and t in by[(i, s)]]
            means.append(f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else "")
    print("| mean ± sd | " + " | ".join(means) + " |")
    if len(impls) == 2:
        paired = [s for s in seeds if all((i, s) in by for i in impls)]
        for t in TERMS:
            diff = [by[("ours", s)][t] - by[("reference", s)][t] for s in paired if t in by[("ours", s)]]
            if len(diff) > 1:
                sd = statistics.stdev(diff)
                wins = sum(x > 0 for x in diff)
                print(f"{t}: ours - reference over {len(diff)} paired seeds: mean {statistics.mean(diff):+.3f}, "
                      f"sd {sd:.3f} (t = {statistics.mean(diff) / (sd / len(diff) ** 0.5 if sd else 1):+.2f}), "
                      f"ours higher in {wins}/{len(diff)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default experiment: builtin_cpu)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--impl", nargs="+", default=["ours", "reference"], choices=["ours", "reference"])
    parser.add_argument("--eval-every", type=int, default=0, help="score every N iterations (0: only at the end)")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--max-iters", type=int, default=None, help="stop early (keeps the schedule's epochs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="append one JSON line per run")
    parser.add_argument("--grids", default=None, help="folder for a grid of each run's final translations")
    parser.add_argument("--save", default=None, help="folder for each run's trained generator weights (IMPL_seedN.pt)")
    parser.add_argument("--report", nargs="+", default=None, help="print the table of these JSON-lines files")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    torch.set_num_threads(args.threads)
    overrides = args.overrides if any(o.startswith("experiment=") for o in args.overrides) else \
        ["experiment=builtin_cpu", *args.overrides]
    cfg = compose(overrides)
    for seed in args.seeds:
        for impl in args.impl:
            result = train(cfg, seed, impl, args.eval_every, args.eval_images, args.max_iters, args.grids,
                           args.save)
            result["overrides"] = overrides
            f = result["final"]
            print(f"seed {seed} {impl:9s} {result['iters']} iters {result['wall_s']:.0f} s wall "
                  f"{result['cpu_s']:.0f} s CPU: " + ", ".join(f"{t} {f[t]:.3f}" for t in TERMS), flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
