import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# the tests' own networks and feature extractors (helpers.TinyFeatureExtractor, test_contract._OwnHeads, ...) are
# named by _target_ like a user's own: trusted by prefix (cutlight.specs). tests/test_trust.py clears this.
os.environ.setdefault("CUTLIGHT_TRUSTED_MODULES", "helpers,test_contract")
# at most 2 intra-op threads (the CI machine's cores), or what OMP_NUM_THREADS asks for (tests/run_kernel_matrix.sh).
# Under pytest-xdist (`make test` runs 2 workers) each worker takes an equal share of the cores, and the training
# subprocesses its tests start inherit it through OMP_NUM_THREADS: two workers with two OpenMP threads each on two
# cores made small ops many times slower (contending spin-waits).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and not os.environ.get("OMP_NUM_THREADS"):
    os.environ["OMP_NUM_THREADS"] = str(max(1, min(2, os.cpu_count() or 1) // _WORKERS))
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or max(1, min(2, os.cpu_count() or 1))))

# CUTLIGHT_TEST_MKLDNN=0: run the suite with oneDNN off (tests/run_kernel_matrix.sh; other kernels, other round-off)
if os.environ.get("CUTLIGHT_TEST_MKLDNN", "1") == "0":
    torch.backends.mkldnn.enabled = False

# Files whose every test compares numbers (the tolerance policy of tests/helpers.py); tests elsewhere that do are
# marked @pytest.mark.numeric one by one. `pytest -m numeric` runs them all (tests/run_kernel_matrix.sh).
NUMERIC_FILES = {"test_same_math.py", "test_cyclegan.py", "test_networks.py", "test_losses.py", "test_sincut.py",
                 "test_baselines.py", "test_stylegan2.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in NUMERIC_FILES:
            item.add_marker(pytest.mark.numeric)


def pytest_report_header(config):
    return (f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}, "
            f"{torch.get_num_threads()} threads, oneDNN {'on' if torch.backends.mkldnn.enabled else 'off'}")


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of tiny networks: on a busy 2-CPU machine two contending OpenMP threads made
    these small ops ~100x slower (measured)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_cut_run(tmp_path_factory):
    """One tiny CUT run through ``python -m cutlight.cli.train`` (two epochs on the built-in data, best-val/fid
    checkpoints, the best one tested after fit), shared by the tests that check what a run writes and says:
    ``res`` (the finished process), ``tmp`` (its working directory), ``run`` (its output folder, found under
    ``outputs/<date>/<overrides>/<time>``; None if the run failed, which the tests report with its stderr)."""
    from helpers import TINY_ARGS, run_entrypoint

    def train(tmp):
        res = run_entrypoint([*TINY_ARGS, "callbacks=best_fid", "test_after_fit=true"], tmp)
        runs = list((tmp / "outputs").glob("*/*/*"))
        return SimpleNamespace(res=res, tmp=tmp, run=runs[0] if res.returncode == 0 and len(runs) == 1 else None)

    if "PYTEST_XDIST_WORKER" not in os.environ:
        return train(tmp_path_factory.mktemp("tiny_cut_run"))
    # pytest-xdist: the first worker that needs the run trains it in the session's shared temporary folder, the
    # others wait for it and read its outcome (one run per test session, as without workers)
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent / "tiny_cut_run"  # the session's folder, above every worker's
    outcome = shared / "outcome.json"
    with FileLock(str(shared) + ".lock"):
        if not outcome.exists():
            shared.mkdir()
            ran = train(shared)
            res = ran.res
            outcome.write_text(json.dumps({"args": res.args, "returncode": res.returncode, "stdout": res.stdout,
                                           "stderr": res.stderr, "run": str(ran.run) if ran.run else None}))
    saved = json.loads(outcome.read_text())
    res = subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])
    return SimpleNamespace(res=res, tmp=shared, run=Path(saved["run"]) if saved["run"] else None)
