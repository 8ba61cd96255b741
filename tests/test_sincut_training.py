"""SinCUT through the Lightning / Hydra machinery (``experiment=sincut`` / ``sincut_cpu``): the entrypoint trains and
writes the full-image translation at the source's size; validation never shows D a full image; prediction and
``cutlight.translate`` work on the whole (odd-sized) image; validation pictures are reproducible and leave the
training RNG alone; the datamodule samples deterministically and names the config key in its errors; the configs
hold the reference settings and mirror the constructors; bf16 autocast with R1 on CPU; DDP with 2 CPU processes."""

from __future__ import annotations

import csv
import inspect
import socket
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from PIL import Image

import cutlight
from cutlight import CUTModule, SingleImageDataModule
from cutlight.data.builtin_pair import HEIGHT, WIDTH
from cutlight.lightning.callbacks import FullImageTranslation
from cutlight.lightning.callbacks.drawing import full_image_panel
from cutlight.networks import PatchSampler, StyleGAN2Discriminator, StyleGAN2Generator
from cutlight.objectives import SinCUTObjective
from helpers import K_LAYER, K_NETWORK, assert_scaled_close, run_entrypoint, tiny_trainer
from test_config import compose_cfg

# experiment=sincut_cpu shrunk to seconds: tiny networks, 32 px patches, 2 steps per epoch, 1 + 1 epochs
TINY_SINCUT = ["experiment=sincut_cpu", "model.generator.ngf=2", "model.generator.n_blocks=2",
               "model.discriminator.ndf=1", "model.sampler.mlp_dim=16", "data.crop_size=32", "data.batch_size=2",
               "data.length=4", "model.n_epochs=1", "model.n_epochs_decay=1", "callbacks.full_image.nce_patches=16",
               "callbacks.image_grid.every_n_steps=2", "trainer.log_every_n_steps=1"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # the shared 2-core machines: contending OpenMP threads are many times slower


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def save_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8)
    Image.fromarray(pixels.numpy()).save(path)
    return path


@pytest.fixture
def odd_pair(tmp_path):
    """A 75 x 51 source (odd sizes: the generator needs multiples of 2) and a 40 x 66 target."""
    return save_image(tmp_path / "a.png", 75, 51, seed=1), save_image(tmp_path / "b.png", 40, 66, seed=2)


def tiny_module(**overrides) -> CUTModule:
    kwargs = dict(
        generator={"_target_": "cutlight.networks.StyleGAN2Generator", "ngf": 2, "n_blocks": 2, "load_size": 32,
                   "crop_size": 32},
        discriminator={"_target_": "cutlight.networks.StyleGAN2Discriminator", "ndf": 1, "size": 32},
        sampler={"mlp_dim": 16},
        objective={"_target_": "cutlight.objectives.SinCUTObjective"},
        optimizer={"lr": 0.002, "betas": [0.0, 0.99]},
        n_epochs=1, n_epochs_decay=0, val_metrics=False,
    )
    return CUTModule(**{**kwargs, **overrides})


def tiny_data(path_a, path_b, **overrides) -> SingleImageDataModule:
    kwargs = dict(load_size=40, crop_size=32, batch_size=2, length=4, num_workers=0)
    return SingleImageDataModule(str(path_a), str(path_b), **{**kwargs, **overrides})


