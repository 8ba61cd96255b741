"""What the hand-written CPU fast path saves of a training iteration.

``python benchmarks/fast_paths.py [SIZE] [ITERS] [CUT|FastCUT]`` runs the same CUT iteration with the fast path on
("base") and with the blur-downsampling autograd Function replaced by pad + conv ("no_blur"), interleaved
iteration by iteration in one process (each variant on its own copy of the networks), and prints the median of
the per-iteration ratios to "base". (Measured with this script and removed since: the residual blocks' fused
reflect-pad conv, ~1.5%, and sparse gradients for the sampled query columns, 2.2%: both under the 3% bar.)
"""

import contextlib
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import cutlight.networks.layers as layers
from cutlight.networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from cutlight.objectives import CUTObjective

PRESETS = {"CUT": {}, "FastCUT": {"lambda_nce": 10.0, "nce_idt": False, "flip_equivariance": True}}
VARIANTS = ["base", "no_blur"]
ORIGINAL = {"blur": layers.BlurDownsample.forward}


def plain_blur(self, x):
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.filt.to(x.dtype), stride=2, groups=x.shape[1])


@contextlib.contextmanager
def variant(name: str):
    if name == "no_blur":
        layers.BlurDownsample.forward = plain_blur
    try:
        yield
    finally:
        layers.BlurDownsample.forward = ORIGINAL["blur"]


def main(size: int, iters: int, preset: str) -> None:
    setups = {}
    for name in VARIANTS:
        torch.manual_seed(0)
        obj = CUTObjective(**PRESETS[preset])
        G, D = ResnetGenerator(), PatchDiscriminator()
        H = PatchSampler(G.feature_channels(obj.nce_layers))
        adam = {"lr": 2e-4, "betas": (0.5, 0.999), "fused": True}
        setups[name] = (obj, G, D, H, torch.optim.Adam([*G.parameters(), *H.parameters()], **adam),
                        torch.optim.Adam(D.parameters(), **adam))
    a, b = torch.randn(1, 3, size, size).tanh(), torch.randn(1, 3, size, size).tanh()
    times = {name: [] for name in VARIANTS}
    for i in range(iters + 1):  # the first round is warm-up
        for name in VARIANTS:
            obj, G, D, H, opt_g, opt_d = setups[name]
            torch.manual_seed(100 + i)
            with variant(name):
                t = time.perf_counter()
                obj.iteration({"generator": G, "discriminator": D, "sampler": H}, {"A": a, "B": b},
                              {"generator": opt_g, "discriminator": opt_d})
                dt = time.perf_counter() - t
            if i:
                times[name].append(dt)
        print(i, {k: round(v[-1], 3) for k, v in times.items() if v}, flush=True)
    for name in VARIANTS[1:]:
        ratio = statistics.median(x / y for x, y in zip(times[name], times["base"]))
        print(f"{preset} {size}px: {name} / base = {ratio:.3f} (median s/iter: base "
              f"{statistics.median(times['base']):.3f}, {name} {statistics.median(times[name]):.3f})")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(int(args[0]) if args else 256, int(args[1]) if len(args) > 1 else 8, args[2] if len(args) > 2 else "CUT")
