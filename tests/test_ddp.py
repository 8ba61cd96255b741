"""CUT under DistributedDataParallel: 2 CPU processes (gloo) through Lightning's ``ddp_spawn`` strategy.

One 2-process fit (module fixture) records, per rank: the first batch, the RNG state and weights before it, the
logged PatchNCE losses of that step, and the final parameters and Adam states. The tests then check that
* validation FID/KID under DDP equal the single-process values on the same weights and images (5 A, 7 B: a
  padding sampler would duplicate images and change them);
* all ranks end with identical G, D and MLP-head parameters (and Adam moments), although they saw different data;
* each rank's PatchNCE loss is the single-process loss of that rank's images (negatives stay within an image,
  nothing gathered across ranks, no world-size scaling).
The train command with ``trainer=ddp_cpu`` (Ctrl-C, then resume to the end) is tested in ``test_run_safety.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from cutlight import CUTModule
from cutlight.data import UnpairedDataModule
from cutlight.data.builtin import generate_image
from helpers import TINY_MODEL, tiny_trainer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

REPO = Path(__file__).resolve().parents[1]
STRATEGY = "ddp_spawn_find_unused_parameters_true"  # as conf/trainer/ddp_cpu.yaml
TINY = TINY_MODEL
N_TRAIN, N_VAL_A, N_VAL_B = 6, 5, 7  # 3 training steps per rank; odd validation sets (uneven shards)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_dataset(root: Path) -> Path:
    for split, domain, n in (("train", "A", N_TRAIN), ("train", "B", N_TRAIN), ("test", "A", N_VAL_A),
                             ("test", "B", N_VAL_B)):
        folder = root / f"{split}{domain}"
        folder.mkdir(parents=True)
        for i in range(n):
            generate_image(split, domain, i, 32).save(folder / f"{i:03d}.png")
    return root


def datamodule(root: Path) -> UnpairedDataModule:
    return UnpairedDataModule(root=str(root), load_size=32, crop_size=32, preprocess="crop", flip=False,
                              batch_size=1, val_batch_size=2, num_workers=0)


def tiny_module(seed: int = 0) -> CUTModule:
    torch.manual_seed(seed)
    return CUTModule(**TINY)


trainer = tiny_trainer


def _clone(tree):
    if isinstance(tree, torch.Tensor):
        return tree.detach().clone().cpu()
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_clone(v) for v in tree)
    return tree


class RankRecorder(pl.Callback):
    """Runs in every DDP worker; writes ``rank{r}.pt`` into ``out_dir`` at the end of training."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.record: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 0:
            self.record.update(
                rng=torch.get_rng_state(), state_dict=_clone(pl_module.state_dict()),
                real_a=_clone(batch["A"]), real_b=_clone(batch["B"]), paths=(batch["A_path"], batch["B_path"]),
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == 0 and batch_idx == 0:  # this rank's own (unsynced) step-0 losses
            self.record["losses"] = {k: float(trainer.callback_metrics[f"train/{k}"])
                                     for k in ("loss_nce", "loss_nce_idt", "loss_d", "loss_g")}

    def on_train_end(self, trainer, pl_module):
        self.record["final"] = _clone(pl_module.state_dict())
        self.record["adam"] = [_clone(opt.state_dict()["state"]) for opt in trainer.optimizers]
        self.record["steps"] = trainer.fit_loop.epoch_loop._batches_that_stepped
        torch.save(self.record, Path(self.out_dir) / f"rank{trainer.global_rank}.pt")


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory):
    """A 2-process fit of 3 steps per rank followed by one validation; returns what the ranks recorded."""
    tmp = tmp_path_factory.mktemp("ddp")
    root = write_dataset(tmp / "data")
    module = tiny_module()
    initial = _clone(module.state_dict())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASTER_ADDR", "127.0.0.1")
        mp.setenv("MASTER_PORT", str(free_port()))
        pl.seed_everything(0)
        t = trainer(tmp, devices=2, strategy=STRATEGY, callbacks=[RankRecorder(str(tmp))])
        t.fit(module, datamodule=datamodule(root))
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]
    metrics = {k: float(v) for k, v in t.callback_metrics.items()}
    return dict(root=root, tmp=tmp, module=module, initial=initial, ranks=ranks, metrics=metrics)




