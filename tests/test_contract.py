"""The method contract: every objective declares its networks by role, its optimizers and its translators; one
LightningModule builds and trains any of them; checkpoints written before the contract still load."""

import pytest
import torch
from torch import nn

from cutlight import CUTModule, CycleGANModule, TranslationModule, load_generator
from cutlight.checkpoint import checkpoint_roles, role_state_dict
from cutlight.checks import ConfigValueError
from cutlight.networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from cutlight.objectives import (
    CUTObjective,
    CycleGANObjective,
    DistanceGANObjective,
    GcGANObjective,
    Objective,
    OptimizerGroup,
    Role,
    SelfDistanceObjective,
    SinCUTObjective,
    build_networks,
)
from cutlight.objectives.cyclegan import ORIGINAL_DISCRIMINATOR, ORIGINAL_GENERATOR
from cutlight.specs import build, trusting_code

GEN, DISC, HEADS = {"ngf": 8, "n_blocks": 1}, {"ndf": 8, "n_layers": 2}, {"mlp_dim": 16}
OBJECTIVES = [CUTObjective, SinCUTObjective, CycleGANObjective, GcGANObjective, DistanceGANObjective,
              SelfDistanceObjective]


@pytest.mark.parametrize("cls", OBJECTIVES, ids=lambda c: c.__name__)
def test_every_objective_declares_roles_optimizers_and_translators(cls):
    obj = cls(nce_layers=[0, 2, 4]) if cls is SinCUTObjective else cls()
    specs = {"generator": GEN, "discriminator": DISC, "sampler": HEADS}
    if cls is SinCUTObjective:  # its layers are the StyleGAN2 generator's
        specs["generator"] = {"_target_": "cutlight.networks.StyleGAN2Generator", "ngf": 2, "n_blocks": 2,
                              "crop_size": 32}
        specs["discriminator"] = {"_target_": "cutlight.networks.StyleGAN2Discriminator", "ndf": 1, "size": 32}
    nets, configs = build_networks(obj, specs)
    assert list(nets) == list(obj.roles())
    trained = [r for group in obj.optimizers().values() for r in group.roles]
    assert sorted(trained) == sorted(r for r, n in nets.items() if any(True for _ in n.parameters()))
    assert set(obj.translators()) <= {"AtoB", "BtoA"} and "AtoB" in obj.translators()
    assert all(role in nets for role in obj.translators().values())
    for role, config in configs.items():  # each role rebuilds from its saved keywords alone
        twin = build(config, nn.Module, role)
        assert twin.state_dict().keys() == nets[role].state_dict().keys()


def test_image_metrics_are_the_methods_own_by_role():
    """Single-image validation asks the objective for its own metrics: CUT's are PatchNCE of the translation and of
    G(target) through the roles ``generator`` and ``sampler``; a method without PatchNCE has none."""
    torch.manual_seed(0)
    cut = CUTObjective(nce_layers=[0, 2, 4])
    nets, _ = build_networks(cut, {"generator": GEN, "discriminator": DISC, "sampler": HEADS})
    source, target = torch.rand(1, 3, 16, 20) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    translation = nets["generator"](source)
    torch.manual_seed(1)
    metrics = cut.image_metrics(nets, source, translation, target, patches=8)
    torch.manual_seed(1)
    nce = cut.evaluation_nce(nets["generator"], nets["sampler"], source, translation, 8)
    nce_idt = cut.evaluation_nce(nets["generator"], nets["sampler"], target, nets["generator"](target), 8)
    assert set(metrics) == {"nce", "nce_idt"}
    assert torch.equal(metrics["nce"], nce) and torch.equal(metrics["nce_idt"], nce_idt)
    assert cut.image_metrics(nets, source, translation, target, patches=0) == {}
    assert cut.image_metrics({k: v for k, v in nets.items() if k != "sampler"}, source, translation, target, 8) == {}
    cyclegan = CycleGANObjective()
    cnets, _ = build_networks(cyclegan, {"generator": GEN, "discriminator": DISC})
    assert cyclegan.image_metrics(cnets, source, translation, target, patches=8) == {}


