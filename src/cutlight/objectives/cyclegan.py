"""CycleGAN (Zhu et al., ICCV 2017) as plain PyTorch: the image pool, the original networks, one training iteration.

``CycleGANObjective.iteration`` is the original implementation's iteration (``optimize_parameters``)::

    fake_b = G_A(a)   rec_a = G_B(fake_b)   fake_a = G_B(b)   rec_b = G_A(fake_a)
    G step, D_A and D_B frozen:
        GAN(D_A(fake_b)) + GAN(D_B(fake_a)) + lambda_a |rec_a - a|_1 + lambda_b |rec_b - b|_1
        + lambda_b * lambda_identity |G_A(b) - b|_1 + lambda_a * lambda_identity |G_B(a) - a|_1
    D step: D_A on (b, pool_b.query(fake_b)), D_B on (a, pool_a.query(fake_a)); each 0.5 * (real + fake)

with one optimizer for both generators and one for both discriminators. Same math, less work: where a network has
no batch statistics (instance norm), images it would see in separate calls go through it in one call (G_A on
cat(a, b) gives fake_b and the identity image G_A(b); each D scores its fakes and reals together), which gives the
same outputs: 4 generator and 4 discriminator calls per iteration instead of 6 and 6.
``tests/test_cyclegan.py`` checks losses and updates against the straightforward step.

The pieces shared with the one-sided baselines built on CycleGAN's code (GcGAN, DistanceGAN) live here too:
``ImagePool``, ``batched_call``, ``pooled_discriminator_losses`` and ``PooledObjective`` (pools in the state dict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from ..losses import GAN_MODES, cycle_loss, discriminator_loss, generator_loss
from ..networks import PatchDiscriminator, ResnetGenerator
from .contract import Backward, Batch, Nets, Objective, OptimizerGroup, Optimizers, Role
from .cut import _has_batch_stats


class ImagePool:
    """The CycleGAN image buffer: the discriminator is shown a history of generated images, not only the latest.

    ``query(images)`` per image: while the pool holds fewer than ``pool_size`` images, store it and return it;
    once full, with probability 0.5 return a stored image chosen uniformly and store the new one in its place,
    else return the new image. ``pool_size=0`` passes images through.

    The coin flips and picks use torch's default (CPU) generator (``torch.rand``, ``torch.randint``), so
    ``seed_everything`` makes them reproducible; the original implementation uses Python's ``random`` (same rule,
    a different random stream). Stored images are detached copies; ``state_dict`` / ``load_state_dict`` carry
    them (as one (N, C, H, W) tensor) so that a resumed run continues with the same pool.
    """

    def __init__(self, pool_size: int = 50):
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        self.pool_size = int(pool_size)
        self.images: list[torch.Tensor] = []  # each (C, H, W), detached

    def __len__(self) -> int:
        return len(self.images)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) new generated images -> (B, C, H, W) detached images to show the discriminator."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        if self.images and (self.images[0].device != images.device or self.images[0].dtype != images.dtype):
            self.images = [im.to(images) for im in self.images]  # e.g. restored on CPU, training on GPU
        out = []
        for image in images:  # (C, H, W)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand(())) > 0.5:
                idx = int(torch.randint(self.pool_size, ()))
                out.append(self.images[idx])
                self.images[idx] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)  # (B, C, H, W)

    def state_dict(self) -> dict[str, Any]:
        images = torch.stack(self.images) if self.images else torch.empty(0)  # (N, C, H, W)
        return {"pool_size": self.pool_size, "images": images}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        images = state["images"]
        n = images.shape[0] if images.numel() else 0
        if n > self.pool_size:
            raise ValueError(f"saved image pool holds {n} images, more than this pool's pool_size {self.pool_size}")
        self.images = [im.clone() for im in images[:n]]


class PooledObjective(Objective):
    """Base of objectives that own ``ImagePool`` attributes: their contents go into the module's state dict
    (``get_extra_state``, key ``<prefix>_extra_state``), so a checkpoint of a module holding the objective
    restores the pools on resume."""

    def pools(self) -> dict[str, ImagePool]:
        return {name: value for name, value in vars(self).items() if isinstance(value, ImagePool)}

    def get_extra_state(self) -> dict[str, Any]:
        return {name: pool.state_dict() for name, pool in self.pools().items()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        pools = self.pools()
        if set(state) != set(pools):
            raise ValueError(f"saved pools {sorted(state)} do not match this objective's pools {sorted(pools)}")
        for name, pool in pools.items():
            pool.load_state_dict(state[name])


def batched_call(net: nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``[net(x) for x in inputs]``, computed as one call on their concatenation when that gives the same outputs:
    ``net`` has no batch statistics (instance norm, not batch norm) and the inputs share (C, H, W).
    (With dropout the masks are drawn in a different order: same distribution, other random numbers.)"""
    if len(inputs) > 1 and not _has_batch_stats(net) and all(x.shape[1:] == inputs[0].shape[1:] for x in inputs):
        out = net(torch.cat(list(inputs)))  # (sum B_i, ...)
        return list(out.split([x.shape[0] for x in inputs]))
    return [net(x) for x in inputs]