def test_sincut_trains_through_the_hydra_entrypoint(tmp_path):
    run = tmp_path / "run"
    res = run_entrypoint([*TINY_SINCUT, f"hydra.run.dir={run}"], tmp_path, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "full image (source | translation | target)" in res.stdout
    translations = sorted((run / "images").glob("translation_step_*.png"))
    panels = sorted((run / "images").glob("full_step_*.png"))
    assert len(translations) == len(panels) == 2  # one per validation (2 epochs); the last one shows the final G
    assert Image.open(translations[-1]).size == (WIDTH, HEIGHT)  # the built-in source's own size
    assert Image.open(panels[-1]).size == (3 * WIDTH + 2 * 4, HEIGHT)  # source | translation | target (same size)
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    header = set(rows[0])
    for key in ("train/loss_d", "train/loss_r1", "train/loss_g_gan", "train/loss_nce", "train/loss_nce_idt",
                "train/loss_idt", "val/nce", "val/nce_idt", "perf/peak_mem_mb"):
        assert key in header, key
    assert not any(k.startswith(("val/fid", "val/kid")) for k in header)  # FID/KID off for one image
    assert all(float(r["train/loss_r1"]) > 0 for r in rows if r.get("train/loss_r1"))  # R1 every D step
    generator = cutlight.load_generator(run / "checkpoints" / "last.ckpt")  # rebuilt from the checkpoint alone
    assert isinstance(generator, StyleGAN2Generator) and generator.ngf == 2
    source = Image.open(next((tmp_path / "cache").rglob("landscape.png")))
    assert cutlight.translate(generator, source).size == source.size


def test_full_image_validation_and_prediction_at_odd_sizes(tmp_path, odd_pair):
    pl.seed_everything(0)
    model, dm = tiny_module(), tiny_data(*odd_pair)
    d_inputs = []
    model.discriminator.register_forward_pre_hook(lambda m, args: d_inputs.append(tuple(args[0].shape[-2:])))
    callback = FullImageTranslation(nce_patches=16)
    trainer = tiny_trainer(tmp_path, max_epochs=-1, callbacks=[callback])
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 2 * 2  # 2 batches, a D and a G step each
    assert d_inputs and set(d_inputs) == {(32, 32)}  # D saw training patches only, never the full images
    translation = Image.open(sorted((tmp_path / "images").glob("translation_step_*.png"))[-1])
    assert translation.size == (75, 51)
    assert Image.open(callback.last_path).size == (75 + 75 + round(40 * 51 / 66) + 8, 51)
    metrics = trainer.callback_metrics
    assert 0 < float(metrics["val/nce"]) < 10 and 0 < float(metrics["val/nce_idt"]) < 10

    (pred,) = trainer.predict(model, datamodule=dm)  # the full A image through predict_dataloader
    assert pred["image"].shape == (1, 3, 51, 75) and pred["path"] == [str(odd_pair[0])]
    assert pred["image"].abs().max() <= 1
    model.generator.eval()
    assert cutlight.translate(model.generator, Image.open(odd_pair[0])).size == (75, 51)
    x = dm.full_images()[0]  # (1, 3, 51, 75): padded to 52 x 76 inside, cropped back
    assert model.eval()(x).shape == (1, 3, 51, 75)


def test_validation_pictures_are_reproducible_and_leave_the_training_rng_alone(tmp_path, odd_pair):
    model, dm = tiny_module(), tiny_data(*odd_pair)
    model.generator.decoder.convs[1].noise.weight.data.fill_(0.5)  # make the noise injection visible

    class Checked(FullImageTranslation):
        def write(self, trainer, module, with_metrics):
            state = torch.get_rng_state()
            out = super().write(trainer, module, with_metrics)
            self.rng_kept = torch.equal(torch.get_rng_state(), state)
            return out

    def validate(seed):
        callback = Checked(nce_patches=16, seed=seed)
        trainer = tiny_trainer(tmp_path, callbacks=[callback])
        torch.manual_seed(123)
        trainer.validate(model, datamodule=dm, verbose=False)
        assert callback.rng_kept  # noise and patch positions came from a forked RNG
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        return Image.open(callback.last_path).tobytes(), metrics

    image, metrics = validate(seed=0)
    assert set(metrics) == {"val/nce", "val/nce_idt"}
    assert validate(seed=0) == (image, metrics)
    assert validate(seed=1)[0] != image  # the seed does fix the noise


def test_displayed_and_predicted_images_are_clamped(tmp_path, odd_pair):
    source = torch.zeros(1, 3, 4, 6)
    panel = full_image_panel(source, torch.full((1, 3, 4, 6), 3.0), torch.full((1, 3, 8, 4), -3.0), gap=2)
    assert panel.shape == (3, 4, 6 + 2 + 6 + 2 + 2) and panel.dtype == torch.uint8
    assert (panel[:, :, 8:14] == 255).all() and (panel[:, :, 16:] == 0).all()
    model = tiny_module()
    model.generator.decoder.convs[-1][-1].bias.data.fill_(5.0)  # the last fused leaky ReLU: no tanh after it
    x = torch.zeros(1, 3, 8, 8)
    assert model(x).min() > 1  # the math is not clamped ...
    out = model.predict_step({"image": x, "path": ["x"]}, 0)
    assert torch.equal(out["image"], torch.ones(1, 3, 8, 8))  # ... the predicted image is


@pytest.mark.numeric
def test_evaluation_nce_is_patch_nce_over_the_full_image():
    from cutlight.losses import patch_nce_loss

    torch.manual_seed(0)
    obj = SinCUTObjective()
    G = StyleGAN2Generator(ngf=2, n_blocks=2, crop_size=32)
    H = PatchSampler(G.feature_channels(obj.nce_layers), mlp_dim=16)
    real = torch.rand(1, 3, 20, 26) * 2 - 1
    fake = G(real)
    torch.manual_seed(1)
    got = obj.evaluation_nce(G, H, real, fake, num_patches=32)
    torch.manual_seed(1)  # the same positions, drawn layer by layer
    per_layer = []
    for k, q in zip(G.encode(real, obj.nce_layers), G.encode(fake, obj.nce_layers)):
        ids = torch.randperm(k.shape[-2] * k.shape[-1])[:32]
        fk, fq = k.flatten(2)[..., ids].transpose(1, 2), q.flatten(2)[..., ids].transpose(1, 2)  # (1, S, C)
        head = getattr(H, f"mlp_{len(per_layer)}")
        fk, fq = (head(f) / (head(f).norm(dim=-1, keepdim=True) + 1e-7) for f in (fk, fq))  # reference eps
        logits = fq[0] @ fk[0].T / obj.nce_temperature  # (S, S): the diagonal holds the positives
        per_layer.append(torch.nn.functional.cross_entropy(logits, torch.arange(len(ids))))
        assert_scaled_close(patch_nce_loss(fq, fk, obj.nce_temperature).mean(), per_layer[-1], K_LAYER)
    assert_scaled_close(got, torch.stack(per_layer).mean(), K_NETWORK)  # batched vs per-layer encodes
    assert obj.evaluation_nce(G, H, real, real, 32) < got  # the identity "translation" keeps content best


def test_datamodule_sampling_is_deterministic_under_a_seed(odd_pair):
    def batches(seed, num_workers=0):
        pl.seed_everything(seed, workers=True)
        dm = tiny_data(*odd_pair, crop_size=16, length=6, num_workers=num_workers)
        dm.setup("fit")
        return [torch.cat([b["A"], b["B"]]) for b in dm.train_dataloader()]

    first = batches(0)
    assert len(first) == 3 and first[0].shape == (4, 3, 16, 16)
    assert all(torch.equal(a, b) for a, b in zip(first, batches(0)))
    assert not torch.equal(first[0], batches(1)[0])
    with_workers = batches(0, num_workers=2)
    assert all(torch.equal(a, b) for a, b in zip(with_workers, batches(0, num_workers=2)))


def test_bad_inputs_name_the_config_key(tmp_path, odd_pair):
    path_a, path_b = odd_pair
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        save_image(folder / f"{i}.png", 20, 20, seed=i)
    with pytest.raises(ValueError, match=r"data\.image_a.*folder with 3 images"):
        SingleImageDataModule(str(folder), str(path_b))
    with pytest.raises(FileNotFoundError, match=r"data\.image_a.*missing\.png.*does not exist"):
        SingleImageDataModule(str(tmp_path / "missing.png"), str(path_b))
    with pytest.raises(FileNotFoundError, match=r"data\.image_b"):
        SingleImageDataModule(str(path_a), str(tmp_path / "missing.png"))
    with pytest.raises(ValueError, match="give both image_a and image_b"):
        SingleImageDataModule(str(path_a), None)
    with pytest.raises(ValueError, match="length 2 .* smaller than batch_size 4"):
        SingleImageDataModule(str(path_a), str(path_b), batch_size=4, length=2)
    # and on the command line, before any training
    res = run_entrypoint([*TINY_SINCUT, f"data.image_a={folder}", f"data.image_b={path_b}",
                          f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, env=ONE_THREAD)
    assert res.returncode != 0 and "data.image_a" in res.stderr and "folder with 3 images" in res.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_configs_hold_the_reference_settings_and_mirror_the_constructors(tmp_path):
    cfg = compose_cfg(["experiment=sincut"], tmp_path)
    model, data, obj = cfg.model, cfg.data, cfg.model.objective
    assert get_class(model.generator._target_) is StyleGAN2Generator
    assert get_class(model.discriminator._target_) is StyleGAN2Discriminator
    assert get_class(obj._target_) is SinCUTObjective and get_class(data._target_) is SingleImageDataModule
    for node, cls, extra in ((model.generator, StyleGAN2Generator, set()),
                             (model.discriminator, StyleGAN2Discriminator, set()),
                             (model.sampler, PatchSampler, {"in_channels"}), (obj, SinCUTObjective, set()),
                             (data, SingleImageDataModule, set())):
        assert set(node) - {"_target_"} | extra == set(inspect.signature(cls).parameters), cls.__name__
    assert set(model) - {"_target_", "_recursive_"} == set(inspect.signature(CUTModule).parameters)
    assert (obj.lambda_nce, list(obj.nce_layers), obj.num_patches, obj.negatives) == (4.0, [0, 2, 4], 1, "batch")
    assert (obj.gan_mode, obj.lambda_r1, obj.lambda_identity, obj.nce_idt) == ("nonsaturating", 1.0, 1.0, True)
    assert (model.optimizer.lr, list(model.optimizer.betas)) == (0.002, [0.0, 0.99])
    assert (model.n_epochs, model.n_epochs_decay, dict(model.val_metrics)) == (8, 8, {"fid": False, "kid": False})
    assert (model.generator.ngf, model.generator.n_blocks, model.generator.num_downsampling) == (10, 6, 1)
    assert (model.generator.load_size, model.generator.crop_size) == (1024, 64)
    assert (model.discriminator.ndf, model.discriminator.size) == (8, 64)
    assert (data.load_size, data.crop_size, data.random_scale_max, data.flip) == (1024, 64, 3.0, True)
    assert (data.batch_size, data.length) == (16, 100_000)
    assert cfg.trainer.accelerator == "gpu"
    cpu = compose_cfg(["experiment=sincut_cpu", "data.crop_size=32"], tmp_path)
    assert cpu.trainer.accelerator == "cpu"
    assert cpu.model.discriminator.size == cpu.model.generator.crop_size == 32  # follow data.crop_size


def test_bf16_autocast_training_with_r1_on_cpu(tmp_path, odd_pair):
    pl.seed_everything(0)
    model = tiny_module()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logged = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    trainer = tiny_trainer(tmp_path, precision="bf16-mixed", max_epochs=-1, callbacks=[Record()])
    trainer.fit(model, datamodule=tiny_data(*odd_pair))
    assert len(logged) == 2
    for losses in logged:
        assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
        assert losses["train/loss_r1"] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: weights stay fp32
    for net in ("generator", "discriminator", "sampler"):
        assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith(net)), net


class RankRecorder(pl.Callback):
    """In every DDP worker: the first batch with the RNG state and weights before it, D's Adam ``exp_avg`` after it
    (with beta1 = 0 that is exactly the gradient D was updated with), and the final weights."""

    def __init__(self, out_dir: str):
        self.out_dir, self.record = out_dir, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            self.record.update(rng=torch.get_rng_state(), batch=(batch["A"].clone(), batch["B"].clone()),
                               initial={k: v.detach().clone() for k, v in pl_module.state_dict().items()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 2:  # after the first iteration (a D and a G step)
            opt_d = trainer.optimizers[1]
            self.record["d_grad"] = [opt_d.state[p]["exp_avg"].clone() for p in pl_module.discriminator.parameters()]

    def on_train_end(self, trainer, pl_module):
        self.record.update(state={k: v.detach().clone() for k, v in pl_module.state_dict().items()},
                           steps=trainer.global_step, r1=float(trainer.callback_metrics["train/loss_r1"]))
        torch.save(self.record, Path(self.out_dir) / f"rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_r1_double_backward(tmp_path, odd_pair):
    """ddp_spawn with 2 gloo processes: the R1 penalty's double backward through DDP-wrapped training. D's first
    update uses the mean of the two ranks' single-process D-step gradients (R1 included), and both ranks end with
    identical weights although they drew different patches."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    model = tiny_module()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MASTER_ADDR", "127.0.0.1")
        mp.setenv("MASTER_PORT", str(port))
        pl.seed_everything(0)
        trainer = tiny_trainer(tmp_path, devices=2, strategy="ddp_spawn_find_unused_parameters_true", max_epochs=-1,
                               callbacks=[RankRecorder(str(tmp_path)), FullImageTranslation(nce_patches=16)])
        trainer.fit(model, datamodule=tiny_data(*odd_pair, length=8))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    r0, r1 = ranks
    assert r0["steps"] == r1["steps"] == 2 * 2  # 8 samples / batch 2 / 2 ranks, a D and a G step each
    assert r0["r1"] > 0 and r1["r1"] > 0 and r0["r1"] != r1["r1"]  # different patches per rank
    for name, tensor in r0["state"].items():
        assert torch.equal(tensor, r1["state"][name]), name
    changed = [k for k, v in r0["state"].items() if not torch.equal(v, r0["initial"][k])]
    assert {k.split(".")[0] for k in changed} == {"generator", "discriminator", "sampler"}

    # single-process replay of each rank's first D step (its RNG: the generator's noise), gradients averaged
    replay = tiny_module()
    per_rank = []
    for rec in ranks:
        replay.load_state_dict(rec["initial"])
        torch.set_rng_state(rec["rng"])
        out = replay.objective.translate(replay.generator, *rec["batch"])
        loss_d = replay.objective.discriminator_losses(replay.discriminator, rec["batch"][1], out.fake_b)["loss_d"]
        per_rank.append(torch.autograd.grad(loss_d, list(replay.discriminator.parameters()), allow_unused=True,
                                            materialize_grads=True))
    for ddp_grad, g0, g1 in zip(r0["d_grad"], *per_rank, strict=True):
        assert_scaled_close(ddp_grad, (g0 + g1) / 2, K_NETWORK)  # gloo's all-reduce vs a replay: round-off
    assert not torch.allclose(per_rank[0][0], per_rank[1][0])  # the comparison can fail: the ranks differ
    assert Image.open(sorted((tmp_path / "images").glob("translation_step_*.png"))[-1]).size == (75, 51)


def test_readme_sincut_snippet_runs(tmp_path, odd_pair):
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "SingleImageDataModule(" in b]
    replacements = {
        'image_a="photo.jpg", image_b="painting.jpg"': f"image_a={str(odd_pair[0])!r}, image_b={str(odd_pair[1])!r}, "
                                                        "load_size=40, crop_size=32, batch_size=2, length=4, num_workers=0",
        '{"_target_": "cutlight.networks.StyleGAN2Generator"}':
            '{"_target_": "cutlight.networks.StyleGAN2Generator", "ngf": 2, "n_blocks": 2, "crop_size": 32}',
        '{"_target_": "cutlight.networks.StyleGAN2Discriminator"}':
            '{"_target_": "cutlight.networks.StyleGAN2Discriminator", "ndf": 1, "size": 32}',
        'accelerator="gpu", max_epochs=16': f'accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False, '
                                            f'enable_progress_bar=False, default_root_dir={str(tmp_path)!r}',
    }
    for old, new in replacements.items():
        assert old in snippet, old
        snippet = snippet.replace(old, new)
    scope = {}
    exec(compile(snippet, "README", "exec"), scope)
    assert scope["trainer"].global_step == 2 * 2
    assert scope["result"]["image"].shape == (1, 3, 51, 75)
    assert list((tmp_path / "images").glob("full_step_*.png"))
