"""One CUT / FastCUT training iteration as plain PyTorch: translation, the D loss and the G + heads loss.

``CUTObjective`` holds the method's hyperparameters (the ``loss`` config group mirrors its constructor) and
computes exactly the reference algorithm's losses with less work:

* one generator forward on cat(real_a, real_b) that also returns the source features at ``nce_layers``; these
  are the PatchNCE keys (constants), so the sources are never encoded a second time and no autograd graph is
  built for the keys (heads applied under ``no_grad``);
* one encoder pass over cat(fake_b, idt_b) for the queries, and both PatchNCE terms sampled, projected and
  scored in one pass (patches gathered directly at the sampled positions, see ``PatchSampler``);
* one discriminator call on cat(fake_b, real_b) in the D step.

``tests/test_same_math.py`` checks losses and updates against the straightforward algorithm; ``benchmarks/bench.py``
times both.

With FastCUT's flip-equivariance the generator sees a flipped input; its features are then not the source
features of the reference algorithm (convolutions are not flip-equivariant), so on flipped iterations the
keys are re-encoded from the unflipped sources, still without a graph.

With ``norm="batch"`` in the generator, the keys and the queries are encoded part by part (source images, then
target images), so each is normalised with its own batch statistics as in the reference algorithm. With dropout,
the keys come from the joint forward, with that forward's dropout masks (the reference draws new masks when it
re-encodes the sources; same distribution, other random draws).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import ConfigValueError, check_bool, check_choice, check_int, check_int_list, check_number
from ..losses import GAN_MODES, NEGATIVES, discriminator_loss, generator_loss, multilayer_patch_nce
from ..networks import PatchDiscriminator, PatchSampler, ResnetGenerator
from .contract import Backward, Batch, Nets, Objective, OptimizerGroup, Optimizers, Role


def _has_batch_stats(net: nn.Module) -> bool:
    """Whether ``net`` normalises with batch statistics (its outputs then depend on the batch composition)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())


@dataclass
class Translation:
    """Outputs of ``CUTObjective.translate`` for a batch of B source images."""

    fake_b: torch.Tensor  # (B, C, H, W) G(real_a)
    idt_b: torch.Tensor | None  # (B, C, H, W) G(real_b), when identity NCE is on
    keys: list[torch.Tensor]  # per layer (B or 2B, C_l, H_l, W_l): source features, detached
    flipped: bool  # the generator saw horizontally flipped inputs


def mirror_ids(ids: torch.Tensor, width: int) -> torch.Tensor:
    """Row-major positions in a map of ``width`` columns -> the same positions in the left-right mirrored map."""
    return ids - ids % width + (width - 1 - ids % width)


