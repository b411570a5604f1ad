"""NVIDIA stylegan2-ada-pytorch network pickles (`G_ema`), read and written without their code.

Reading goes through `safe_pickle` (nothing in the file is executed). Weights are stored
without the equalised-lr scaling, exactly as our layers store them, so the mapping is a rename
plus reshapes. Layers that NVIDIA runs in fp16 (`num_fp16_res`) are run in fp32 here, with the
same `conv_clamp`. Unconditional, skip-architecture StyleGAN2 generators are supported;
conditional ones, other architectures and StyleGAN3 are refused by name.

Written pickles hold the same structure (class names, `_parameters`, `_buffers`, `_modules`,
`init_kwargs`) but not NVIDIA's `networks.py` source, which their own loader executes and which
this project cannot ship; they load in ilo and in any loader that rebuilds from the state.
"""

from __future__ import annotations

import collections
import math

import numpy as np
import torch

from ilo.errors import CheckpointError
from ilo.generators.checkpoints.safe_pickle import EasyDict, PersistentRecord, dump_pickle
from ilo.generators.checkpoints.tensors import TensorRow, TensorSource, load_rows, save_rows
from ilo.generators.ops import fir_kernel
from ilo.generators.stylegan2 import MAPPING_LR_MULTIPLIER, StyleGAN2Config, StyleGAN2Generator

_WRITTEN_SOURCE = "# Written by ilo-engine: structure and weights only; NVIDIA's networks.py source is not included.\n"


def is_nvidia(obj: object) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("G_ema"), PersistentRecord)


def _layer_rows(ours: str, theirs: str, c_in: int, c_out: int, w_dim: int, res: int, noise: int) -> list[TensorRow]:
    return [
        TensorRow(f"{ours}.conv.weight", f"{theirs}.weight", (c_out, c_in, 3, 3)),
        TensorRow(f"{ours}.conv.affine.weight", f"{theirs}.affine.weight", (c_in, w_dim)),
        TensorRow(f"{ours}.conv.affine.bias", f"{theirs}.affine.bias", (c_in,)),
        TensorRow(f"{ours}.noise_strength", f"{theirs}.noise_strength", ()),
        TensorRow(f"{ours}.bias", f"{theirs}.bias", (c_out,)),
        TensorRow(f"noises.noise_{noise}", f"{theirs}.noise_const", (res, res)),
    ]


def _torgb_rows(ours: str, theirs: str, c_in: int, w_dim: int) -> list[TensorRow]:
    return [
        TensorRow(f"{ours}.conv.weight", f"{theirs}.weight", (3, c_in, 1, 1)),
        TensorRow(f"{ours}.conv.affine.weight", f"{theirs}.affine.weight", (c_in, w_dim)),
        TensorRow(f"{ours}.conv.affine.bias", f"{theirs}.affine.bias", (c_in,)),
        TensorRow(f"{ours}.bias", f"{theirs}.bias", (3,)),
    ]


def nvidia_rows(config: StyleGAN2Config) -> list[TensorRow]:
    """Every tensor of `G_ema` but the FIR filters, against our names."""
    f, ch, w = config.mapping_features, config.channels, config.w_dim
    rows = []
    for i in range(len(f) - 1):
        rows += [
            TensorRow(f"mapping_network.layers.{i}.weight", f"mapping.fc{i}.weight", (f[i + 1], f[i])),
            TensorRow(f"mapping_network.layers.{i}.bias", f"mapping.fc{i}.bias", (f[i + 1],)),
        ]
    rows.append(TensorRow("latent_avg", "mapping.w_avg", (w,)))
    rows.append(TensorRow("stages.0.const", "synthesis.b4.const", (ch[0], 4, 4)))
    rows += _layer_rows("stages.0.conv", "synthesis.b4.conv1", ch[0], ch[0], w, 4, 0)
    rows += _torgb_rows("stages.0.to_rgb", "synthesis.b4.torgb", ch[0], w)
    for k in range(1, len(ch)):
        r = 4 * 2**k
        rows += _layer_rows(f"stages.{k}.conv0", f"synthesis.b{r}.conv0", ch[k - 1], ch[k], w, r, 2 * k - 1)
        rows += _layer_rows(f"stages.{k}.conv1", f"synthesis.b{r}.conv1", ch[k], ch[k], w, r, 2 * k)
        rows += _torgb_rows(f"stages.{k}.to_rgb", f"synthesis.b{r}.torgb", ch[k], w)
    return rows


