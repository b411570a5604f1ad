"""rosinality/stylegan2-pytorch checkpoints: `{"g_ema": state_dict, "latent_avg": [w_dim]}`.

Channel counts, style dimension and mapping depth come from tensor shapes. Training
checkpoints carry no `latent_avg`; it is then estimated from the mapping network (seeded).
An optional `ilo_meta` dict records what the format cannot say (conv_clamp), so converting an
NVIDIA pickle to this format and back is lossless; rosinality's own code ignores the key.
"""

from __future__ import annotations

import torch

from ilo.errors import CheckpointError
from ilo.generators.checkpoints.tensors import TensorRow, TensorSource, load_rows, save_rows
from ilo.generators.ops import fir_kernel
from ilo.generators.stylegan2 import StyleGAN2Config, StyleGAN2Generator, stylegan2_noise_resolution

# Rosinality stores its FIR kernels (scaled by the upsampling gain 4) in the state dict.
_FIR_KEYS = ("convs.{}.conv.blur.kernel", "to_rgbs.{}.upsample.kernel")


def is_rosinality(obj: object) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("g_ema"), dict)


def _styled_conv_rows(ours: str, theirs: str, c_in: int, c_out: int, w_dim: int) -> list[TensorRow]:
    return [
        TensorRow(f"{ours}.conv.weight", f"{theirs}.conv.weight", (1, c_out, c_in, 3, 3)),
        TensorRow(f"{ours}.conv.affine.weight", f"{theirs}.conv.modulation.weight", (c_in, w_dim)),
        TensorRow(f"{ours}.conv.affine.bias", f"{theirs}.conv.modulation.bias", (c_in,)),
        TensorRow(f"{ours}.noise_strength", f"{theirs}.noise.weight", (1,)),
        TensorRow(f"{ours}.bias", f"{theirs}.activate.bias", (c_out,)),
    ]


def _to_rgb_rows(ours: str, theirs: str, c_in: int, w_dim: int) -> list[TensorRow]:
    return [
        TensorRow(f"{ours}.conv.weight", f"{theirs}.conv.weight", (1, 3, c_in, 1, 1)),
        TensorRow(f"{ours}.conv.affine.weight", f"{theirs}.conv.modulation.weight", (c_in, w_dim)),
        TensorRow(f"{ours}.conv.affine.bias", f"{theirs}.conv.modulation.bias", (c_in,)),
        TensorRow(f"{ours}.bias", f"{theirs}.bias", (1, 3, 1, 1)),
    ]


def rosinality_rows(config: StyleGAN2Config) -> list[TensorRow]:
    """Every tensor of `g_ema` but the FIR kernels, against our names (latent_avg is separate)."""
    f, ch, w = config.mapping_features, config.channels, config.w_dim
    rows = []
    for i in range(len(f) - 1):
        rows += [
            TensorRow(f"mapping_network.layers.{i}.weight", f"style.{i + 1}.weight", (f[i + 1], f[i])),
            TensorRow(f"mapping_network.layers.{i}.bias", f"style.{i + 1}.bias", (f[i + 1],)),
        ]
    rows.append(TensorRow("stages.0.const", "input.input", (1, ch[0], 4, 4)))
    rows += _styled_conv_rows("stages.0.conv", "conv1", ch[0], ch[0], w)
    rows += _to_rgb_rows("stages.0.to_rgb", "to_rgb1", ch[0], w)
    for k in range(1, len(ch)):
        rows += _styled_conv_rows(f"stages.{k}.conv0", f"convs.{2 * k - 2}", ch[k - 1], ch[k], w)
        rows += _styled_conv_rows(f"stages.{k}.conv1", f"convs.{2 * k - 1}", ch[k], ch[k], w)
        rows += _to_rgb_rows(f"stages.{k}.to_rgb", f"to_rgbs.{k - 1}", ch[k], w)
    for i in range(config.n_noise):
        r = stylegan2_noise_resolution(i)
        rows.append(TensorRow(f"noises.noise_{i}", f"noises.noise_{i}", (1, 1, r, r)))
    return rows


def infer_config(src: TensorSource, meta: dict) -> StyleGAN2Config:
    n_mlp = src.count("style.{}.weight", start=1)
    if n_mlp == 0:
        raise CheckpointError(
            f"{src.origin}: no mapping network ('style.1.weight'): not a rosinality StyleGAN2 generator"
        )
    features = (src.get("style.1.weight", 2).shape[1],)
    features += tuple(src.get(f"style.{i}.weight", 2).shape[0] for i in range(1, n_mlp + 1))
    n_blocks = src.count("to_rgbs.{}.conv.weight")
    channels = (src.get("input.input", 4).shape[1],)
    channels += tuple(src.get(f"convs.{2 * i}.conv.weight", 5).shape[1] for i in range(n_blocks))
    resolution = 2 ** (n_blocks + 2)
    if not 8 <= resolution <= 1024:
        raise CheckpointError(f"{src.origin}: {n_blocks} upsampling blocks give {resolution}px; supported: 8..1024")
    return StyleGAN2Config(
        resolution,
        features,
        channels,
        conv_clamp=meta.get("conv_clamp"),
        mapping_lr=float(meta.get("mapping_lr", 0.01)),
    )


def _check_fir_kernels(src: TensorSource, n_blocks: int) -> None:
    expected = fir_kernel() * 4
    for pattern in _FIR_KEYS:
        for i in range(n_blocks):
            key = pattern.format(2 * i if "convs" in pattern else i)
            if src.has(key):
                k = src.get(key)
                if k.shape != expected.shape or not torch.allclose(k.float(), expected, atol=1e-6):
                    raise CheckpointError(
                        f"{src.origin}: '{key}' is not the standard [1,3,3,1] FIR kernel; unsupported"
                    )


def load_rosinality(ckpt: dict, origin: str, latent_avg_fallback) -> StyleGAN2Generator:
    """Build a generator from a loaded rosinality checkpoint dict."""
    meta = ckpt.get("ilo_meta") or {}
    src = TensorSource(ckpt["g_ema"], origin)
    config = infer_config(src, meta)
    _check_fir_kernels(src, len(config.channels) - 1)
    gen = StyleGAN2Generator(config)
    load_rows(gen, src, rosinality_rows(config), set_elsewhere=["latent_avg"])
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is None:
        latent_avg = latent_avg_fallback(gen)
    elif not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != config.w_dim:
        raise CheckpointError(f"{origin}: 'latent_avg' must hold {config.w_dim} values")
    gen.latent_avg.copy_(latent_avg.detach().reshape(-1).float())
    return gen.eval()


def to_rosinality(gen: StyleGAN2Generator) -> dict:
    """The checkpoint dict rosinality's code loads, plus `ilo_meta` where needed."""
    config = gen.config
    g_ema = save_rows(gen, rosinality_rows(config))
    for i in range(len(config.channels) - 1):
        g_ema[f"convs.{2 * i}.conv.blur.kernel"] = fir_kernel() * 4
        g_ema[f"to_rgbs.{i}.upsample.kernel"] = fir_kernel() * 4
    ckpt = {"g_ema": g_ema, "latent_avg": gen.latent_avg.detach().clone()}
    meta = {}
    if config.conv_clamp is not None:
        meta["conv_clamp"] = config.conv_clamp
    if config.mapping_lr != 0.01:
        meta["mapping_lr"] = config.mapping_lr
    if meta:
        ckpt["ilo_meta"] = meta
    return ckpt
