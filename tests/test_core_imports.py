"""Import boundaries: the plain-PyTorch parts import with Lightning and Hydra blocked; only the LightningModules,
the DataModules, the callbacks and the training entrypoint need Lightning, and only the entrypoint needs Hydra."""

import subprocess
import sys
import textwrap

BLOCKER = """
import sys
BLOCKED = set({blocked!r})
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
            raise ModuleNotFoundError('blocked ' + name)
sys.meta_path.insert(0, Block())
"""

PLAIN = ["cutlight", "cutlight.checks", "cutlight.specs", "cutlight.networks", "cutlight.losses",
         "cutlight.objectives", "cutlight.optim", "cutlight.data", "cutlight.data.folder", "cutlight.data.transforms",
         "cutlight.data.datasets", "cutlight.data.builtin", "cutlight.viz", "cutlight.checkpoint",
         "cutlight.data.image_checks", "cutlight.data.resumable"]
WITH_METRICS = ["cutlight.metrics", "cutlight.inference", "cutlight.inference.evaluation"]  # torchmetrics, no Lightning
LIGHTNING = ["cutlight.lightning", "cutlight.data.datamodule", "cutlight.data.single_image_datamodule",
             "cutlight.lightning.callbacks", "cutlight.lightning.reliability", "cutlight.lightning.resume"]  # no Hydra


def run(code: str, blocked: set[str]) -> subprocess.CompletedProcess:
    full = BLOCKER.format(blocked=sorted(blocked)) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", full], capture_output=True, text=True, timeout=180)


def import_all(modules: list[str], blocked: set[str]) -> None:
    """Import each module in one fresh interpreter with ``blocked`` packages unavailable; fail naming the modules
    that could not be imported and why."""
    code = f"""
import importlib, traceback
failed = []
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{{name}}: {{type(err).__name__}}: {{err}}")
print("\\n".join(failed))
"""
    res = run(code, blocked)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "", res.stdout


def test_plain_pytorch_modules_import_without_lightning_hydra_or_torchmetrics():
    import_all(PLAIN, {"pytorch_lightning", "lightning", "hydra", "omegaconf", "wandb", "torchmetrics"})


def test_metrics_evaluate_and_inference_import_without_lightning_or_hydra():
    import_all(WITH_METRICS, {"pytorch_lightning", "lightning", "hydra", "omegaconf", "wandb"})


def test_lightning_layer_imports_without_hydra():
    import_all(LIGHTNING, {"hydra", "omegaconf"})


def test_the_ten_line_core_snippet_runs_without_lightning_or_hydra():
    res = run(
        """
        import torch
        from cutlight.networks import ResnetGenerator, PatchSampler
        from cutlight.losses import PatchNCELoss
        g = ResnetGenerator(ngf=4, n_blocks=1)
        s = PatchSampler(g.feature_channels([0, 4]), mlp_dim=8)
        x = torch.randn(1, 3, 8, 8)
        k, ids = s(g.encode(x, [0, 4]), 4)
        q, _ = s(g.encode(g(x), [0, 4]), patch_ids=ids)
        print(float(PatchNCELoss()(q, k)))
        """,
        {"pytorch_lightning", "lightning", "hydra", "omegaconf", "wandb", "torchmetrics"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    float(res.stdout.strip())