class CUTObjective(Objective):
    """CUT's losses. ``CUTObjective()`` is CUT; FastCUT is ``lambda_nce=10, nce_idt=False, flip_equivariance=True``.

    Args:
        lambda_gan: weight of the adversarial term.
        lambda_nce: weight of PatchNCE (lambda_X, and lambda_Y for the identity term).
        nce_idt: identity PatchNCE on (y, G(y)); the two NCE terms are then averaged.
        nce_layers: generator layer indices whose features enter PatchNCE.
        num_patches: sampled positions per layer (S).
        nce_temperature: tau.
        negatives: ``image`` (internal negatives) or ``batch`` (external negatives).
        flip_equivariance: FastCUT's augmentation (flip the input with p=0.5, flip query features back).
        gan_mode: ``lsgan``, ``vanilla``, ``nonsaturating`` or ``hinge``.
    """

    def __init__(
        self,
        lambda_gan: float = 1.0,
        lambda_nce: float = 1.0,
        nce_idt: bool = True,
        nce_layers: Sequence[int] = (0, 4, 8, 12, 16),
        num_patches: int = 256,
        nce_temperature: float = 0.07,
        negatives: str = "image",
        flip_equivariance: bool = False,
        gan_mode: str = "lsgan",
    ):
        super().__init__()
        check_choice("negatives", negatives, NEGATIVES)
        check_choice("gan_mode", gan_mode, GAN_MODES)
        self.lambda_gan = check_number("lambda_gan", lambda_gan, low=0)
        self.lambda_nce = check_number("lambda_nce", lambda_nce, low=0)
        self.nce_idt = check_bool("nce_idt", nce_idt)
        self.nce_layers = check_int_list("nce_layers", nce_layers, low=0)
        self.num_patches = check_int("num_patches", num_patches, low=1)
        self.nce_temperature = check_number("nce_temperature", nce_temperature, low=0, low_open=True, example="0.07")
        self.negatives = negatives
        self.flip_equivariance = check_bool("flip_equivariance", flip_equivariance)
        self.gan_mode = gan_mode

    # ------------------------------------------------------------------ the contract
    def roles(self) -> dict[str, Role]:
        """G (``ResnetGenerator``), D (``PatchDiscriminator``) and the MLP heads H (``PatchSampler`` on G's
        feature channels at ``nce_layers``)."""
        return {
            "generator": Role("generator", ResnetGenerator, translates="AtoB"),
            "discriminator": Role("discriminator", PatchDiscriminator),
            "sampler": Role("sampler", PatchSampler, features_of="generator"),
        }

    def optimizers(self) -> dict[str, OptimizerGroup]:
        """One Adam for G + heads (equal to separate Adams with the same settings), one for D."""
        return {"generator": OptimizerGroup(("generator", "sampler")),
                "discriminator": OptimizerGroup(("discriminator",))}

    def check_channels(self, input_nc: int, output_nc: int) -> None:
        """PatchNCE encodes the translation G(A) with G itself (and the identity term feeds B images to G): G's
        input and output channel counts must be equal."""
        if input_nc != output_nc:
            raise ConfigValueError(
                "data.output_nc", output_nc,
                f"data.output_nc == data.input_nc (here {input_nc}): {type(self).__name__} encodes its translation "
                "G(A) with G itself, so G needs as many channels in as out; convert one domain (e.g. "
                f"data.input_nc={output_nc}), or use a method with two generators (model=cyclegan, objective=dclgan)",
                absolute=True)

    progress = {"nce": "loss_nce"}  # progress-bar entries: name -> loss term

    def translate(self, generator: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor) -> Translation:
        """Generator forward for the iteration: G(cat(real_a, real_b)) (real_b only with identity NCE)."""
        b = real_a.shape[0]
        real = torch.cat([real_a, real_b]) if self.nce_idt else real_a  # (B or 2B, C, H, W)
        flipped = self.flip_equivariance and self.training and bool(torch.rand(()) < 0.5)
        if flipped:
            real = real.flip(3)
        fake, feats = generator.forward_with_features(real, self.nce_layers)
        if flipped or _has_batch_stats(generator):
            # the features above belong to flipped sources, or were normalised with the statistics of the joint
            # batch: encode the sources as the reference does (no graph)
            with torch.no_grad():
                keys = self.encode_parts(generator, [real_a, real_b] if self.nce_idt else [real_a])
        else:
            keys = [f.detach() for f in feats]
        return Translation(fake[:b], fake[b:] if self.nce_idt else None, keys, flipped)

    def encode_parts(self, generator: nn.Module, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features at ``nce_layers`` of the concatenated ``parts``: one encoder pass over all of them, or, for a
        generator with batch statistics, one pass per part (each normalised with its own batch, as in the
        reference algorithm), concatenated per layer."""
        if len(parts) == 1 or not _has_batch_stats(generator):
            return generator.encode(torch.cat(parts), self.nce_layers)
        per_part = [generator.encode(p, self.nce_layers) for p in parts]
        return [torch.cat(maps) for maps in zip(*per_part)]  # per layer (sum of B_i, C_l, H_l, W_l)

    def discriminator_loss(self, discriminator: nn.Module, real_b: torch.Tensor, fake_b: torch.Tensor) -> torch.Tensor:
        """D loss 0.5 * (fake + real) on detached translations (scalar).

        A discriminator without batch statistics treats every image on its own, so fakes and reals go through
        it in one batched call (same outputs, fewer and larger kernels); with batch norm, in two calls.
        """
        fake_b = fake_b.detach()
        if _has_batch_stats(discriminator) or fake_b.shape[1:] != real_b.shape[1:]:
            pred_fake, pred_real = discriminator(fake_b), discriminator(real_b)
        else:
            pred = discriminator(torch.cat([fake_b, real_b]))  # (B_fake + B_real, 1, H', W')
            pred_fake, pred_real = pred[: fake_b.shape[0]], pred[fake_b.shape[0]:]
        return discriminator_loss(pred_real, pred_fake, self.gan_mode)

    def discriminator_losses(
        self, discriminator: nn.Module, real_b: torch.Tensor, fake_b: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """What the D step minimises, ``loss_d``, and its logged terms (CUT has no others; subclasses add
        regularisers such as SinCUT's R1)."""
        return {"loss_d": self.discriminator_loss(discriminator, real_b, fake_b)}

    def generator_losses(
        self, discriminator: nn.Module, generator: nn.Module, sampler: nn.Module, out: Translation
    ) -> dict[str, torch.Tensor]:
        """G + heads loss and its terms: ``loss_g``, ``loss_g_gan``, ``loss_nce`` and ``loss_nce_idt``.

        Call after the D step (the GAN term uses the updated D).
        """
        zero = out.fake_b.new_zeros(())
        terms = {"loss_g_gan": zero, "loss_nce": zero, "loss_nce_idt": zero}
        if self.lambda_gan > 0:
            terms["loss_g_gan"] = generator_loss(discriminator(out.fake_b), self.gan_mode) * self.lambda_gan
        nce_total = zero
        if self.lambda_nce > 0:
            queries = self.encode_parts(generator, [out.fake_b, out.idt_b] if self.nce_idt else [out.fake_b])
            losses = self.nce_losses(sampler, queries, out.keys, parts=2 if self.nce_idt else 1,
                                     mirrored=out.flipped)
            terms["loss_nce"] = nce_total = losses[0]
            if self.nce_idt:
                terms["loss_nce_idt"] = losses[1]
                nce_total = 0.5 * (losses[0] + losses[1])
        terms["loss_g"] = terms["loss_g_gan"] + nce_total
        return terms

    def nce_losses(
        self,
        sampler: nn.Module,
        queries: list[torch.Tensor],
        keys: list[torch.Tensor],
        parts: int = 1,
        mirrored: bool = False,
    ) -> list[torch.Tensor]:
        """lambda_nce * PatchNCE (mean over queries, then over layers) of each of ``parts`` equal slices of the
        batch: e.g. [(fake_b, real_a) term, (idt_b, real_b) term].

        Args:
            queries, keys: per layer (N, C_l, H_l, W_l), N = parts * B; keys are constants (no graph is built).
            mirrored: the queries are left-right mirrored relative to the keys (FastCUT's flip): query patches are
                taken at mirrored positions, the same as flipping the query maps back, without the copies.
        Returns:
            ``parts`` scalars. Patch positions are drawn part after part (all layers of part 0, then part 1: the
            RNG order of separate calls); sampling, heads and losses then run once over the whole batch.
        """
        b = keys[0].shape[0] // parts
        draws = [[sampler.draw_patch_ids(k, self.num_patches) for k in keys] for _ in range(parts)]  # [part][layer]
        if parts == 1:
            ids = draws[0]  # (S,) per layer
        else:
            ids = [torch.cat([d[layer].expand(b, -1) for d in draws]) for layer in range(len(keys))]  # (N, S)
        with torch.no_grad():
            feats_k, _ = sampler(keys, patch_ids=ids)  # (N, S, D) per layer
        q_ids = [mirror_ids(i, q.shape[-1]) for i, q in zip(ids, queries)] if mirrored else ids
        feats_q, _ = sampler(queries, patch_ids=q_ids)
        losses = multilayer_patch_nce(feats_q, feats_k, self.nce_temperature, self.negatives, parts)  # (parts,)
        return list(losses * self.lambda_nce)

    @torch.no_grad()
    def evaluation_nce(
        self, generator: nn.Module, sampler: nn.Module, real: torch.Tensor, fake: torch.Tensor, num_patches: int = 256
    ) -> torch.Tensor:
        """PatchNCE of translations against their sources, for monitoring (e.g. on validation images).

        Args:
            real, fake: (B, C, H, W) sources and their translations (H, W multiples of the generator's
                ``size_multiple``).
            num_patches: positions drawn per layer (torch RNG), the same for every image.
        Returns:
            The multilayer PatchNCE (mean over the queries of each layer, then over layers), not weighted by
            ``lambda_nce``, with negatives from the same image whatever ``negatives`` and ``num_patches`` training
            uses: values compare across runs and settings; chance level is about log(num_patches).
        """
        feats_k, ids = sampler(generator.encode(real, self.nce_layers), num_patches=num_patches)  # (B, S, D) each
        feats_q, _ = sampler(generator.encode(fake, self.nce_layers), patch_ids=ids)
        return multilayer_patch_nce(feats_q, feats_k, self.nce_temperature, "image")[0]

    @torch.no_grad()
    def image_metrics(
        self, nets: Nets, source: torch.Tensor, translation: torch.Tensor, target: torch.Tensor, patches: int
    ) -> dict[str, torch.Tensor]:
        """``nce``: ``evaluation_nce`` of the translation G(source) against the source; ``nce_idt``: of G(target)
        against the target (how far G is from the identity on its target domain). None when ``patches`` is 0, the
        heads (role ``sampler``) are missing or ``lambda_nce`` is 0."""
        generator, sampler = nets["generator"], nets.get("sampler")
        if patches <= 0 or sampler is None or self.lambda_nce <= 0:
            return {}
        return {"nce": self.evaluation_nce(generator, sampler, source, translation, patches),
                "nce_idt": self.evaluation_nce(generator, sampler, target, generator(target).float(), patches)}

    def iteration(
        self, nets: Nets, batch: Batch, optimizers: Optimizers, backward: Backward | None = None
    ) -> dict[str, torch.Tensor]:
        """One full training iteration: translate, D step, then G + heads step (``optimizers["generator"]`` owns G
        and the heads, ``optimizers["discriminator"]`` D).

        ``nets``: ``generator``, ``discriminator``, ``sampler``; ``batch``: ``{"A": real_a, "B": real_b}``.
        ``backward(loss)`` defaults to ``loss.backward()`` (Lightning passes ``manual_backward``).
        Returns the detached loss terms (``loss_d``, ``loss_g``, ``loss_g_gan``, ``loss_nce``, ``loss_nce_idt``, and
        any a subclass's ``discriminator_losses`` / ``generator_losses`` add).
        """
        backward = backward or torch.Tensor.backward
        generator, discriminator, sampler = nets["generator"], nets["discriminator"], nets.get("sampler")
        real_a, real_b = batch["A"], batch["B"]
        opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
        out = self.translate(generator, real_a, real_b)
        if self.lambda_gan > 0:
            discriminator.requires_grad_(True)
            d_terms = self.discriminator_losses(discriminator, real_b, out.fake_b)
            opt_d.zero_grad(set_to_none=True)
            backward(d_terms["loss_d"])
            opt_d.step()
        else:
            d_terms = {"loss_d": out.fake_b.new_zeros(())}
        discriminator.requires_grad_(False)  # the G step must not produce D gradients
        terms = self.generator_losses(discriminator, generator, sampler, out)
        opt_g.zero_grad(set_to_none=True)
        backward(terms["loss_g"])
        opt_g.step()
        discriminator.requires_grad_(True)
        return {k: v.detach() for k, v in {**d_terms, **terms}.items()}
