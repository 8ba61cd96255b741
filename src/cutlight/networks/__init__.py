"""CUT networks in plain PyTorch: generator (G), PatchGAN discriminator (D), patch sampler with MLP heads (H);
StyleGAN2-style generator and discriminator for SinCUT."""

from .discriminator import PatchDiscriminator
from .generator import ResnetGenerator
from .init import INIT_TYPES, init_weights
from .layers import NORMS, BlurDownsample, BlurUpsample, ResnetBlock
from .sampler import PatchSampler, l2_normalize
from .stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from .weights import load_network_weights, resnet_generator_kwargs, strip_prefix

__all__ = [
    "INIT_TYPES",
    "NORMS",
    "BlurDownsample",
    "BlurUpsample",
    "PatchDiscriminator",
    "PatchSampler",
    "ResnetBlock",
    "ResnetGenerator",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "init_weights",
    "l2_normalize",
    "load_network_weights",
    "resnet_generator_kwargs",
    "strip_prefix",
]