def _refuse_unsupported(g: PersistentRecord, origin: str) -> tuple[PersistentRecord, PersistentRecord]:
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(f"{origin}: G_ema has no mapping/synthesis networks; not a StyleGAN2 generator")
    if int(g.attr("c_dim", 0) or 0) > 0:
        raise CheckpointError(f"{origin}: conditional generators (c_dim > 0) are not supported")
    if int(g.attr("img_channels", 3)) != 3:
        raise CheckpointError(f"{origin}: only RGB generators are supported (img_channels = {g.attr('img_channels')})")
    if synthesis.child("b4") is None:
        raise CheckpointError(f"{origin}: no 4x4 synthesis block; StyleGAN3 and other generators are not supported")
    return mapping, synthesis


# Every setting of NVIDIA's layers that changes what a generator computes, and what this loader
# does with it. A stored value other than the one named is refused by name; settings that only
# change how a layer runs (channels_last, fused_modconv_default, use_fp16: fp16 layers run in
# fp32 here), or only training (w_avg_beta, bias_init, the discriminator), need no check.
_FIXED_SETTINGS = {
    # class: {attribute: (the value this loader computes, a description for the error)}
    "SynthesisBlock": {"architecture": ("skip", "the block architecture")},
    "SynthesisLayer": {"activation": ("lrelu", "the activation"), "act_gain": (2**0.5, "the activation gain")},
}
_MAPPING_FC = {"activation": ("lrelu", "the mapping activation")}
_AFFINE_FC = {
    "activation": ("linear", "the style affine's activation"),
    "bias_gain": (1.0, "the style affine's learning-rate multiplier"),
}
_FIR = fir_kernel()  # [1, 3, 3, 1], the filter of every released model


def _same(a, b) -> bool:
    if isinstance(b, float) and isinstance(a, (int, float, np.floating, np.integer)):
        return abs(float(a) - b) <= 1e-6 * max(1.0, abs(b))
    return a == b


def _check_fixed(record: PersistentRecord, where: str, fixed: dict, origin: str) -> None:
    for name, (expected, what) in fixed.items():
        value = record.attr(name, expected)
        if not _same(value, expected):
            raise CheckpointError(f"{origin}: {where}.{name} = {value!r} ({what}); ilo supports only {expected!r}")


def _positive_number(value, where: str, origin: str) -> float:
    """A stored gain, clamp or rate: a finite positive real number, or the file is refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not (math.isfinite(float(value)) and float(value) > 0)
    ):
        raise CheckpointError(f"{origin}: {where} = {value!r} is not a finite positive number")
    return float(value)


def _check_filter(record: PersistentRecord, where: str, origin: str) -> None:
    stored = (record.state.get("_buffers") or {}).get("resample_filter")
    if stored is None:
        return
    if not isinstance(stored, torch.Tensor):
        raise CheckpointError(f"{origin}: {where}.resample_filter is a {type(stored).__name__}, not a tensor")
    stored = stored.detach().float()
    if stored.shape != _FIR.shape or not torch.allclose(stored, _FIR, atol=1e-6):
        taps = stored.sum(0).tolist() if stored.ndim == 2 else stored.tolist()
        raise CheckpointError(
            f"{origin}: {where}.resample_filter is {[round(t, 4) for t in taps]} (normalised), not [1, 3, 3, 1]; "
            "ilo's layers implement only the filter every released StyleGAN2 uses"
        )


def _audit_synthesis(synthesis: PersistentRecord, origin: str) -> tuple[float | None, set[str]]:
    """Check every block and layer; returns the conv clamp they share and the layers that were
    built without noise (`use_noise=False`), whose noise strength is then zero."""
    clamps, quiet = set(), set()
    for block_name, block in (synthesis.state.get("_modules") or {}).items():
        where = f"synthesis.{block_name}"
        _check_fixed(block, where, _FIXED_SETTINGS["SynthesisBlock"], origin)
        _check_filter(block, where, origin)
        for name, layer in (block.state.get("_modules") or {}).items():
            if not isinstance(layer, PersistentRecord):
                continue
            at = f"{where}.{name}"
            if layer.class_name in _FIXED_SETTINGS:
                _check_fixed(layer, at, _FIXED_SETTINGS[layer.class_name], origin)
            _check_filter(layer, at, origin)
            clamp = layer.attr("conv_clamp")
            clamps.add(None if clamp is None else _positive_number(clamp, f"{at}.conv_clamp", origin))
            if layer.class_name == "SynthesisLayer" and not layer.attr("use_noise", True):
                quiet.add(at)
            affine = layer.child("affine")
            if affine is not None:
                _check_fixed(affine, f"{at}.affine", _AFFINE_FC, origin)
    if len(clamps) > 1:
        raise CheckpointError(
            f"{origin}: layers use different conv_clamp values {sorted(clamps, key=str)}; ilo applies one to all"
        )
    return (clamps.pop() if clamps else None), quiet


def _mapping_lr(mapping: PersistentRecord, n_fc: int, origin: str) -> float:
    """The mapping's learning-rate multiplier: NVIDIA's layers keep it as `bias_gain` (and in
    `weight_gain = lr / sqrt(fan_in)`); ilo's writer also stores `lr_multiplier`."""
    if mapping.child("embed") is not None:
        raise CheckpointError(
            f"{origin}: the mapping network has a label embedding (a conditional generator); not supported"
        )
    rates = set()
    for i in range(n_fc):
        fc = mapping.child(f"fc{i}")
        if fc is None:
            continue
        _check_fixed(fc, f"mapping.fc{i}", _MAPPING_FC, origin)
        rate = fc.attr("bias_gain", fc.attr("lr_multiplier", MAPPING_LR_MULTIPLIER))
        rates.add(_positive_number(rate, f"mapping.fc{i}.bias_gain", origin))
    if len(rates) > 1:
        raise CheckpointError(
            f"{origin}: mapping layers use different learning-rate multipliers {sorted(rates)}; ilo uses one"
        )
    return rates.pop() if rates else MAPPING_LR_MULTIPLIER


