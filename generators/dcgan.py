"""DCGAN generator as a chain of stages: one transposed-conv block per stage.

Stage 0 maps z [B, 1, z_dim] to 4x4 features; each later stage doubles the resolution; the last
ends in tanh and produces the image. The state between stages is the feature map alone.
BatchNorm always runs in eval mode (running statistics): the generator is a fixed function.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ilo.generators import frozen_ops
from ilo.generators.staged import Stage, StagedGenerator, StageSpec, State, latent_row


@dataclass(frozen=True)
class DCGANConfig:
    z_dim: int
    channels: tuple[int, ...]  # feature channels after each block but the last
    image_channels: int = 3

    @property
    def resolution(self) -> int:
        return 4 * 2 ** len(self.channels)


class DCGANStage(Stage):
    def __init__(self, config: DCGANConfig, k: int):
        super().__init__()
        first, last = k == 0, k == len(config.channels)
        c_in = config.z_dim if first else config.channels[k - 1]
        c_out = config.image_channels if last else config.channels[k]
        res = 4 * 2**k
        if first:
            self.conv = nn.ConvTranspose2d(c_in, c_out, 4, 1, 0, bias=False)
        else:
            self.conv = nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False)
        self.norm = None if last else nn.BatchNorm2d(c_out)
        self.last = last
        state_in = () if first else ((c_in, res // 2, res // 2),)
        self.spec = StageSpec(k, res, 0, 1 if first else 0, 0, 0, state_in, ((c_out, res, res),))

    def forward(self, state: State, latents: torch.Tensor, noises: Sequence[torch.Tensor]) -> State:
        x = latent_row(latents, 0)[:, :, None, None] if self.spec.index == 0 else state[0]
        conv = self.conv
        x = frozen_ops.conv_transpose2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
        if self.last:
            return (torch.tanh(x),)
        return (frozen_ops.leaky_relu(self.norm(x) if self.norm is not None else x),)

    def fold_batchnorm(self) -> "DCGANStage":
        """An equal stage with BatchNorm's running statistics folded into the convolution's
        weights and bias (what the exported graphs hold); this stage is the reference."""
        folded = copy.deepcopy(self)
        if self.norm is None:
            return folded
        norm = self.norm
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # per output channel
        conv = folded.conv
        conv.weight = nn.Parameter(self.conv.weight * scale[None, :, None, None], requires_grad=False)
        conv.bias = nn.Parameter(norm.bias - norm.running_mean * scale, requires_grad=False)
        folded.norm = None
        return folded


class DCGANGenerator(StagedGenerator):
    family = "dcgan"
    has_mapping = False

    def __init__(self, config: DCGANConfig):
        super().__init__()
        self.config = config
        self.resolution = config.resolution
        self.n_latent = 1
        self.style_dim = self.z_dim = config.z_dim
        self.stages = nn.ModuleList(DCGANStage(config, k) for k in range(len(config.channels) + 1))
        self.eval()

    def train(self, mode: bool = True) -> "DCGANGenerator":
        # BatchNorm must use its running statistics whatever the caller does.
        return super().train(False)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def export_stages(self) -> list:
        return [stage.fold_batchnorm() for stage in self.stages]

    def image_from_state(self, state: State) -> torch.Tensor:
        return state[0]