def test_one_iteration_of_any_objective_through_the_module():
    torch.manual_seed(0)
    batch = {"A": torch.rand(2, 3, 32, 32) * 2 - 1, "B": torch.rand(2, 3, 32, 32) * 2 - 1}
    for target in ("CUTObjective", "GcGANObjective", "DistanceGANObjective", "CycleGANObjective"):
        module = TranslationModule(generator=GEN, discriminator=DISC, sampler=HEADS, val_metrics=False,
                                   objective={"_target_": f"cutlight.objectives.{target}"}, n_epochs=1)
        optimizers, _ = module.configure_optimizers()
        names = list(module.objective.optimizers())
        before = {k: v.clone() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}
        losses = module.objective.iteration(module.nets, batch, dict(zip(names, optimizers)))
        assert "loss_g" in losses and "loss_d" in losses and all(torch.isfinite(v) for v in losses.values())
        assert all(not v.requires_grad for v in losses.values())
        for role in module.role_names:  # every trained network moved
            moved = [not torch.equal(before[k], v) for k, v in module.state_dict().items()
                     if k.startswith(role + ".") and k in before and not k.endswith("filt")]
            assert any(moved), (target, role)


def test_cut_checks_apply_to_every_method():
    """``n_epochs`` / ``warmup_iters`` / optimizer checks, which CycleGAN's module lacked, are the module's."""
    for cls in (CUTModule, CycleGANModule, TranslationModule):
        with pytest.raises(ConfigValueError, match="n_epochs"):
            cls(generator=GEN, discriminator=DISC, n_epochs=0, n_epochs_decay=0)
        with pytest.raises(ConfigValueError, match="n_epochs"):
            cls(generator=GEN, discriminator=DISC, n_epochs=-1)
        with pytest.raises(ConfigValueError, match="lr"):
            cls(generator=GEN, discriminator=DISC, optimizer={"lr": -1})


class _OwnHeads(CUTObjective):
    """CUT whose heads have an Adam of their own (another lr and betas), as DCLGAN's do."""

    def optimizers(self):
        return {"generator": OptimizerGroup(("generator",)), "discriminator": OptimizerGroup(("discriminator",)),
                "heads": OptimizerGroup(("sampler",), {"lr": 1e-3, "betas": (0.9, 0.999)})}


def test_optimizers_follow_the_objective_with_their_own_settings():
    module = TranslationModule(generator=GEN, discriminator=DISC, sampler=HEADS, val_metrics=False,
                               objective={"_target_": f"{__name__}._OwnHeads"}, optimizer={"lr": 5e-4})
    (opt_g, opt_d, opt_h), schedulers = module.configure_optimizers()
    assert len(schedulers) == 3
    assert [g["lr"] for o in (opt_g, opt_d, opt_h) for g in o.param_groups] == [5e-4, 5e-4, 1e-3]
    assert opt_g.param_groups[0]["betas"] == (0.5, 0.999) and opt_h.param_groups[0]["betas"] == (0.9, 0.999)
    assert {id(p) for p in opt_h.param_groups[0]["params"]} == {id(p) for p in module.sampler.parameters()}


class _Broken(CUTObjective):
    def optimizers(self):
        return {"generator": OptimizerGroup(("generator", "discriminator")),
                "discriminator": OptimizerGroup(("discriminator",))}


def test_contract_errors_name_what_is_wrong():
    with pytest.raises(TypeError, match="must be a cutlight.objectives.Objective"), trusting_code():
        TranslationModule(objective={"_target_": "torch.nn.Identity"})  # a class outside the allowlist: trusted here
    module = TranslationModule(generator=GEN, discriminator=DISC, sampler=HEADS,
                               objective={"_target_": f"{__name__}._Broken"})
    with pytest.raises(ValueError, match="role 'discriminator' is trained by two optimizers"):
        module.configure_optimizers()
    with pytest.raises(ValueError, match="generator is an nn.Module instance, but CycleGANObjective builds 2"):
        build_networks(CycleGANObjective(), {"generator": ResnetGenerator(ngf=8, n_blocks=1)})
    with pytest.raises(ValueError, match="unknown role kind 'head'"):
        Role("head", nn.Identity)
    with pytest.raises(ValueError, match="has no generator for direction 'BtoA'"):
        TranslationModule(generator=GEN, discriminator=DISC, sampler=HEADS).translator_role("BtoA")


def _lightning_checkpoint(path, state_dict, hparams):
    """A checkpoint as Lightning wrote it before the method contract (no ``cutlight_networks`` entry)."""
    torch.save({"state_dict": state_dict, "hyper_parameters": hparams, "pytorch-lightning_version": "2.5.0",
                "epoch": 0, "global_step": 0}, path)


OLD_HPARAMS = {"optimizer": {}, "n_epochs": 1, "n_epochs_decay": 1, "warmup_iters": 0, "val_metrics": False,
               "channels_last": False, "compile": False, "nonfinite": {}}


