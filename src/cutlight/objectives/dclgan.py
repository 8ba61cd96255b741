"""DCLGAN (Han, Khorram, Fuxin: "Dual Contrastive Learning for Unsupervised Image-to-Image Translation", CVPR 2021
workshops, arXiv 2104.07689) as plain PyTorch: two CUT-style generators trained with PatchNCE in both directions.

Networks (the authors' ``dcl`` model, on CUT's networks): G_A: A -> B and G_B: B -> A (``ResnetGenerator``), D_A
judging B images and D_B judging A images (``PatchDiscriminator``), and two MLP heads (``PatchSampler``): H_A
projects G_A's encoder features and H_B G_B's. Roles ``gen_a``, ``gen_b``, ``disc_a``, ``disc_b``, ``head_a``,
``head_b`` (the authors' netG_A, netG_B, netD_A, netD_B, netF1, netF2; their state dicts load strictly). One
iteration (the authors' ``optimize_parameters``)::

    fake_b = G_A(a)   fake_a = G_B(b)   (identity: idt_a = G_A(b), idt_b = G_B(a))
    D step: D_A on (b, fake_b), D_B on (a, fake_a); each 0.5 * (GAN(real) + GAN(fake)); one Adam for both
    G step (D frozen):
        0.5 * lambda_gan * [GAN(D_A(fake_b)) + GAN(D_B(fake_a))]
        + 0.5 * lambda_nce * [NCE(H_B(E_B(fake_b)), H_A(E_A(a))) + NCE(H_A(E_A(fake_a)), H_B(E_B(b)))]
        + 0.5 * lambda_idt * [|idt_a - b|_1 + |idt_b - a|_1]
    one Adam for both generators, one for both heads (stepped after the generators' Adam)

E_X(x) are generator X's features at ``nce_layers``: the translation is encoded by the *other* generator (the
dual encoders) and its patches are projected by that generator's head, the source's by its own. Keys are
constants (PatchNCE detaches them), so they are encoded without a graph. Patch positions are drawn on the keys,
per layer, shared by the batch, and reused for the queries (H_A draws for the first term, H_B for the second).

Faithful to the authors' code, also where it differs from a first reading of the paper:
* the heads' Adam has PyTorch's default lr 1e-3 and betas (0.9, 0.999) (``heads_optimizer``; None: the module's
  optimizer settings);
* the identity term needs ``nce_idt`` (the code's flag, which switches on this L1 term) and ``lambda_nce > 0``;
* PatchNCE takes its negatives from every patch of the minibatch (the code flattens the batch), ``negatives=
  "batch"``; at the authors' batch size 1 that is the image's own patches; their cosine similarity of
  L2-normalised rows equals our dot product up to the 1e-7 of the normalisation;
* the D step minimises the unweighted 0.5 * (real + fake) (the code scales only the logged value by lambda_GAN,
  after ``backward``); ``loss_d_a`` / ``loss_d_b`` here are the minimised values;
* image pools off (``pool_size`` 0); LSGAN (the code's option default is ``hinge``; the paper's setting is LSGAN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_bool, check_choice, check_int, check_int_list, check_number
from ..losses import GAN_MODES, NEGATIVES, generator_loss, multilayer_patch_nce
from ..networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from .contract import Backward, Batch, Nets, OptimizerGroup, Optimizers, Role
from .cyclegan import ImagePool, PooledObjective, batched_call, pooled_discriminator_losses

ADAM_TORCH_DEFAULTS = {"lr": 1e-3, "betas": (0.9, 0.999)}  # what torch.optim.Adam(params) uses
DCLGAN_TERMS = ("loss_g_a", "loss_g_b", "loss_nce1", "loss_nce2", "loss_idt_a", "loss_idt_b")  # of loss_g


class DCLGANObjective(PooledObjective):
    """DCLGAN's losses and iteration (the authors' defaults).

    Args:
        lambda_gan: weight of the adversarial terms (averaged over the two directions).
        lambda_nce: weight of each PatchNCE term (the two are averaged).
        lambda_idt: weight of each L1 identity term (averaged), on with ``nce_idt``.
        nce_idt: the identity terms |G_A(b) - b|_1 and |G_B(a) - a|_1 (needs as many channels in A as in B).
        nce_layers: generator layer indices whose features enter PatchNCE.
        num_patches: sampled positions per layer (S).
        nce_temperature: tau.
        negatives: ``batch`` (every patch of the minibatch, the authors' code) or ``image``.
        gan_mode: ``lsgan``, ``vanilla``, ``nonsaturating`` or ``hinge``.
        pool_size: image pools of generated images shown to the discriminators (0: off, the authors' default).
        heads_optimizer: Adam keywords of the heads' optimizer (default: PyTorch's, as the authors' code builds
            it); None: the module's optimizer settings.

    Loss keys: ``loss_g``, ``loss_g_a``, ``loss_g_b`` (GAN, weighted), ``loss_nce1`` (A -> B), ``loss_nce2``
    (B -> A), ``loss_idt_a``, ``loss_idt_b`` (weighted), ``loss_d_a``, ``loss_d_b``, ``loss_d``.
    """

    progress = {"nce": "loss_nce1"}

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_nce: float = 2.0,
        lambda_idt: float = 1.0,
        nce_idt: bool = True,
        nce_layers: Sequence[int] = (4, 8, 12, 16),
        num_patches: int = 256,
        nce_temperature: float = 0.07,
        negatives: str = "batch",
        gan_mode: str = "lsgan",
        pool_size: int = 0,
        heads_optimizer: Mapping | None = ADAM_TORCH_DEFAULTS,
    ):
        super().__init__()
        check_choice("negatives", negatives, NEGATIVES)
        check_choice("gan_mode", gan_mode, GAN_MODES)
        self.lambda_gan = check_number("lambda_gan", lambda_gan, low=0)
        self.lambda_nce = check_number("lambda_nce", lambda_nce, low=0)
        self.lambda_idt = check_number("lambda_idt", lambda_idt, low=0)
        self.nce_idt = check_bool("nce_idt", nce_idt)
        self.nce_layers = check_int_list("nce_layers", nce_layers, low=0)
        self.num_patches = check_int("num_patches", num_patches, low=1)
        self.nce_temperature = check_number("nce_temperature", nce_temperature, low=0, low_open=True, example="0.07")
        self.negatives = negatives
        self.gan_mode = gan_mode
        self.heads_optimizer = dict(heads_optimizer) if heads_optimizer is not None else {}
        self.pool_a = ImagePool(pool_size)  # generated A images, shown to D_B
        self.pool_b = ImagePool(pool_size)  # generated B images, shown to D_A

    # ------------------------------------------------------------------ the contract
    def roles(self) -> dict[str, Role]:
        """CUT's networks twice: G_A, G_B, D_A (judges B), D_B (judges A), H_A (on G_A's features), H_B."""
        return {
            "gen_a": Role("generator", ResnetGenerator, translates="AtoB"),
            "gen_b": Role("generator", ResnetGenerator, translates="BtoA"),
            "disc_a": Role("discriminator", PatchDiscriminator, judges="B"),
            "disc_b": Role("discriminator", PatchDiscriminator, judges="A"),
            "head_a": Role("sampler", PatchSampler, features_of="gen_a"),
            "head_b": Role("sampler", PatchSampler, features_of="gen_b"),
        }

    def optimizers(self) -> dict[str, OptimizerGroup]:
        """The authors' three Adams: both generators, both discriminators, both heads (``heads_optimizer``)."""
        return {"generator": OptimizerGroup(("gen_a", "gen_b")),
                "discriminator": OptimizerGroup(("disc_a", "disc_b")),
                "heads": OptimizerGroup(self.head_roles(), self.heads_optimizer)}

    def head_roles(self) -> tuple[str, ...]:
        return ("head_a", "head_b")

    def translators(self) -> dict[str, str]:
        return {"AtoB": "gen_a", "BtoA": "gen_b"}

    def check_channels(self, input_nc: int, output_nc: int) -> None:
        if self.identity and input_nc != output_nc:
            raise ValueError(f"model.objective.nce_idt=true needs equal channel counts (G_A is fed B images), but "
                             f"input_nc={input_nc} and output_nc={output_nc}; set nce_idt=false")

    @torch.no_grad()
    def visuals(self, nets: Nets, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Labelled image columns for grids: A, G_A(A), B, G_B(B)."""
        return {"A": real_a, "G_A(A)": nets["gen_a"](real_a), "B": real_b, "G_B(B)": nets["gen_b"](real_b)}

    # ------------------------------------------------------------------ the losses
    @property
    def identity(self) -> bool:
        """Whether the L1 identity terms are part of the G loss (the authors' condition)."""
        return self.nce_idt and self.lambda_nce > 0

    def nce(self, enc_q: nn.Module, head_q: nn.Module, enc_k: nn.Module, head_k: nn.Module,
            fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """PatchNCE of the translation ``fake`` (queries: encoded by ``enc_q``, projected by ``head_q``) against its
        source ``real`` (keys, constants: ``enc_k``, ``head_k``, which draws the positions). Unweighted scalar."""
        with torch.no_grad():
            feats_k, ids = head_k(enc_k.encode(real, self.nce_layers), num_patches=self.num_patches)  # (B, S, D)
        feats_q, _ = head_q(enc_q.encode(fake, self.nce_layers), patch_ids=ids)
        return multilayer_patch_nce(feats_q, feats_k, self.nce_temperature, self.negatives)[0]

    def contrastive_terms(self, nets: Nets, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor,
                          fake_a: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss_nce1`` (G_A's translation, queries through G_B and H_B) and ``loss_nce2`` (the dual), weighted."""
        nce1 = self.nce(nets["gen_b"], nets["head_b"], nets["gen_a"], nets["head_a"], fake_b, real_a)
        nce2 = self.nce(nets["gen_a"], nets["head_a"], nets["gen_b"], nets["head_b"], fake_a, real_b)
        return {"loss_nce1": nce1 * self.lambda_nce, "loss_nce2": nce2 * self.lambda_nce}

    def generator_losses(self, nets: Nets, real_a: torch.Tensor, real_b: torch.Tensor, fake_b: torch.Tensor,
                         fake_a: torch.Tensor, idt_a: torch.Tensor | None, idt_b: torch.Tensor | None
                         ) -> dict[str, torch.Tensor]:
        """``loss_g`` and its terms (call with the discriminators frozen, after the D step); a further term that a
        subclass's ``contrastive_terms`` returns (SimDCL's ``loss_sim``) is added as it is."""
        zero = fake_b.new_zeros(())
        terms = dict.fromkeys(DCLGAN_TERMS, zero)
        if self.lambda_gan > 0:
            pred_b, pred_a = nets["disc_a"](fake_b), nets["disc_b"](fake_a)
            terms["loss_g_a"] = generator_loss(pred_b, self.gan_mode) * self.lambda_gan
            terms["loss_g_b"] = generator_loss(pred_a, self.gan_mode) * self.lambda_gan
        if self.lambda_nce > 0:
            terms.update(self.contrastive_terms(nets, real_a, real_b, fake_b, fake_a))
        if idt_a is not None:
            terms["loss_idt_a"] = F.l1_loss(idt_a, real_b) * self.lambda_idt
            terms["loss_idt_b"] = F.l1_loss(idt_b, real_a) * self.lambda_idt
        extra = sum((v for k, v in terms.items() if k not in DCLGAN_TERMS), zero)
        terms["loss_g"] = (0.5 * (terms["loss_g_a"] + terms["loss_g_b"]) + 0.5 * (terms["loss_nce1"] + terms["loss_nce2"])
                           + 0.5 * (terms["loss_idt_a"] + terms["loss_idt_b"]) + extra)
        return terms

    def iteration(
        self, nets: Nets, batch: Batch, optimizers: Optimizers, backward: Backward | None = None
    ) -> dict[str, torch.Tensor]:
        """One training iteration: forward, D step (``optimizers["discriminator"]``), then the G step
        (``optimizers["generator"]`` and ``optimizers["heads"]``, discriminators frozen).

        ``nets``: the six roles; ``batch``: ``{"A": (B, C, H, W), "B": (B, C, H, W)}`` in [-1, 1].
        ``backward(loss)`` defaults to ``loss.backward()`` (Lightning passes ``manual_backward``).
        Returns the detached loss terms (see the class docstring).
        """
        backward = backward or torch.Tensor.backward
        gen_a, gen_b, disc_a, disc_b = nets["gen_a"], nets["gen_b"], nets["disc_a"], nets["disc_b"]
        real_a, real_b = batch["A"], batch["B"]
        if self.identity:  # one call per generator where batching gives the same outputs
            fake_b, idt_a = batched_call(gen_a, [real_a, real_b])  # G_A(a), G_A(b)
            fake_a, idt_b = batched_call(gen_b, [real_b, real_a])  # G_B(b), G_B(a)
        else:
            fake_b, fake_a, idt_a, idt_b = gen_a(real_a), gen_b(real_b), None, None
        disc_a.requires_grad_(True)
        disc_b.requires_grad_(True)
        (loss_d_a,) = pooled_discriminator_losses(disc_a, [(real_b, fake_b, self.pool_b)], self.gan_mode)
        (loss_d_b,) = pooled_discriminator_losses(disc_b, [(real_a, fake_a, self.pool_a)], self.gan_mode)
        d_terms = {"loss_d_a": loss_d_a, "loss_d_b": loss_d_b, "loss_d": loss_d_a + loss_d_b}
        optimizers["discriminator"].zero_grad(set_to_none=True)
        backward(d_terms["loss_d"])
        optimizers["discriminator"].step()
        disc_a.requires_grad_(False)  # the G step must not produce D gradients
        disc_b.requires_grad_(False)
        terms = self.generator_losses(nets, real_a, real_b, fake_b, fake_a, idt_a, idt_b)
        optimizers["generator"].zero_grad(set_to_none=True)
        optimizers["heads"].zero_grad(set_to_none=True)
        backward(terms["loss_g"])
        optimizers["generator"].step()
        optimizers["heads"].step()
        disc_a.requires_grad_(True)
        disc_b.requires_grad_(True)
        return {k: v.detach() for k, v in {**terms, **d_terms}.items()}
