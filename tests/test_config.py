"""Every YAML in conf/ composes and instantiates; presets set the documented flags; the entrypoint runs."""

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf, open_dict

from cutlight import CUTObjective, PatchDiscriminator, PatchSampler, ResnetGenerator
from helpers import TINY_ARGS, TINY_EXTRACTOR, run_entrypoint

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def compose_cfg(overrides, tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.output_dir = str(tmp_path / "run")
        del cfg.hydra
    return cfg


def folder_root(tmp_path):
    from cutlight.data import ensure_builtin_dataset

    return ensure_builtin_dataset(size=32, num_train=4, num_test=2, cache_dir=str(tmp_path / "cache"))


def options():
    for group in GROUPS:
        for f in sorted((CONF / group).glob("*.yaml")):
            yield group, f.stem
    for group in ("hydra/launcher", "hydra/sweeper"):  # composing checks them against the plugin's schema
        for f in sorted((CONF / group).glob("*.yaml")):
            yield group, f.stem


# Options that only compose with a partner: CycleGAN's objective needs its networks (model=cyclegan brings the
# objective itself); SinCUT's generator has 11 layers (CUT's nce_layers reach 16).
PARTNERS = {("objective", "cyclegan"): ["model=cyclegan"], ("model", "stylegan2"): ["objective=sincut"]}


@pytest.mark.parametrize("group,option", list(options()))
def test_every_yaml_composes_and_instantiates(group, option, tmp_path):
    root = folder_root(tmp_path)
    cfg = compose_cfg([f"{group}={option}", *PARTNERS.get((group, option), [])], tmp_path)
    with open_dict(cfg):
        if cfg.data._target_.endswith("UnpairedDataModule"):
            cfg.data.root = str(root)
        else:
            cfg.data.cache_dir = str(tmp_path / "cache")
        if cfg.model.get("val_metrics"):
            cfg.model.val_metrics.extractor = TINY_EXTRACTOR
    OmegaConf.resolve(cfg)
    instantiate(cfg.data)
    model = instantiate(cfg.model)
    assert type(model.translator) is get_class(cfg.model.generator.get("_target_", "cutlight.ResnetGenerator"))
    for node in list((cfg.get("callbacks") or {}).values()) + list((cfg.get("logger") or {}).values()):
        if node is not None and node.get("_target_", "").endswith("WandbLogger"):
            sig = inspect.signature(get_class(node._target_))
            sig.bind_partial(**{k: v for k, v in node.items() if k != "_target_"})
        elif node is not None:
            instantiate(node)
    trainer_cls = get_class(cfg.trainer._target_)
    kwargs = {k: v for k, v in cfg.trainer.items() if k != "_target_"}
    inspect.signature(trainer_cls).bind(**kwargs)  # every key is a Trainer argument
    if cfg.trainer.accelerator == "cpu":
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)


def test_yaml_nodes_mirror_constructor_signatures(tmp_path):
    cfg = compose_cfg([], tmp_path)
    for key, cls in (("generator", ResnetGenerator), ("discriminator", PatchDiscriminator),
                     ("objective", CUTObjective)):
        assert set(cfg.model[key]) - {"_target_"} == set(inspect.signature(cls).parameters), key
    assert get_class(cfg.model.objective._target_) is CUTObjective
    module_cls = get_class(cfg.model._target_)
    assert set(cfg.model) - {"_target_", "_recursive_"} == set(inspect.signature(module_cls).parameters)
    assert set(cfg.model.sampler) | {"in_channels"} == set(inspect.signature(PatchSampler).parameters)
    data_cls = get_class(cfg.data._target_)
    assert set(cfg.data) - {"_target_"} == set(inspect.signature(data_cls).parameters)


def test_cut_and_fastcut_presets(tmp_path):
    cut = compose_cfg(["objective=cut"], tmp_path).model
    fast = compose_cfg(["objective=fastcut"], tmp_path).model
    assert (cut.objective.lambda_nce, cut.objective.nce_idt, cut.objective.flip_equivariance) == (1.0, True, False)
    assert (fast.objective.lambda_nce, fast.objective.nce_idt, fast.objective.flip_equivariance) == (10.0, False, True)
    assert (cut.n_epochs, cut.n_epochs_decay) == (fast.n_epochs, fast.n_epochs_decay) == (200, 200)  # model's
    paper = compose_cfg(["experiment=fastcut_horse2zebra"], tmp_path).model
    assert (paper.n_epochs, paper.n_epochs_decay, paper.objective.lambda_nce) == (150, 50, 10.0)
    for m in (cut, fast):
        assert m.objective.lambda_gan == 1.0 and list(m.objective.nce_layers) == [0, 4, 8, 12, 16]
        assert m.objective.num_patches == 256 and m.objective.nce_temperature == 0.07
    ablations = {
        "cut_no_idt": ("nce_idt", False),
        "cut_last_layer": ("nce_layers", [16]),
        "cut_external_negatives": ("negatives", "batch"),
        "cut_patches": ("num_patches", 64),
    }
    for option, (key, value) in ablations.items():
        obj = compose_cfg([f"objective={option}"], tmp_path).model.objective
        got = obj[key]
        assert (list(got) if key == "nce_layers" else got) == value, option


