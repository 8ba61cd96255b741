"""Training-speed benchmark: our ``CUTObjective.iteration`` against a faithful reference-style step.

``python benchmarks/bench.py [--quick] [--device cpu|cuda] [--presets CUT,FastCUT] [--out PATH]``
(``make bench`` runs ``--quick``)

The reference-style step is the straightforward algorithm of the authors' implementation, with its layer
implementations (blur down/up-sampling as depthwise conv / conv_transpose on padded inputs, in-place ReLUs,
patch sampling through a full permute + reshape copy, sources re-encoded with a graph for the NCE keys). It runs
on copies of our networks (same weights, same state-dict layout), so both steps compute the same losses and
updates from the same RNG state (``tests/test_same_math.py``) and can be timed side by side in one process.

Baseline presets (``--presets CycleGAN,GcGAN,DistanceGAN,SelfDistance``) time the paper's baselines (our
implementations, ``cutlight.objectives``) against our CUT step instead: in their rows the "ref" columns are CUT's, so
the ratios read baseline / CUT (seconds per iteration, peak memory). CycleGAN uses its original networks (two
generators and discriminators, no antialiasing); the one-sided baselines use CUT's networks. DistanceGAN needs
batches of at least 2 (its rows are skipped at batch 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

# The reference-style oracle is test code (tests/reference/), not part of the cutlight package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cutlight.networks import PatchDiscriminator, PatchSampler, ResnetGenerator  # noqa: E402
from cutlight.objectives import (  # noqa: E402
    CUTObjective,
    CycleGANObjective,
    DistanceGANObjective,
    GcGANObjective,
    SelfDistanceObjective,
    cyclegan_networks,
)
from reference.cut_reference import ReferenceStep  # noqa: E402

# ----------------------------------------------------------------------------- measurement

PRESETS = {"CUT": {}, "FastCUT": {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}}
# Baselines, timed against our CUT step (their "reference" implementation is CUT). Fixed distance statistics, so
# that the online estimate (which the repeated benchmark images would make degenerate) is not timed.
BASELINES = {
    "CycleGAN": CycleGANObjective,
    "GcGAN": GcGANObjective,
    "DistanceGAN": lambda: DistanceGANObjective(stats_a=(0.5, 0.1), stats_b=(0.5, 0.1)),
    "SelfDistance": lambda: SelfDistanceObjective(stats_a=(0.3, 0.1), stats_b=(0.3, 0.1)),
}
MIN_BATCH = {"DistanceGAN": 2}
PRECISIONS = {"cpu": ["fp32", "bf16-mixed"], "cuda": ["fp32", "bf16-mixed", "bf16-cl-compile", "16-mixed"]}


class _ScaledOptimizer:
    """Routes ``step`` through a shared GradScaler (16-mixed with two optimizers: one scaler, ``update`` once)."""

    def __init__(self, opt, scaler):
        self.opt, self.scaler = opt, scaler

    def zero_grad(self, set_to_none: bool = True):
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        self.scaler.step(self.opt)


def _setup(cfg: dict, impl: str):
    """Networks at the paper's sizes, seeded, and a ``step(i)`` closure running one training iteration."""
    if cfg["preset"] in BASELINES:
        return _setup_baseline(cfg, impl)
    device, precision = torch.device(cfg["device"]), cfg["precision"]
    torch.manual_seed(0)
    obj = CUTObjective(**PRESETS[cfg["preset"]])
    G, D = ResnetGenerator(), PatchDiscriminator()
    H = PatchSampler(G.feature_channels(obj.nce_layers))
    shape = (cfg["batch"], 3, cfg["size"], cfg["size"])
    real_a, real_b = torch.randn(shape).tanh().to(device), torch.randn(shape).tanh().to(device)
    dtype = {"bf16-mixed": torch.bfloat16, "bf16-cl-compile": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    if impl == "reference":
        ref = ReferenceStep(obj, G, D, H, device)
        run = ref.step
    else:
        G, D, H = G.to(device), D.to(device), H.to(device)
        if precision == "bf16-cl-compile":
            G, D, H = (m.to(memory_format=torch.channels_last) for m in (G, D, H))
            real_a, real_b = (x.contiguous(memory_format=torch.channels_last) for x in (real_a, real_b))
            for net in (G, D, H):  # as CUTModule(compile=True): state-dict keys unchanged
                net.compile()
        adam = {"lr": 2e-4, "betas": (0.5, 0.999), "fused": True}  # as CUTModule (CUDA and CPU)
        opt_g = torch.optim.Adam([*G.parameters(), *H.parameters()], **adam)
        opt_d = torch.optim.Adam(D.parameters(), **adam)
        scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
        if scaler is not None:
            opt_g, opt_d = _ScaledOptimizer(opt_g, scaler), _ScaledOptimizer(opt_d, scaler)

        def run(a, b):
            backward = (lambda loss: scaler.scale(loss).backward()) if scaler is not None else None
            out = obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": a, "B": b},
                                {"generator": opt_g, "discriminator": opt_d}, backward=backward)
            if scaler is not None:
                scaler.update()
            return out

    def step(i: int) -> float:
        torch.manual_seed(1000 + i)  # same flips and patches for every implementation
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            run(real_a, real_b)
        _sync(device)
        return time.perf_counter() - t

    return step, G, real_a, dtype