def _without_noise(tensors: dict, quiet: set[str], resolutions: dict[str, int]) -> dict:
    """A layer built with `use_noise=False` adds no noise: the same as strength zero."""
    tensors = dict(tensors)
    for layer in quiet:
        res = resolutions[layer.split(".")[1]]
        tensors.setdefault(f"{layer}.noise_strength", torch.zeros(()))
        tensors.setdefault(f"{layer}.noise_const", torch.zeros(res, res))
    return tensors


def load_nvidia(obj: dict, origin: str) -> StyleGAN2Generator:
    """Build a generator from an unpickled NVIDIA network pickle (from `safe_load_pickle`)."""
    g = obj["G_ema"]
    mapping, synthesis = _refuse_unsupported(g, origin)
    conv_clamp, quiet = _audit_synthesis(synthesis, origin)
    blocks = {name: int(name[1:]) for name in synthesis.state["_modules"]}
    src = TensorSource(_without_noise(g.named_tensors(), quiet, blocks), origin)
    n_fc = src.count("mapping.fc{}.weight")
    if n_fc == 0:
        raise CheckpointError(f"{origin}: missing tensor 'mapping.fc0.weight'")
    features = (src.get("mapping.fc0.weight", 2).shape[1],)
    features += tuple(src.get(f"mapping.fc{i}.weight", 2).shape[0] for i in range(n_fc))
    resolutions = sorted(blocks.values())
    channels = (src.get("synthesis.b4.const", 3).shape[0],)
    channels += tuple(src.get(f"synthesis.b{r}.conv0.weight", 4).shape[0] for r in resolutions[1:])
    resolution = resolutions[-1]
    if resolutions != [2**i for i in range(2, len(resolutions) + 2)] or not 8 <= resolution <= 1024:
        raise CheckpointError(f"{origin}: unsupported block resolutions {resolutions}")
    config = StyleGAN2Config(
        resolution, features, channels, conv_clamp=conv_clamp, mapping_lr=_mapping_lr(mapping, n_fc, origin)
    )
    gen = StyleGAN2Generator(config)
    load_rows(gen, src, nvidia_rows(config))
    return gen.eval()


# --- writing ----------------------------------------------------------------------------------


def _record(class_name: str, attrs: dict) -> PersistentRecord:
    state = {
        "training": False,
        "_parameters": collections.OrderedDict(),
        "_buffers": collections.OrderedDict(),
        "_non_persistent_buffers_set": set(),
        "_modules": collections.OrderedDict(),
        **attrs,
    }
    return PersistentRecord(class_name, state, _WRITTEN_SOURCE)


def _fc(in_f: int, out_f: int, lr: float, activation: str) -> PersistentRecord:
    return _record(
        "FullyConnectedLayer",
        {
            "in_features": in_f,
            "out_features": out_f,
            "activation": activation,
            "lr_multiplier": lr,
            "weight_gain": lr / in_f**0.5,
            "bias_gain": lr,
        },
    )


def _mapping_record(config: StyleGAN2Config) -> PersistentRecord:
    f = config.mapping_features
    mapping = _record(
        "MappingNetwork",
        {
            "z_dim": f[0],
            "c_dim": 0,
            "w_dim": config.w_dim,
            "num_ws": config.n_latent,
            "num_layers": len(f) - 1,
            "w_avg_beta": 0.995,
        },
    )
    for i in range(len(f) - 1):
        mapping.state["_modules"][f"fc{i}"] = _fc(f[i], f[i + 1], config.mapping_lr, "lrelu")
    return mapping