def test_ablation_rows_on_the_make_train_recipe(tmp_path):
    """experiment=ablation_cpu is make train's recipe (framed data, val split, best val/score checkpoint tested, NCE
    on the small generator's encoder layers 0-14) and every ablation row differs from ablation=cut only in the
    objective; its last layer is 14 and its FastCUT lambda_NCE 1, while elsewhere those rows stay the paper's."""
    def row(option, *more):
        return compose_cfg(["experiment=ablation_cpu", f"ablation={option}", *more], tmp_path)

    cut, recipe = row("cut"), compose_cfg(["experiment=builtin_cpu"], tmp_path)
    assert cut.data == recipe.data and cut.data.frame and cut.data.num_val == 64 and cut.test_after_fit
    assert cut.model.objective == recipe.model.objective and list(cut.model.objective.nce_layers) == [0, 4, 8, 12, 14]
    assert cut.callbacks.best_score.monitor == "val/score" and cut.model.optimizer == recipe.model.optimizer
    changes = {"no_idt": {"nce_idt": False}, "last_layer": {"nce_layers": [14]},
               "external_negatives": {"negatives": "batch"}, "patches_16": {"num_patches": 16},
               "patches_64": {"num_patches": 64},
               "fastcut": {"nce_idt": False, "flip_equivariance": True}}  # lambda_NCE 1 as CUT's, here
    base = OmegaConf.to_container(cut.model.objective, resolve=True)
    for option, changed in changes.items():
        cfg = row(option)
        assert cfg.data == cut.data and cfg.model.generator == cut.model.generator and cfg.trainer == cut.trainer
        obj = OmegaConf.to_container(cfg.model.objective, resolve=True)
        assert {k: v for k, v in obj.items() if base[k] != v} == changed, option
        assert cfg.paper.direction == "worse", option
    # the same rows anywhere else: the paper's layer 16 and lambda_NCE 10
    assert list(compose_cfg(["ablation=last_layer"], tmp_path).model.objective.nce_layers) == [16]
    assert compose_cfg(["ablation=fastcut"], tmp_path).model.objective.lambda_nce == 10.0
    assert compose_cfg(["experiment=horse2zebra", "ablation=fastcut"], tmp_path).model.objective.lambda_nce == 10.0


def test_groups_compose_without_cutlight_imported_and_alone(tmp_path):
    """Another app can compose cutlight's groups: no custom resolver, and the model group resolves without data."""
    code = f"""
import sys
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
with initialize_config_dir(config_dir={str(CONF)!r}, version_base="1.3"):
    cfg = compose("model/resnet_9blocks")
assert "cutlight" not in sys.modules, "composing imported cutlight"
model = OmegaConf.to_container(cfg.model, resolve=True)
assert model["generator"]["input_nc"] == 3 and model["n_epochs"] == 200
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]


def test_training_stops_with_the_schedule(tmp_path):
    from helpers import tiny_data, tiny_module, tiny_trainer

    model = tiny_module(n_epochs=1, n_epochs_decay=1, val_metrics=False)
    trainer = tiny_trainer(tmp_path, max_epochs=-1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, datamodule=tiny_data(tmp_path))
    assert trainer.current_epoch == 2 and trainer.max_epochs == 2


def test_debug_tiny_keeps_the_users_data_group(tmp_path):
    cfg = compose_cfg(["experiment=horse2zebra", "data.root=/data/h2z", "debug=tiny"], tmp_path)
    assert cfg.data._target_.endswith("UnpairedDataModule") and cfg.data.root == "/data/h2z"
    assert (cfg.data.crop_size, cfg.model.generator.ngf, cfg.trainer.limit_train_batches) == (32, 8, 4)


@pytest.mark.slow
def test_entrypoint_tiny_run_writes_outputs(tiny_cut_run):
    res, run = tiny_cut_run.res, tiny_cut_run.run
    assert res.returncode == 0 and run is not None, res.stderr[-3000:]
    assert "cutlight run finished" in res.stdout
    assert (run / ".hydra" / "config.yaml").exists()  # the composed config is saved with the run
    assert (run / "config_resolved.yaml").exists()
    assert list((run / "images").glob("step_*.png"))
    assert (run / "plots" / "loss_curves.png").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss_d", "train/loss_g_gan", "train/loss_nce", "train/loss_nce_idt", "val/fid", "val/kid",
                "perf/sec_per_iter", "perf/peak_mem_mb", "val/score"):
        assert key in header, key
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any("inception" in k for k in ckpt["state_dict"])


@pytest.mark.slow
def test_multirun_sweeps_objective_presets(tmp_path):
    sweep = tmp_path / "sweep"
    res = run_entrypoint(["-m", *TINY_ARGS, "objective=cut,fastcut", "trainer.limit_train_batches=2",
                          "model.n_epochs=1", "model.n_epochs_decay=0", f"hydra.sweep.dir={sweep}"], tmp_path,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and (p / "config_resolved.yaml").exists())
    assert len(runs) == 2 and "objective=cut," in runs[0] and "objective=fastcut," in runs[1], runs
    fast = OmegaConf.load(sweep / runs[1] / "config_resolved.yaml")
    assert fast.model.objective.flip_equivariance is True


def test_the_renamed_loss_group_says_its_new_name(tmp_path):
    from cutlight.cli.train import renamed_group_error

    assert "loss= is now objective= (write objective=fastcut" in renamed_group_error(["debug=tiny", "loss=fastcut"])
    assert renamed_group_error(["objective=cut", "model.objective.lambda_nce=2"]) is None
    res = run_entrypoint(["-m", "loss=cut,fastcut"], tmp_path, timeout=120)
    assert res.returncode == 2 and "the config group loss= is now objective= (write objective=cut,fastcut" in res.stderr