def _setup_baseline(cfg: dict, impl: str):
    """``_setup`` for the baseline presets: ``ours`` is the baseline's iteration (fp32 / bf16-mixed / 16-mixed /
    compiled as CUT's), ``reference`` is our CUT step on the same inputs."""
    if impl == "reference":
        return _setup({**cfg, "preset": "CUT"}, "ours")
    device, precision = torch.device(cfg["device"]), cfg["precision"]
    torch.manual_seed(0)
    obj = BASELINES[cfg["preset"]]().to(device)
    if isinstance(obj, CycleGANObjective):  # original networks: G_A, G_B, D_A, D_B
        nets = list(cyclegan_networks())
        gens, discs = nets[:2], nets[2:]
    else:  # CUT's networks, no MLP heads
        gens, discs = [ResnetGenerator()], [PatchDiscriminator()]
    shape = (cfg["batch"], 3, cfg["size"], cfg["size"])
    real_a, real_b = torch.randn(shape).tanh().to(device), torch.randn(shape).tanh().to(device)
    dtype = {"bf16-mixed": torch.bfloat16, "bf16-cl-compile": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    nets = [net.to(device) for net in gens + discs]
    if precision == "bf16-cl-compile":
        nets = [m.to(memory_format=torch.channels_last) for m in nets]
        real_a, real_b = (x.contiguous(memory_format=torch.channels_last) for x in (real_a, real_b))
        for net in nets:
            net.compile()
    adam = {"lr": 2e-4, "betas": (0.5, 0.999), "fused": True}
    opt_g = torch.optim.Adam([p for net in nets[: len(gens)] for p in net.parameters()], **adam)
    opt_d = torch.optim.Adam([p for net in nets[len(gens):] for p in net.parameters()], **adam)
    scaler = torch.amp.GradScaler(device.type) if precision == "16-mixed" else None
    if scaler is not None:
        opt_g, opt_d = _ScaledOptimizer(opt_g, scaler), _ScaledOptimizer(opt_d, scaler)
    backward = (lambda loss: scaler.scale(loss).backward()) if scaler is not None else None

    def step(i: int) -> float:
        torch.manual_seed(1000 + i)
        _sync(device)
        t = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            obj.iteration(dict(zip(obj.roles(), nets)), {"A": real_a, "B": real_b},
                          {"generator": opt_g, "discriminator": opt_d}, backward=backward)
            if scaler is not None:
                scaler.update()
        _sync(device)
        return time.perf_counter() - t

    return step, nets[0], real_a, dtype


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inference_rate(G, x, reps: int, dtype=None) -> float:
    """Generator images per second (eval mode, inference_mode, autocast to ``dtype`` if given)."""
    was_training = G.training
    G.eval()
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        G(x)
        _sync(x.device)
        t = time.perf_counter()
        for _ in range(reps):
            G(x)
        _sync(x.device)
        rate = reps * x.shape[0] / (time.perf_counter() - t)
    G.train(was_training)
    return rate


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def worker(cfg: dict) -> dict:
    """Runs in a fresh process. ``time``: the implementations interleaved, iteration by iteration;
    ``mem``: one implementation, for its peak memory (RSS on CPU, max allocated on GPU)."""
    device = torch.device(cfg["device"])
    impls = cfg["impls"]
    steps = {impl: _setup(cfg, impl) for impl in impls}
    times = {impl: [] for impl in impls}
    # multiply-accumulates per iteration, counted on the (untimed) warm-up iterations; not under compile
    count = cfg["mode"] == "time" and cfg["precision"] != "bf16-cl-compile"
    macs = {impl: [] for impl in impls}
    for i in range(cfg["warmup"] + cfg["iters"]):
        dts, counting = {}, count and i < cfg["warmup"]
        for impl in impls:
            with FlopCounterMode(display=False) if counting else contextlib.nullcontext() as flops:
                dts[impl] = steps[impl][0](i)
            if counting:
                macs[impl].append(flops.get_total_flops() / 2)
        for impl, dt in dts.items():
            if i >= cfg["warmup"]:
                times[impl].append(dt)
        tag = "warm-up" if i < cfg["warmup"] else "iter"
        _log(f"    {tag} {i + 1}/{cfg['warmup'] + cfg['iters']}: " + ", ".join(f"{k} {v:.3f}s" for k, v in dts.items()))
    out = {"times": times}
    if count and cfg["warmup"]:
        out["gmac_per_iter"] = {impl: statistics.mean(m) / 1e9 for impl, m in macs.items()}
    if len(impls) == 1:  # only this implementation ran in the process: its peak is the process's peak
        out["peak_mb"] = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                          else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    if cfg["mode"] == "time" and "ours" in impls:
        _, G, x, dtype = steps["ours"]
        out["images_per_s"] = _inference_rate(G, x, cfg["inference_reps"], dtype)
    return out


FULL_GRID = [(256, 1), (256, 4), (128, 1), (128, 4)]


def parse_grid(text: str) -> list[tuple[int, int]]:
    """``"256x1,128x4"`` -> ``[(256, 1), (128, 4)]`` (image size x batch)."""
    grid = []
    for item in text.split(","):
        size, sep, batch = item.strip().partition("x")
        if not (sep and size.isdigit() and batch.isdigit() and int(size) > 0 and int(batch) > 0):
            raise ValueError(f"--grid: expected SIZExBATCH items like '256x1,128x4', got {item!r}")
        grid.append((int(size), int(batch)))
    return grid


def parse_presets(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in PRESETS and n not in BASELINES]
    if bad or not names:
        raise ValueError(f"--presets: unknown preset {bad[0] if bad else text!r}; expected names from "
                         + ", ".join([*PRESETS, *BASELINES]))
    return names


def _configs(device: str, quick: bool, grid: list[tuple[int, int]] | None = None,
             presets: list[str] | None = None) -> list[dict]:
    """CPU ``--quick`` keeps the 2-core run short (few iterations); on CUDA iterations are cheap, so even
    ``--quick`` takes medians over 20 (after 5 warm-up iterations, which also absorb compilation)."""
    grid = grid or ([(256, 1)] if quick else FULL_GRID)
    few = quick and device == "cpu"
    out = []
    for size, batch in grid:
        for preset in presets or PRESETS:
            if batch < MIN_BATCH.get(preset, 1):
                _log(f"skipping {preset} at batch {batch}: needs batch >= {MIN_BATCH[preset]}")
                continue
            for precision in PRECISIONS[device]:
                with_ref = precision == "fp32" or (not quick and precision == "bf16-mixed")
                out.append({"preset": preset, "size": size, "batch": batch, "precision": precision,
                            "device": device, "impls": ["ours", "reference"] if with_ref else ["ours"],
                            "warmup": 1 if few else (5 if device == "cuda" else 3),
                            "iters": (6 if with_ref else 3) if few else 20,
                            "inference_reps": 3 if few else 10})
    return out


def _spawn(cfg: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)],
                         stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_config(cfg: dict) -> dict:
    """Timing (implementations interleaved in one process), then peak memory of each in its own process."""
    _log(f"{cfg['preset']} {cfg['size']}px batch {cfg['batch']} {cfg['precision']}: timing {' vs '.join(cfg['impls'])}")
    timed = _spawn({**cfg, "mode": "time"})
    row = {k: cfg[k] for k in ("preset", "size", "batch", "precision", "device")}
    row["reference_is"] = "CUT (ours)" if cfg["preset"] in BASELINES else "reference-style"
    row["images_per_s"] = timed.get("images_per_s")
    for impl in cfg["impls"]:
        if "peak_mb" in timed:  # timed alone: the timing process's peak is this implementation's
            peak = timed["peak_mb"]
        else:
            _log(f"  peak memory of {impl}")
            peak = _spawn({**cfg, "mode": "mem", "impls": [impl], "warmup": 0, "iters": 2})["peak_mb"]
        ts = timed["times"][impl]
        row[impl] = {"sec_per_iter": statistics.median(ts), "all_sec": ts, "peak_mb": peak,
                     "gmac_per_iter": timed.get("gmac_per_iter", {}).get(impl)}
    if "reference" in cfg["impls"]:
        pairs = zip(timed["times"]["ours"], timed["times"]["reference"])
        row["ratio"] = statistics.median(o / r for o, r in pairs)  # median of per-iteration ratios
    _log(f"  -> ours {row['ours']['sec_per_iter']:.3f} s/iter" + (f", ratio to {row['reference_is']} {row['ratio']:.3f}"
                                                                   if "ratio" in row else ""))
    return row


