"""Reference-style CUT: the straightforward algorithm of the authors' implementation, as the same-math oracle.

Not product code: the tests (``tests/test_same_math.py``) check ``CUTObjective.iteration`` against
``ReferenceStep`` and the benchmark (``benchmarks/bench.py``) times both side by side. It uses the authors' layer
implementations (blur down/up-sampling as depthwise conv / conv_transpose on padded inputs, in-place ReLUs,
patch sampling through a full permute + reshape copy, sources re-encoded with a graph for the NCE keys) and
runs on copies of cutlight's networks (same weights, same state-dict layout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RefDownsample(nn.Module):
    """Reference blur-pool: ReflectionPad2d(1) module, then depthwise 3x3 conv with stride 2."""

    def __init__(self, channels: int, filt: torch.Tensor):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.register_buffer("filt", filt.clone())  # (C, 1, 3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=x.shape[1])


class RefUpsample(nn.Module):
    """Reference blur upsampling: ReplicationPad2d(1), depthwise conv_transpose (stride 2, padding 2), crops."""

    def __init__(self, channels: int, filt: torch.Tensor):
        super().__init__()
        self.pad = nn.ReplicationPad2d(1)
        self.register_buffer("filt", filt.clone())  # (C, 1, 4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2, groups=x.shape[1])[:, :, 1:, 1:]
        return y[:, :, :-1, :-1]  # (B, C, 2H, 2W)


class RefResnetBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _blur_filters(state: dict, prefix: str = "model.") -> dict[int, torch.Tensor]:
    return {int(k[len(prefix):].split(".")[0]): v for k, v in state.items() if k.endswith(".filt")}


class RefGenerator(nn.Module):
    """The reference ResNet generator (antialiased, instance norm), built to load ``ResnetGenerator`` weights.

    The reference hard-codes 2 downsamplings; the number is read from the weights here (one blur filter per
    downsampling and per upsampling), so that ``num_downsampling=1`` generators (``experiment=builtin_cpu``) can
    be mirrored.

    ``forward(x)`` -> (B, C, H, W); ``forward(x, layers, encode_only=True)`` -> feature maps at ``layers``.
    """

    def __init__(self, state: dict):
        super().__init__()
        ngf, input_nc = state["model.1.weight"].shape[:2]
        n_blocks = sum(k.endswith("conv_block.1.weight") for k in state)
        filters = _blur_filters(state)
        n_down = len(filters) // 2
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7), nn.InstanceNorm2d(ngf),
                                   nn.ReLU(True)]
        for i in range(n_down):
            c = ngf * 2 ** (i + 1)
            idx = len(layers) + 3  # position of the blur layer
            layers += [nn.Conv2d(c // 2, c, 3, padding=1), nn.InstanceNorm2d(c), nn.ReLU(True),
                       RefDownsample(c, filters[idx])]
        layers += [RefResnetBlock(ngf * 2**n_down) for _ in range(n_blocks)]
        for i in range(n_down):
            c = ngf * 2 ** (n_down - i)
            layers += [RefUpsample(c, filters[len(layers)]), nn.Conv2d(c, c // 2, 3, padding=1),
                       nn.InstanceNorm2d(c // 2), nn.ReLU(True)]
        output_nc = state[f"model.{len(layers) + 1}.weight"].shape[0]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        self.load_state_dict(state)

    def forward(self, x, layers=(), encode_only=False):
        if not encode_only:
            return self.model(x)
        feats = []
        for idx, layer in enumerate(self.model):
            x = layer(x)
            if idx in layers:
                feats.append(x)
            if idx == layers[-1]:
                return feats


class RefDiscriminator(nn.Module):
    """The reference antialiased PatchGAN (instance norm), built to load ``PatchDiscriminator`` weights."""

    def __init__(self, state: dict):
        super().__init__()
        ndf, input_nc = state["model.0.weight"].shape[:2]
        filters = _blur_filters(state)
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, padding=1), nn.LeakyReLU(0.2, True),
                                   RefDownsample(ndf, filters[2])]
        mult = 1
        for n in range(1, len(filters)):
            prev, mult = mult, min(2**n, 8)
            idx = len(layers) + 3  # position of the blur layer
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, padding=1), nn.InstanceNorm2d(ndf * mult),
                       nn.LeakyReLU(0.2, True), RefDownsample(ndf * mult, filters[idx])]
        prev, mult = mult, min(2 ** len(filters), 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, padding=1), nn.InstanceNorm2d(ndf * mult),
                   nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, padding=1)]
        self.model = nn.Sequential(*layers)
        self.load_state_dict(state)

    def forward(self, x):
        return self.model(x)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the gradient contiguous.

    Works around torch 2.14's CPU instance-norm backward, which is wrong for batch size 1 when the incoming
    gradient is channels-last strided, as the gradient of the permuted sampling below is (it reaches the last
    norm of a residual block through the block's addition). The correct math costs one copy per layer.
    """

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad.contiguous()