def pooled_discriminator_losses(
    discriminator: nn.Module,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor, ImagePool]],
    gan_mode: str = "lsgan",
) -> list[torch.Tensor]:
    """D losses 0.5 * (real + fake) for ``pairs`` of (real (B, C, H, W), fake (B, C, H, W), pool), all scored by
    ``discriminator``: each fake is detached and exchanged through its pool (pools queried in the order given),
    then reals and fakes go through D (one call where ``batched_call`` allows). One scalar per pair."""
    fakes = [pool.query(fake) for _, fake, pool in pairs]
    inputs = [t for (real, _, _), fake in zip(pairs, fakes) for t in (real, fake)]
    preds = batched_call(discriminator, inputs)  # [pred_real_0, pred_fake_0, pred_real_1, ...]
    return [discriminator_loss(preds[2 * i], preds[2 * i + 1], gan_mode) for i in range(len(pairs))]


class CycleGANNetworks(NamedTuple):
    gen_a: ResnetGenerator  # G_A: A -> B
    gen_b: ResnetGenerator  # G_B: B -> A
    disc_a: PatchDiscriminator  # D_A: real B vs G_A(A)
    disc_b: PatchDiscriminator  # D_B: real A vs G_B(B)


# Keyword arguments that give cutlight's networks the original CycleGAN layout and initialisation (for configs:
# ``ResnetGenerator(**ORIGINAL_GENERATOR)``); state dicts of the original implementation load with strict=True.
ORIGINAL_GENERATOR = {"antialias": False, "antialias_up": False, "dropout": 0.0, "init_type": "normal",
                      "init_gain": 0.02}
ORIGINAL_DISCRIMINATOR = {"antialias": False, "init_type": "normal", "init_gain": 0.02}


def cyclegan_networks(
    input_nc: int = 3,
    output_nc: int = 3,
    ngf: int = 64,
    ndf: int = 64,
    n_blocks: int = 9,
    n_layers_d: int = 3,
    norm: str = "instance",
    dropout: float = 0.0,
) -> CycleGANNetworks:
    """CycleGAN's four networks with the original layout: ResNet generators with strided-conv downsampling and
    transposed-conv upsampling (no antialiasing), 70x70 PatchGANs with strided convs, N(0, 0.02) initialisation,
    no dropout (the original CycleGAN default). At the defaults: 11,378,179 parameters per generator (48 state-dict
    entries) and 2,764,737 per discriminator (10 entries)."""
    gen = {"ngf": ngf, "n_blocks": n_blocks, "norm": norm, **ORIGINAL_GENERATOR, "dropout": dropout}
    disc = {"ndf": ndf, "n_layers": n_layers_d, "norm": norm, **ORIGINAL_DISCRIMINATOR}
    return CycleGANNetworks(
        gen_a=ResnetGenerator(input_nc, output_nc, **gen),
        gen_b=ResnetGenerator(output_nc, input_nc, **gen),
        disc_a=PatchDiscriminator(output_nc, **disc),
        disc_b=PatchDiscriminator(input_nc, **disc),
    )


@dataclass
class CycleTranslation:
    """The images of one CycleGAN iteration (each (B, C, H, W)); the identity images only with lambda_identity > 0."""

    fake_b: torch.Tensor  # G_A(a)
    rec_a: torch.Tensor  # G_B(G_A(a))
    fake_a: torch.Tensor  # G_B(b)
    rec_b: torch.Tensor  # G_A(G_B(b))
    idt_a: torch.Tensor | None  # G_A(b)
    idt_b: torch.Tensor | None  # G_B(a)