def _synthesis_layer(config: StyleGAN2Config, name: str, c_in: int, c_out: int, r: int) -> PersistentRecord:
    """`conv0` (the upsampling layer, from the previous block's channels) or `conv1`."""
    layer = _record(
        "SynthesisLayer",
        {
            "in_channels": c_in,
            "out_channels": c_out,
            "w_dim": config.w_dim,
            "resolution": r,
            "up": 2 if name == "conv0" else 1,
            "use_noise": True,
            "activation": "lrelu",
            "conv_clamp": config.conv_clamp,
            "act_gain": 2**0.5,
            "padding": 1,
        },
    )
    layer.state["_buffers"]["resample_filter"] = fir_kernel()
    layer.state["_modules"]["affine"] = _fc(config.w_dim, c_in, 1.0, "linear")
    return layer


def _synthesis_block(config: StyleGAN2Config, k: int) -> PersistentRecord:
    """Block `k` (resolution 4·2^k): its conv layers and its toRGB layer."""
    ch, w, r = config.channels, config.w_dim, 4 * 2**k
    c_in = 0 if k == 0 else ch[k - 1]
    block = _record(
        "SynthesisBlock",
        {
            "in_channels": c_in,
            "w_dim": w,
            "resolution": r,
            "img_channels": 3,
            "is_last": r == config.resolution,
            "architecture": "skip",
            "use_fp16": False,
            "channels_last": False,
            "num_conv": 1 if k == 0 else 2,
            "num_torgb": 1,
        },
    )
    block.state["_buffers"]["resample_filter"] = fir_kernel()
    if k > 0:
        block.state["_modules"]["conv0"] = _synthesis_layer(config, "conv0", c_in, ch[k], r)
    block.state["_modules"]["conv1"] = _synthesis_layer(config, "conv1", ch[k], ch[k], r)
    torgb = _record("ToRGBLayer", {"conv_clamp": config.conv_clamp, "weight_gain": 1 / ch[k] ** 0.5})
    torgb.state["_modules"]["affine"] = _fc(w, ch[k], 1.0, "linear")
    block.state["_modules"]["torgb"] = torgb
    return block


def _synthesis_record(config: StyleGAN2Config) -> PersistentRecord:
    resolutions = [4 * 2**k for k in range(len(config.channels))]
    synthesis = _record(
        "SynthesisNetwork",
        {
            "w_dim": config.w_dim,
            "img_resolution": config.resolution,
            "img_resolution_log2": config.log2_resolution,
            "img_channels": 3,
            "block_resolutions": resolutions,
            "num_ws": config.n_latent,
        },
    )
    for k, r in enumerate(resolutions):
        synthesis.state["_modules"][f"b{r}"] = _synthesis_block(config, k)
    return synthesis


def _skeleton(config: StyleGAN2Config) -> PersistentRecord:
    """The module tree of an NVIDIA Generator for `config`, without tensors."""
    f, ch, w = config.mapping_features, config.channels, config.w_dim
    kwargs = EasyDict(
        z_dim=f[0],
        c_dim=0,
        w_dim=w,
        img_resolution=config.resolution,
        img_channels=3,
        mapping_kwargs=EasyDict(num_layers=len(f) - 1),
        synthesis_kwargs=EasyDict(channel_max=max(ch), conv_clamp=config.conv_clamp, num_fp16_res=0),
    )
    g = _record(
        "Generator",
        {
            "z_dim": f[0],
            "c_dim": 0,
            "w_dim": w,
            "img_resolution": config.resolution,
            "img_channels": 3,
            "num_ws": config.n_latent,
            "init_args": (),
            "init_kwargs": kwargs,
        },
    )
    g.state["_modules"]["synthesis"] = _synthesis_record(config)
    g.state["_modules"]["mapping"] = _mapping_record(config)
    return g


def _place(root: PersistentRecord, dotted: str, value: torch.Tensor) -> None:
    *path, leaf = dotted.split(".")
    node = root
    for name in path:
        node = node.child(name)
    buffers = ("w_avg", "noise_const", "resample_filter")
    group = "_buffers" if leaf in buffers else "_parameters"
    node.state[group][leaf] = value if group == "_buffers" else torch.nn.Parameter(value, requires_grad=False)


def to_nvidia_pickle(gen: StyleGAN2Generator) -> bytes:
    """Pickle bytes in NVIDIA's network-pickle layout, holding `G_ema` only."""
    root = _skeleton(gen.config)
    for name, tensor in save_rows(gen, nvidia_rows(gen.config)).items():
        _place(root, name, tensor)
    return dump_pickle({"G_ema": root, "training_set_kwargs": None})
