"""SimDCL (Han, Khorram, Fuxin, CVPR 2021 workshops, arXiv 2104.07689, section 3.4): DCLGAN plus a similarity loss.

The patches each MLP head projects for PatchNCE (all ``nce_layers``, stacked as (L, S, D) per image) are mapped by
four small networks (``SimilarityMapping``; the authors' netF3..netF6: real A, fake B, real B, fake A) to unit
64-vectors, and translations are pulled towards the real images of their target domain::

    L_sim = |M_realA(P_A(a)) - M_fakeA(P_A(G_B(b)))|_1 + |M_fakeB(P_B(G_A(a))) - M_realB(P_B(b))|_1

where P_A are H_A's projections of G_A's features (the PatchNCE keys of a, with their graph) and the translations'
patches are projected at positions drawn afresh. Everything else is ``DCLGANObjective``'s.

Faithful to the authors' ``simdcl_model.py``, which differs from DCLGAN's model in its weights:
* the G loss is 0.5 (GAN_A + GAN_B) + 0.5 (NCE1 + NCE2) + 0.5 (|idt_a - b| + |idt_b - a|) + L_sim: the code's
  lambda_NCE (2) and lambda_SIM (10) are defined but not applied, so the defaults here are lambda_nce 1 and
  lambda_sim 1, and the identity terms are on whenever ``nce_idt`` is;
* the code's ``L1Loss('sum')`` passes 'sum' as the deprecated ``size_average`` argument, which means the mean:
  the similarity terms are means over the 64 entries (``F.l1_loss``);
* all heads (H_A, H_B and the four mappings) train with one Adam with the generators' lr and betas
  (``heads_optimizer`` None), not PyTorch's defaults as in DCLGAN.
The code stacks the patches of the whole minibatch as one (L, S, D) image, which only works at its batch size 1;
here each image's patches are mapped on their own (the same at batch 1). Every NCE layer must offer
``num_patches`` positions (the stack needs the same S per layer).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_number
from ..losses import multilayer_patch_nce
from ..networks.init import init_weights
from ..networks.sampler import l2_normalize
from .contract import Nets, Role
from .dclgan import DCLGANObjective


class SimilarityMapping(nn.Module):
    """(B, L, S, D) projected patches of L layers -> (B, dim) unit vectors: conv(L -> dim, 3x3, stride 2), ReLU,
    global average pool, Linear(dim, dim), ReLU, Linear(dim, dim), L2 normalisation (rows / (norm + 1e-7)).

    State-dict keys ``model.0.*`` (conv), ``model.4.*``, ``model.6.*`` (linear): the authors' ``MappingF``.
    """

    def __init__(self, num_layers: int = 4, dim: int = 64, init_type: str = "normal", init_gain: float = 0.02):
        super().__init__()
        check_int("num_layers", num_layers, low=1)
        check_int("dim", dim, low=1)
        self.model = nn.Sequential(nn.Conv2d(num_layers, dim, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        init_weights(self, init_type, init_gain)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.model(patches))  # (B, dim)


SIMILARITY_ROLES = ("sim_real_a", "sim_fake_b", "sim_real_b", "sim_fake_a")  # the authors' netF3, F4, F5, F6


class SimDCLObjective(DCLGANObjective):
    """SimDCL's losses: ``DCLGANObjective``'s plus ``loss_sim`` (weighted, part of ``loss_g``).

    Args: those of ``DCLGANObjective`` with the defaults of the authors' SimDCL code (lambda_nce 1, heads trained
    with the module's optimizer settings), plus
        lambda_sim: weight of the similarity loss.
        sim_dim: width of the similarity mappings (the authors' 64).
    """

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_nce: float = 1.0,
        lambda_idt: float = 1.0,
        lambda_sim: float = 1.0,
        nce_idt: bool = True,
        nce_layers: Sequence[int] = (4, 8, 12, 16),
        num_patches: int = 256,
        nce_temperature: float = 0.07,
        negatives: str = "batch",
        gan_mode: str = "lsgan",
        pool_size: int = 0,
        heads_optimizer: Mapping | None = None,
        sim_dim: int = 64,
    ):
        super().__init__(lambda_gan=lambda_gan, lambda_nce=lambda_nce, lambda_idt=lambda_idt, nce_idt=nce_idt,
                         nce_layers=nce_layers, num_patches=num_patches, nce_temperature=nce_temperature,
                         negatives=negatives, gan_mode=gan_mode, pool_size=pool_size, heads_optimizer=heads_optimizer)
        self.lambda_sim = check_number("lambda_sim", lambda_sim, low=0)
        self.sim_dim = check_int("sim_dim", sim_dim, low=1)

    def roles(self) -> dict[str, Role]:
        """DCLGAN's six networks and the four similarity mappings (no config node: ``SimilarityMapping``)."""
        mapping = Role(None, SimilarityMapping, {"num_layers": len(self.nce_layers), "dim": self.sim_dim})
        return {**super().roles(), **{name: mapping for name in SIMILARITY_ROLES}}

    def head_roles(self) -> tuple[str, ...]:
        return (*super().head_roles(), *SIMILARITY_ROLES)

    @property
    def identity(self) -> bool:
        return self.nce_idt  # the SimDCL code always adds the identity terms

    def contrastive_terms(self, nets: Nets, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor,
                          fake_a: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_nce1``, ``loss_nce2`` (as DCLGAN's) and ``loss_sim``. Patch positions are drawn in the authors'
        order: keys of a (H_A), the translation G_A(a) afresh (H_B), keys of b (H_B), G_B(b) afresh (H_A)."""
        gen_a, gen_b, head_a, head_b = nets["gen_a"], nets["gen_b"], nets["head_a"], nets["head_b"]
        layers, s = self.nce_layers, self.num_patches
        feats_q1, feats_k1 = gen_b.encode(fake_b, layers), gen_a.encode(real_a, layers)
        feats_q2, feats_k2 = gen_a.encode(fake_a, layers), gen_b.encode(real_b, layers)
        keys_a, ids_a = head_a(feats_k1, num_patches=s)  # (B, S, D) per layer, with their graph (L_sim uses them)
        queries_b, _ = head_b(feats_q1, patch_ids=ids_a)
        free_b, _ = head_b(feats_q1, num_patches=s)
        keys_b, ids_b = head_b(feats_k2, num_patches=s)
        queries_a, _ = head_a(feats_q2, patch_ids=ids_b)
        free_a, _ = head_a(feats_q2, num_patches=s)
        nce1 = multilayer_patch_nce(queries_b, keys_a, self.nce_temperature, self.negatives)[0]
        nce2 = multilayer_patch_nce(queries_a, keys_b, self.nce_temperature, self.negatives)[0]
        mapped = {name: nets[name](self.stack(patches)) for name, patches in
                  (("sim_real_a", keys_a), ("sim_fake_b", free_b), ("sim_real_b", keys_b), ("sim_fake_a", free_a))}
        sim = (F.l1_loss(mapped["sim_real_a"], mapped["sim_fake_a"])
               + F.l1_loss(mapped["sim_fake_b"], mapped["sim_real_b"]))
        return {"loss_nce1": nce1 * self.lambda_nce, "loss_nce2": nce2 * self.lambda_nce,
                "loss_sim": sim * self.lambda_sim}

    def stack(self, patches: list[torch.Tensor]) -> torch.Tensor:
        """Per layer (B, S_l, D) -> (B, L, S, D); every layer needs the same S."""
        sizes = [p.shape[1] for p in patches]
        if len(set(sizes)) > 1:
            raise ValueError(f"SimDCL stacks the patches of all nce_layers {self.nce_layers}, but the layers offered "
                             f"{sizes} positions (num_patches={self.num_patches} or fewer where a feature map is "
                             f"smaller): use larger crops or a smaller model.objective.num_patches")
        return torch.stack(patches, 1)