class CycleGANObjective(PooledObjective):
    """CycleGAN's losses and iteration (the original implementation's defaults).

    Args:
        lambda_a: weight of the cycle term |G_B(G_A(a)) - a|_1.
        lambda_b: weight of the cycle term |G_A(G_B(b)) - b|_1.
        lambda_identity: identity terms |G_A(b) - b|_1 weighted lambda_b * lambda_identity and |G_B(a) - a|_1
            weighted lambda_a * lambda_identity; needs as many channels in A as in B. 0 turns them off.
        gan_mode: ``lsgan``, ``vanilla``, ``nonsaturating`` or ``hinge``.
        pool_size: size of each image pool (fake A for D_B, fake B for D_A); 0 shows D only the latest fakes.
    """

    def __init__(
        self,
        lambda_a: float = 10.0,
        lambda_b: float = 10.0,
        lambda_identity: float = 0.5,
        gan_mode: str = "lsgan",
        pool_size: int = 50,
    ):
        super().__init__()
        if gan_mode not in GAN_MODES:
            raise ValueError(f"unknown gan_mode {gan_mode!r}; expected one of {', '.join(GAN_MODES)}")
        for name, value in (("lambda_a", lambda_a), ("lambda_b", lambda_b), ("lambda_identity", lambda_identity)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.lambda_a = float(lambda_a)
        self.lambda_b = float(lambda_b)
        self.lambda_identity = float(lambda_identity)
        self.gan_mode = gan_mode
        self.pool_a = ImagePool(pool_size)  # generated A images, shown to D_B
        self.pool_b = ImagePool(pool_size)  # generated B images, shown to D_A

    # ------------------------------------------------------------------ the contract
    progress = {"cycle": "loss_cycle_a"}

    def roles(self) -> dict[str, Role]:
        """G_A (A -> B), G_B (B -> A), D_A (judges B images), D_B (judges A images): by default the original
        layout (``ORIGINAL_GENERATOR`` / ``ORIGINAL_DISCRIMINATOR`` under the model nodes' keywords). State-dict
        prefixes ``gen_a.``, ``gen_b.``, ``disc_a.``, ``disc_b.`` (the original's netG_A, netG_B, netD_A, netD_B)."""
        return {
            "gen_a": Role("generator", ResnetGenerator, ORIGINAL_GENERATOR, translates="AtoB"),
            "gen_b": Role("generator", ResnetGenerator, ORIGINAL_GENERATOR, translates="BtoA"),
            "disc_a": Role("discriminator", PatchDiscriminator, ORIGINAL_DISCRIMINATOR, judges="B"),
            "disc_b": Role("discriminator", PatchDiscriminator, ORIGINAL_DISCRIMINATOR, judges="A"),
        }

    def optimizers(self) -> dict[str, OptimizerGroup]:
        """One Adam for both generators, one for both discriminators (the original's)."""
        return {"generator": OptimizerGroup(("gen_a", "gen_b")), "discriminator": OptimizerGroup(("disc_a", "disc_b"))}

    def translators(self) -> dict[str, str]:
        return {"AtoB": "gen_a", "BtoA": "gen_b"}

    def check_channels(self, input_nc: int, output_nc: int) -> None:
        if self.lambda_identity > 0 and input_nc != output_nc:
            raise ValueError(
                f"model.objective.lambda_identity={self.lambda_identity} needs equal channel counts (G_A is fed B "
                f"images), but input_nc={input_nc} and output_nc={output_nc}; set lambda_identity=0")

    @torch.no_grad()
    def visuals(self, nets: Nets, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Labelled image columns for grids: A, G_A(A), G_B(G_A(A)), B, G_B(B)."""
        fake_b = nets["gen_a"](real_a)
        return {"A": real_a, "G_A(A)": fake_b, "G_B(G_A(A))": nets["gen_b"](fake_b), "B": real_b,
                "G_B(B)": nets["gen_b"](real_b)}

    def check_inputs(self, real_a: torch.Tensor, real_b: torch.Tensor) -> None:
        """The identity terms feed B images to G_A (and A images to G_B): A and B need the same channel count."""
        if self.lambda_identity > 0 and real_a.shape[1] != real_b.shape[1]:
            raise ValueError(
                f"lambda_identity={self.lambda_identity} needs input_nc == output_nc (G_A is fed B images), but A "
                f"images have {real_a.shape[1]} channels and B images {real_b.shape[1]}; set lambda_identity=0")

    def translate(
        self, gen_a: nn.Module, gen_b: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor
    ) -> CycleTranslation:
        """The forward pass: translations, reconstructions and (with lambda_identity > 0) identity images."""
        if self.lambda_identity > 0:
            fake_b, idt_a = batched_call(gen_a, [real_a, real_b])
            fake_a, idt_b = batched_call(gen_b, [real_b, real_a])
        else:
            fake_b, fake_a, idt_a, idt_b = gen_a(real_a), gen_b(real_b), None, None
        return CycleTranslation(fake_b, gen_b(fake_b), fake_a, gen_a(fake_a), idt_a, idt_b)

    def generator_losses(
        self, disc_a: nn.Module, disc_b: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor, out: CycleTranslation
    ) -> dict[str, torch.Tensor]:
        """``loss_g`` and its terms ``loss_g_a``, ``loss_g_b`` (GAN), ``loss_cycle_a``, ``loss_cycle_b``,
        ``loss_idt_a``, ``loss_idt_b`` (weighted)."""
        zero = out.fake_b.new_zeros(())
        terms = {
            "loss_g_a": generator_loss(disc_a(out.fake_b), self.gan_mode),
            "loss_g_b": generator_loss(disc_b(out.fake_a), self.gan_mode),
            "loss_cycle_a": cycle_loss(out.rec_a, real_a) * self.lambda_a,
            "loss_cycle_b": cycle_loss(out.rec_b, real_b) * self.lambda_b,
            "loss_idt_a": zero,
            "loss_idt_b": zero,
        }
        if out.idt_a is not None:
            terms["loss_idt_a"] = cycle_loss(out.idt_a, real_b) * self.lambda_b * self.lambda_identity
            terms["loss_idt_b"] = cycle_loss(out.idt_b, real_a) * self.lambda_a * self.lambda_identity
        terms["loss_g"] = sum(terms.values(), zero)
        return terms

    def discriminator_losses(
        self, disc_a: nn.Module, disc_b: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor, out: CycleTranslation
    ) -> dict[str, torch.Tensor]:
        """``loss_d_a`` (D_A: real B vs pooled fake B), ``loss_d_b`` (D_B: real A vs pooled fake A) and their sum
        ``loss_d``; pool B is queried before pool A, as in the original."""
        (loss_d_a,) = pooled_discriminator_losses(disc_a, [(real_b, out.fake_b, self.pool_b)], self.gan_mode)
        (loss_d_b,) = pooled_discriminator_losses(disc_b, [(real_a, out.fake_a, self.pool_a)], self.gan_mode)
        return {"loss_d_a": loss_d_a, "loss_d_b": loss_d_b, "loss_d": loss_d_a + loss_d_b}

    def iteration(
        self, nets: Nets, batch: Batch, optimizers: Optimizers, backward: Backward | None = None
    ) -> dict[str, torch.Tensor]:
        """One training iteration: forward, G step (``optimizers["generator"]`` owns G_A and G_B; discriminators
        frozen), then D step (``optimizers["discriminator"]`` owns D_A and D_B) on the fakes of this forward pass,
        through the pools.

        ``nets``: ``gen_a``, ``gen_b``, ``disc_a``, ``disc_b``; ``batch``: ``{"A": (B, C_A, H, W), "B": (B, C_B, H,
        W)}`` in [-1, 1]. ``backward(loss)`` defaults to ``loss.backward()`` (Lightning passes ``manual_backward``).
        Returns the detached losses: ``loss_g``, ``loss_g_a``, ``loss_g_b``, ``loss_cycle_a``, ``loss_cycle_b``,
        ``loss_idt_a``, ``loss_idt_b``, ``loss_d_a``, ``loss_d_b``, ``loss_d``.
        """
        backward = backward or torch.Tensor.backward
        gen_a, gen_b, disc_a, disc_b = nets["gen_a"], nets["gen_b"], nets["disc_a"], nets["disc_b"]
        real_a, real_b = batch["A"], batch["B"]
        opt_g, opt_d = optimizers["generator"], optimizers["discriminator"]
        self.check_inputs(real_a, real_b)
        out = self.translate(gen_a, gen_b, real_a, real_b)
        disc_a.requires_grad_(False)  # the G step must not produce D gradients
        disc_b.requires_grad_(False)
        terms = self.generator_losses(disc_a, disc_b, real_a, real_b, out)
        opt_g.zero_grad(set_to_none=True)
        backward(terms["loss_g"])
        opt_g.step()
        disc_a.requires_grad_(True)
        disc_b.requires_grad_(True)
        d_terms = self.discriminator_losses(disc_a, disc_b, real_a, real_b, out)
        opt_d.zero_grad(set_to_none=True)
        backward(d_terms["loss_d"])
        opt_d.step()
        return {k: v.detach() for k, v in {**terms, **d_terms}.items()}