def format_table(rows: list[dict]) -> str:
    head = (f"{'preset':8s} {'size':>4s} {'batch':>5s} {'precision':16s} {'ours s/it':>9s} {'ref s/it':>8s} "
            f"{'ratio':>6s} {'ours MB':>8s} {'ref MB':>7s} {'G img/s':>8s} {'GMAC ours/ref':>14s}  ref is")
    lines = [head, "-" * (len(head) + 10)]
    nan = float("nan")
    for r in rows:
        ref = r.get("reference") or {}
        macs = [r["ours"].get("gmac_per_iter")] + ([ref.get("gmac_per_iter")] if ref else [])
        macs_text = "/".join("-" if m is None else f"{m:.0f}" for m in macs)
        lines.append(
            f"{r['preset']:8s} {r['size']:4d} {r['batch']:5d} {r['precision']:16s} "
            f"{r['ours']['sec_per_iter']:9.3f} {ref.get('sec_per_iter', nan):8.3f} "
            f"{r.get('ratio', nan):6.3f} {r['ours']['peak_mb']:8.0f} "
            f"{ref.get('peak_mb', nan):7.0f} {r['images_per_s'] or nan:8.2f} {macs_text:>14s}  "
            f"{r.get('reference_is', 'reference-style') if ref else '-'}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256x256 batch 1 only, fewer iterations")
    parser.add_argument("--device", default="cpu", choices=sorted(PRECISIONS))
    parser.add_argument("--grid", default=None, type=parse_grid,
                        help="SIZExBATCH list, e.g. 256x1,256x4 (default: 256x1 with --quick, else "
                             + ",".join(f"{s}x{b}" for s, b in FULL_GRID) + ")")
    parser.add_argument("--presets", default=None, type=parse_presets,
                        help="comma-separated presets: " + ",".join([*PRESETS, *BASELINES])
                             + " (default CUT,FastCUT); baselines are timed against our CUT step")
    parser.add_argument("--out", default=None, help="JSON path (default bench_results/bench-<device>.json)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    out = Path(args.out or f"bench_results/bench-{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(), "quick": args.quick,
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "memory": "peak RSS (MB)" if args.device == "cpu" else "torch.cuda.max_memory_allocated (MB)"}
    configs = _configs(args.device, args.quick, args.grid, args.presets)
    rows, failed = [], []
    for cfg in configs:
        try:
            rows.append(run_config(cfg))
        except subprocess.CalledProcessError as err:  # e.g. out of memory: report it, measure the rest
            _log(f"  failed: {err}")
            failed.append({k: cfg[k] for k in ("preset", "size", "batch", "precision")})
        done = len(rows) + len(failed) == len(configs)  # written after every config: an interrupted run keeps its rows
        out.write_text(json.dumps({**meta, "complete": done, "results": rows, "failed": failed}, indent=1))
    print(format_table(rows) + "".join(f"\nfailed: {f}" for f in failed))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