class RefSampler(nn.Module):
    """The reference PatchSampleF: full (B, H*W, C) copy, numpy-style indexing, MLP on (B*S, C) rows, L2 norm."""

    def __init__(self, state: dict):
        super().__init__()
        n = sum(k.endswith(".0.weight") for k in state)
        for i in range(n):
            dim, c = state[f"mlp_{i}.0.weight"].shape
            setattr(self, f"mlp_{i}", nn.Sequential(nn.Linear(c, dim), nn.ReLU(), nn.Linear(dim, dim)))
        self.load_state_dict(state)

    def forward(self, feats, num_patches=256, patch_ids=None):
        out, ids_out = [], []
        for i, feat in enumerate(feats):
            flat = _ContiguousGrad.apply(feat).permute(0, 2, 3, 1).flatten(1, 2)  # (B, H*W, C)
            if patch_ids is None:
                ids = torch.randperm(flat.shape[1], device=feat.device)[: min(num_patches, flat.shape[1])]
            else:
                ids = patch_ids[i]
            x = getattr(self, f"mlp_{i}")(flat[:, ids, :].flatten(0, 1))  # (B*S, D)
            out.append(x.div(x.pow(2).sum(1, keepdim=True).pow(0.5) + 1e-7))
            ids_out.append(ids)
        return out, ids_out


def ref_patch_nce(q, k, batch: int, tau: float, all_negatives: bool) -> torch.Tensor:
    """Reference PatchNCELoss on (B*S, D) rows -> (B*S,) losses (internal negatives grouped per image)."""
    n, dim = q.shape
    k = k.detach()
    l_pos = torch.bmm(q.view(n, 1, -1), k.view(n, -1, 1)).view(n, 1)
    groups = 1 if all_negatives else batch
    qg, kg = q.view(groups, -1, dim), k.view(groups, -1, dim)  # (G, n/G, D)
    s = qg.shape[1]
    l_neg = torch.bmm(qg, kg.transpose(2, 1))
    l_neg.masked_fill_(torch.eye(s, dtype=torch.bool, device=q.device)[None], -10.0)
    logits = torch.cat((l_pos, l_neg.view(-1, s)), dim=1) / tau  # (B*S, 1 + s)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=q.device), reduction="none")


class ReferenceStep:
    """The straightforward CUT iteration on reference-style copies of (G, D, H); hyperparameters from ``objective``.

    ``step(real_a, real_b)`` -> dict of detached losses. Optimizers: Adam(lr 2e-4, betas (0.5, 0.999)).
    """

    def __init__(self, objective, generator, discriminator, sampler, device=None):
        self.obj = objective
        self.G = RefGenerator(generator.state_dict()).to(device)
        self.D = RefDiscriminator(discriminator.state_dict()).to(device)
        self.F = RefSampler(sampler.state_dict()).to(device)
        adam = {"lr": 2e-4, "betas": (0.5, 0.999)}
        self.opt_g = torch.optim.Adam([*self.G.parameters(), *self.F.parameters()], **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)

    def nce(self, src, tgt, flipped: bool) -> torch.Tensor:
        o = self.obj
        feat_q = self.G(tgt, o.nce_layers, encode_only=True)
        if flipped:
            feat_q = [f.flip(3) for f in feat_q]
        feat_k = self.G(src, o.nce_layers, encode_only=True)  # with graph, as the reference does
        feat_k_pool, ids = self.F(feat_k, o.num_patches)
        feat_q_pool, _ = self.F(feat_q, o.num_patches, ids)
        total = 0.0
        for q, k in zip(feat_q_pool, feat_k_pool):
            total = total + ref_patch_nce(q, k, src.shape[0], o.nce_temperature, o.negatives == "batch").mean()
        return total * o.lambda_nce / len(o.nce_layers)

    def step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, torch.Tensor]:
        o, b = self.obj, real_a.shape[0]
        real = torch.cat((real_a, real_b)) if o.nce_idt else real_a
        flipped = o.flip_equivariance and bool(torch.rand(()) < 0.5)
        if flipped:
            real = torch.flip(real, [3])
        fake = self.G(real)
        fake_b, idt_b = fake[:b], fake[b:]
        # D step
        self.D.requires_grad_(True)
        self.opt_d.zero_grad()
        pred_fake = self.D(fake_b.detach())
        loss_d_fake = F.mse_loss(pred_fake, torch.zeros_like(pred_fake))
        pred_real = self.D(real_b)
        loss_d_real = F.mse_loss(pred_real, torch.ones_like(pred_real))
        loss_d = (loss_d_fake + loss_d_real) * 0.5
        loss_d.backward()
        self.opt_d.step()
        # G step
        self.D.requires_grad_(False)
        self.opt_g.zero_grad()
        pred = self.D(fake_b)
        loss_g_gan = F.mse_loss(pred, torch.ones_like(pred)) * o.lambda_gan
        loss_nce = self.nce(real_a, fake_b, flipped)
        loss_nce_idt = self.nce(real_b, idt_b, flipped) if o.nce_idt else torch.zeros(())
        nce_both = 0.5 * (loss_nce + loss_nce_idt) if o.nce_idt else loss_nce
        loss_g = loss_g_gan + nce_both
        loss_g.backward()
        self.opt_g.step()
        out = {"loss_d": loss_d, "loss_g": loss_g, "loss_g_gan": loss_g_gan, "loss_nce": loss_nce,
               "loss_nce_idt": loss_nce_idt}
        return {k: v.detach() for k, v in out.items()}
