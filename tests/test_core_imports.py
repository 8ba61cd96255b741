import subprocess
import sys
import textwrap


def test_core_imports_without_lightning_or_hydra():
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in {'pytorch_lightning', 'lightning', 'hydra', 'omegaconf', 'wandb',
                                          'torchmetrics'}:
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import torch
        from cutlight.networks import ResnetGenerator, PatchSampler
        from cutlight.losses import PatchNCELoss
        import cutlight
        g = ResnetGenerator(ngf=4, n_blocks=1)
        s = PatchSampler(g.feature_channels([0, 4]), mlp_dim=8)
        x = torch.randn(1, 3, 8, 8)
        k, ids = s(g.encode(x, [0, 4]), 4)
        q, _ = s(g.encode(g(x), [0, 4]), patch_ids=ids)
        print(float(PatchNCELoss()(q, k)))
        assert 'pytorch_lightning' not in sys.modules and 'hydra' not in sys.modules
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    float(res.stdout.strip())
