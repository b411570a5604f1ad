"""DCGAN state dicts in the PyTorch-tutorial layout (`main.{0,1,3,4,...}`), as shipped by the
`gan-face-generate` package: ConvTranspose/BatchNorm pairs, three Sequential slots per block
(conv, norm, ReLU), the last block a ConvTranspose followed by Tanh."""

from __future__ import annotations

from typing import Mapping

import torch

from ilo.errors import CheckpointError
from ilo.generators.checkpoints.tensors import TensorRow, TensorSource, load_rows, save_rows
from ilo.generators.dcgan import DCGANConfig, DCGANGenerator

_NORM_TENSORS = ("weight", "bias", "running_mean", "running_var")


def is_dcgan_state(obj: object) -> bool:
    return isinstance(obj, Mapping) and "main.0.weight" in obj


def dcgan_rows(config: DCGANConfig) -> list[TensorRow]:
    sizes = (config.z_dim,) + config.channels + (config.image_channels,)
    rows = []
    for k in range(len(sizes) - 1):
        rows.append(TensorRow(f"stages.{k}.conv.weight", f"main.{3 * k}.weight", (sizes[k], sizes[k + 1], 4, 4)))
        if k < len(config.channels):
            rows += [TensorRow(f"stages.{k}.norm.{t}", f"main.{3 * k + 1}.{t}", (sizes[k + 1],)) for t in _NORM_TENSORS]
    return rows


def load_dcgan(state: Mapping[str, torch.Tensor], origin: str) -> DCGANGenerator:
    src = TensorSource(state, origin)
    n_convs = 0
    while src.has(f"main.{3 * n_convs}.weight"):
        n_convs += 1
    if n_convs < 2:
        raise CheckpointError(f"{origin}: a DCGAN needs at least two ConvTranspose blocks, found {n_convs}")
    z_dim = src.get("main.0.weight", 4).shape[0]
    channels = tuple(src.get(f"main.{3 * k}.weight", 4).shape[1] for k in range(n_convs - 1))
    image_channels = src.get(f"main.{3 * (n_convs - 1)}.weight", 4).shape[1]
    if image_channels != 3:
        raise CheckpointError(f"{origin}: only RGB DCGANs are supported (last layer has {image_channels} channels)")
    config = DCGANConfig(z_dim, channels, image_channels)
    gen = DCGANGenerator(config)
    batch_counters = [k for k in gen.state_dict() if k.endswith("num_batches_tracked")]
    load_rows(gen, src, dcgan_rows(config), set_elsewhere=batch_counters)
    return gen.eval()


def to_dcgan_state(gen: DCGANGenerator) -> dict[str, torch.Tensor]:
    return save_rows(gen, dcgan_rows(gen.config))
