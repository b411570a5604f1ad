"""StyleGAN2 generator (config-f family) as a chain of stages.

Stage 0 is the 4x4 block (constant input, conv, to-RGB); stage k >= 1 is the block at
resolution 4·2^k (upsampling modulated conv, modulated conv, to-RGB, skip upsample + add).
The state between stages is the pair (features, rgb skip): both are carried, so resuming the
chain from any stage reproduces the full forward exactly (the paper's code drops the skip).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ilo.generators.latent_stats import LatentStats, latent_stats
from ilo.generators.ops import EqualizedLinear, StyledConv, TakesFastLayers, ToRGB, fir_kernel, upsample_rgb
from ilo.generators.staged import Stage, StagedGenerator, StageSpec, State, latent_row

MAPPING_LR_MULTIPLIER = 0.01


@dataclass(frozen=True)
class StyleGAN2Config:
    """Everything needed to build the network; loaders infer it from tensor shapes."""

    resolution: int
    mapping_features: tuple[int, ...]  # (z_dim, hidden..., w_dim): one entry more than layers
    channels: tuple[int, ...]  # feature channels at 4, 8, ..., resolution
    conv_clamp: float | None = None
    mapping_lr: float = MAPPING_LR_MULTIPLIER

    @property
    def z_dim(self) -> int:
        return self.mapping_features[0]

    @property
    def w_dim(self) -> int:
        return self.mapping_features[-1]

    @property
    def log2_resolution(self) -> int:
        return int(math.log2(self.resolution))

    @property
    def n_latent(self) -> int:
        return 2 * self.log2_resolution - 2

    @property
    def n_noise(self) -> int:
        return 2 * self.log2_resolution - 3

    def resolution_of_stage(self, k: int) -> int:
        return 4 * 2**k

    def validate(self) -> None:
        r = self.resolution
        if r < 8 or r > 1024 or r & (r - 1):
            raise ValueError(f"StyleGAN2 resolution must be a power of two in 8..1024, got {r}")
        if len(self.channels) != self.log2_resolution - 1:
            raise ValueError(f"expected {self.log2_resolution - 1} channel counts for {r}px, got {len(self.channels)}")


def stylegan2_noise_resolution(i: int) -> int:
    """Noise map i sits at 4·2^((i+1)//2): map 0 at 4px, maps 1-2 at 8px, 3-4 at 16px, ..."""
    return 2 ** ((i + 5) // 2)


def config_f(resolution: int, w_dim: int = 512, mapping_layers: int = 8, channel_divisor: int = 1) -> StyleGAN2Config:
    """The channel table of the paper's config-f (channel multiplier 2), optionally narrowed."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
    log2 = int(math.log2(resolution))
    channels = tuple(max(1, table[2**i] // channel_divisor) for i in range(2, log2 + 1))
    return StyleGAN2Config(resolution, (w_dim,) * (mapping_layers + 1), channels)


class MappingNetwork(nn.Module):
    """z -> normalise second moment -> equalised-lr MLP with leaky ReLU -> w."""

    def __init__(self, features: Sequence[int], lr_multiplier: float = MAPPING_LR_MULTIPLIER):
        super().__init__()
        self.layers = nn.ModuleList(
            EqualizedLinear(a, b, lr_multiplier=lr_multiplier, activate=True)
            for a, b in zip(features[:-1], features[1:])
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        return x


class InitialStage(Stage):
    """4x4: constant -> modulated conv -> to-RGB. Reads latents 0-1 and noise map 0."""

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        c = config.channels[0]
        self.const = nn.Parameter(torch.zeros(c, 4, 4))
        self.conv = StyledConv(c, c, config.w_dim, conv_clamp=config.conv_clamp)
        self.to_rgb = ToRGB(c, config.w_dim, conv_clamp=config.conv_clamp)
        self.spec = StageSpec(0, 4, 0, 2, 0, 1, (), ((c, 4, 4), (3, 4, 4)))

    def forward(self, state: State, latents: torch.Tensor, noises: Sequence[torch.Tensor]) -> State:
        x = self.const[None].expand(latents.shape[0], -1, -1, -1)
        x = self.conv(x, latent_row(latents, 0), noises[0])
        return x, self.to_rgb(x, latent_row(latents, 1))


class BlockStage(Stage, TakesFastLayers):
    """Resolution 4·2^k: upsampling conv -> conv -> to-RGB added to the upsampled skip.
    The skip upsampling runs on `self.fast` where set (see ops.with_fast_layers).

    Reads latents 2k-1, 2k, 2k+1 (the first is shared with the previous stage's to-RGB) and
    noise maps 2k-1, 2k.
    """

    def __init__(self, config: StyleGAN2Config, k: int):
        super().__init__()
        c_in, c_out = config.channels[k - 1], config.channels[k]
        res = config.resolution_of_stage(k)
        self.conv0 = StyledConv(c_in, c_out, config.w_dim, up=True, conv_clamp=config.conv_clamp)
        self.conv1 = StyledConv(c_out, c_out, config.w_dim, conv_clamp=config.conv_clamp)
        self.to_rgb = ToRGB(c_out, config.w_dim, conv_clamp=config.conv_clamp)
        self.register_buffer("skip_kernel", fir_kernel(), persistent=False)
        half = res // 2
        self.spec = StageSpec(
            k,
            res,
            2 * k - 1,
            3,
            2 * k - 1,
            2,
            ((c_in, half, half), (3, half, half)),
            ((c_out, res, res), (3, res, res)),
        )

    def forward(self, state: State, latents: torch.Tensor, noises: Sequence[torch.Tensor]) -> State:
        x, skip = state
        x = self.conv0(x, latent_row(latents, 0), noises[0])
        x = self.conv1(x, latent_row(latents, 1), noises[1])
        return x, upsample_rgb(skip, self.skip_kernel, self.fast) + self.to_rgb(x, latent_row(latents, 2))


class StyleGAN2Generator(StagedGenerator):
    family = "stylegan2"
    has_mapping = True

    def __init__(self, config: StyleGAN2Config):
        super().__init__()
        config.validate()
        self.config = config
        self.resolution = config.resolution
        self.n_latent = config.n_latent
        self.style_dim = config.w_dim
        self.z_dim = config.z_dim
        self.mapping_network = MappingNetwork(config.mapping_features, config.mapping_lr)
        self.register_buffer("latent_avg", torch.zeros(config.w_dim))
        self.noises = nn.Module()
        for i in range(config.n_noise):
            r = stylegan2_noise_resolution(i)
            self.noises.register_buffer(f"noise_{i}", torch.zeros(1, 1, r, r))
        self.stages = nn.ModuleList(
            [InitialStage(config)] + [BlockStage(config, k) for k in range(1, config.log2_resolution - 1)]
        )

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return self.mapping_network(z)

    def latent_stats(self) -> LatentStats:
        return latent_stats(self)  # cached on disk per weights fingerprint

    @property
    def average_latent(self) -> torch.Tensor:
        return self.latent_avg

    @property
    def noise_shapes(self) -> list[tuple[int, int]]:
        return [(stylegan2_noise_resolution(i),) * 2 for i in range(self.config.n_noise)]

    def stored_noises(self) -> list[torch.Tensor]:
        return [getattr(self.noises, f"noise_{i}") for i in range(self.config.n_noise)]

    def image_from_state(self, state: State) -> torch.Tensor:
        return state[1]


def random_stylegan2(config: StyleGAN2Config, seed: int = 0) -> StyleGAN2Generator:
    """A StyleGAN2 with every tensor random (nothing left at its zero initial value): the
    stand-in for a checkpoint in tests and in the export and latency benchmarks."""
    gen = StyleGAN2Generator(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in gen.state_dict().items():
            t.copy_(torch.randn(t.shape, generator=g) * (0.1 if name.endswith("bias") else 1.0))
    return gen.eval().requires_grad_(False)