def test_checkpoints_written_before_the_contract_load(tmp_path):
    """The state-dict prefixes and hyperparameters of CUTModule and CycleGANModule checkpoints from before the
    method contract, built here from their layout, load strictly into the modules and by direction."""
    torch.manual_seed(0)
    layers = [0, 4]
    gen, disc = ResnetGenerator(**GEN), PatchDiscriminator(**DISC)
    heads = PatchSampler(gen.feature_channels(layers), **HEADS)
    state = {**{f"generator.{k}": v for k, v in gen.state_dict().items()},
             **{f"discriminator.{k}": v for k, v in disc.state_dict().items()},
             **{f"sampler.{k}": v for k, v in heads.state_dict().items()}}
    objective = {"_target_": "cutlight.objectives.CUTObjective", "nce_layers": layers, "num_patches": 16}
    _lightning_checkpoint(tmp_path / "cut.ckpt", state, {"generator": GEN, "discriminator": DISC,
                                                         "sampler": HEADS, "objective": objective, **OLD_HPARAMS})
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    for cls in (CUTModule, TranslationModule):
        module = cls.load_from_checkpoint(tmp_path / "cut.ckpt")
        assert module.state_dict().keys() == state.keys()
        with torch.no_grad():
            torch.testing.assert_close(module(x), gen.eval()(x))
    torch.testing.assert_close(load_generator(tmp_path / "cut.ckpt")(x), gen(x))
    roles = checkpoint_roles(torch.load(tmp_path / "cut.ckpt", weights_only=True))  # read from the old layout
    assert roles["translators"] == {"AtoB": "generator"} and roles["heads"] == {"sampler": "generator"}
    assert roles["nce_layers"] == layers and roles["configs"]["generator"] == GEN

    g_kw, d_kw = {**ORIGINAL_GENERATOR, **GEN}, {**ORIGINAL_DISCRIMINATOR, **DISC}  # CycleGANModule saved these
    nets = {"gen_a": ResnetGenerator(**g_kw), "gen_b": ResnetGenerator(**g_kw),
            "disc_a": PatchDiscriminator(**d_kw), "disc_b": PatchDiscriminator(**d_kw)}
    pools = CycleGANObjective(pool_size=2)
    pools.pool_a.query(torch.zeros(1, 3, 32, 32))
    state = {f"{role}.{k}": v for role, net in nets.items() for k, v in net.state_dict().items()}
    state["objective._extra_state"] = pools.get_extra_state()
    cyc = {"_target_": "cutlight.objectives.CycleGANObjective", "pool_size": 2}
    _lightning_checkpoint(tmp_path / "cyclegan.ckpt", state, {"generator": g_kw, "discriminator": d_kw,
                                                              "objective": cyc, **OLD_HPARAMS})
    for cls in (CycleGANModule, TranslationModule):
        module = cls.load_from_checkpoint(tmp_path / "cyclegan.ckpt")
        assert len(module.objective.pool_a) == 1 and module.translator_role("BtoA") == "gen_b"
        with torch.no_grad():
            torch.testing.assert_close(module(x), nets["gen_a"].eval()(x))
    torch.testing.assert_close(load_generator(tmp_path / "cyclegan.ckpt", direction="BtoA")(x),
                               nets["gen_b"].eval()(x))
    old = torch.load(tmp_path / "cyclegan.ckpt", weights_only=True)
    roles = checkpoint_roles(old)
    assert roles["translators"] == {"AtoB": "gen_a", "BtoA": "gen_b"}
    assert roles["configs"]["gen_b"] == {**g_kw, "input_nc": 3, "output_nc": 3}  # G_B: the channels swapped
    assert role_state_dict(old, "gen_b").keys() == nets["gen_b"].state_dict().keys()


def test_a_new_method_needs_only_its_objective():
    """A method of one's own (here: two CUT generators trained one after the other) in the module by _target_."""
    module = TranslationModule(generator=GEN, discriminator=DISC, val_metrics=False,
                               objective={"_target_": f"{__name__}._TwoGenerators"})
    assert module.role_names == ("gen_x", "gen_y", "disc") and module.translator is module.gen_y
    assert isinstance(module.objective, Objective)


class _TwoGenerators(Objective):
    def roles(self):
        return {"gen_x": Role("generator", ResnetGenerator), "gen_y": Role("generator", ResnetGenerator),
                "disc": Role("discriminator", PatchDiscriminator, judges="B")}

    def optimizers(self):
        return {"generator": OptimizerGroup(("gen_x", "gen_y")), "discriminator": OptimizerGroup(("disc",))}

    def translators(self):
        return {"AtoB": "gen_y"}