def test_ddp_validation_fid_equals_single_process(ddp_fit, tmp_path):
    module = ddp_fit["module"]  # rank 0's trained weights, returned by the spawn launcher
    rank0_final = ddp_fit["ranks"][0]["final"]
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, rank0_final[name]), name
    single = trainer(tmp_path)
    single.validate(module, datamodule=datamodule(ddp_fit["root"]), verbose=False)
    ddp, ref = ddp_fit["metrics"], {k: float(v) for k, v in single.callback_metrics.items()}
    assert ref["val/fid"] > 1e-3
    assert ddp["val/fid"] == pytest.approx(ref["val/fid"], rel=1e-6)  # float64 sums: equal up to rounding

    # The comparison can fail: one duplicated real or fake image (what padding does) moves FID by > 1e-3.
    from cutlight.metrics import Evaluator
    from helpers import TinyFeatureExtractor

    dm = datamodule(ddp_fit["root"])
    dm.setup("validate")
    real_a = torch.stack([dm.val_dataset_a[i]["image"] for i in range(N_VAL_A)])
    real_b = torch.stack([dm.val_dataset_b[i]["image"] for i in range(N_VAL_B)])
    with torch.no_grad():
        fake_b = module.eval()(real_a)

    def fid(reals, fakes):
        metric = Evaluator(kid=False, extractor=TinyFeatureExtractor(16))
        metric.update(reals, real=True)
        metric.update(fakes, real=False)
        return float(metric.compute()["fid"])

    assert fid(real_b, fake_b) == pytest.approx(ref["val/fid"], rel=1e-6)
    padded = fid(torch.cat([real_b, real_b[:1]]), torch.cat([fake_b, fake_b[:1]]))
    assert abs(padded - ref["val/fid"]) > 1e-3 * ref["val/fid"]

    # KID: seeded subsets of the gathered features, which come in rank order (rank 0's strided shard first);
    # with the features in that order a single-process KID reproduces the DDP value exactly.
    def kid(reals, fakes):
        metric = Evaluator(fid=False, extractor=TinyFeatureExtractor(16))
        metric.update(reals, real=True)
        metric.update(fakes, real=False)
        return float(metric.compute()["kid"])  # subsets from the fixed KID_SEED, as in training

    rank_order = lambda n: [*range(0, n, 2), *range(1, n, 2)]  # noqa: E731
    assert kid(real_b, fake_b) == pytest.approx(ref["val/kid"], rel=1e-6)
    assert ddp["val/kid"] == pytest.approx(kid(real_b[rank_order(N_VAL_B)], fake_b[rank_order(N_VAL_A)]), rel=1e-6)


def test_ddp_ranks_hold_identical_parameters(ddp_fit):
    r0, r1 = ddp_fit["ranks"]
    assert r0["steps"] == r1["steps"] == N_TRAIN // 2
    # The ranks trained on different images (DistributedSampler) and so computed different losses ...
    assert r0["paths"] != r1["paths"]
    assert r0["losses"]["loss_nce"] != r1["losses"]["loss_nce"]
    # ... yet hold the same weights afterwards: gradients were averaged for G, D and the heads.
    groups = {"generator", "discriminator", "sampler"}
    assert {k.split(".")[0] for k in r0["final"]} == groups
    for name, tensor in r0["final"].items():
        assert torch.equal(tensor, r1["final"][name]), name
        if tensor.is_floating_point() and name.endswith("weight"):
            assert not torch.equal(tensor, ddp_fit["initial"][name]), f"{name} did not train"
    for opt0, opt1 in zip(r0["adam"], r1["adam"], strict=True):  # same averaged gradients -> same moments
        assert opt0.keys() == opt1.keys() and len(opt0) > 0
        for idx in opt0:
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(opt0[idx][key], opt1[idx][key]), (idx, key)


def _replay_first_step(record: dict, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
    """Single process: the rank's starting weights and RNG state, one objective iteration on the given images."""
    module = tiny_module(seed=123)  # different init, overwritten below
    module.load_state_dict(record["state_dict"])
    module.train()
    opt_g = torch.optim.Adam([*module.generator.parameters(), *module.sampler.parameters()], lr=2e-4,
                             betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(module.discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(record["rng"])  # -> the same patch positions as on the rank
        losses = module.objective.iteration(module.nets, {"A": real_a, "B": real_b},
                                            {"generator": opt_g, "discriminator": opt_d})
    return {k: float(v) for k, v in losses.items()}


def test_ddp_patch_nce_per_rank_equals_single_process(ddp_fit):
    r0, r1 = ddp_fit["ranks"]
    for name, tensor in r0["state_dict"].items():  # DDP broadcast rank 0's weights before the first step
        assert torch.equal(tensor, r1["state_dict"][name]), name
        assert torch.equal(tensor, ddp_fit["initial"][name]), name
    for record in (r0, r1):
        replay = _replay_first_step(record, record["real_a"], record["real_b"])
        for key in ("loss_nce", "loss_nce_idt", "loss_d", "loss_g"):
            assert record["losses"][key] == pytest.approx(replay[key], rel=1e-5), key
    # The comparison can fail: the same weights and RNG on the other rank's images give another loss.
    swapped = _replay_first_step(r0, r1["real_a"], r1["real_b"])
    assert abs(swapped["loss_nce"] - r0["losses"]["loss_nce"]) > 1e-3
