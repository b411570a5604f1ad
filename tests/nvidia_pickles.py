"""Network pickles laid out the way NVIDIA's stylegan2-ada-pytorch training loop writes them,
built from the documented structure (no NVIDIA code is used or copied).

A snapshot is `pickle.dump({G, D, G_ema, augment_pipe, training_set_kwargs})`. Every network
and layer class there is a "persistent class": it pickles as
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with `meta = {type: 'class',
version: 6, module_src: <the networks.py source>, class_name, state: <the module's __dict__>}`.
The state is a real `torch.nn.Module.__dict__` (hook dicts, `_parameters`, `_buffers`,
`_modules`), the persistence wrapper's `_init_args` / `_init_kwargs` (with `dnnlib.util.EasyDict`
values), and each layer's own attributes, several of them numpy float64 scalars
(`weight_gain = lr_multiplier / np.sqrt(in_features)`, `act_gain = np.sqrt(2)`). Parameters
pickle through torch's rebuild functions, as in any `pickle.dump` of a module.
"""

from __future__ import annotations

import io
import pickle
import types
from dataclasses import dataclass, field

import numpy as np
import torch

from ilo.generators.checkpoints.nvidia import nvidia_rows
from ilo.generators.checkpoints.tensors import save_rows
from ilo.generators.stylegan2 import StyleGAN2Generator

# Stands in for NVIDIA's networks.py, which a snapshot embeds in full and their loader executes.
# A loader that ran it would create MARKER in its working folder; the tests check none does.
MARKER = "module_src_was_executed"
MODULE_SOURCE = f"import pathlib\npathlib.Path({MARKER!r}).touch()  # a loader that executes module_src runs this\n"


class EasyDict(dict):
    """Pickled under NVIDIA's name."""

    nv_global = ("dnnlib.util", "EasyDict")


def _numpy1_scalar():  # pickled by name only: numpy 1 spelled the module numpy.core
    raise AssertionError


def _reconstruct_persistent_obj():  # pickled by name only, as NVIDIA's persistence does
    raise AssertionError


_numpy1_scalar.nv_global = ("numpy.core.multiarray", "scalar")
_reconstruct_persistent_obj.nv_global = ("torch_utils.persistence", "_reconstruct_persistent_obj")


class Persistent(torch.nn.Module):
    """A module that pickles like one of NVIDIA's persistent classes named `class_name`."""

    def __init__(self, class_name: str, init_kwargs: dict | None = None, **attrs):
        super().__init__()
        self._init_args = ()
        self._init_kwargs = EasyDict(init_kwargs or {})
        for name, value in attrs.items():
            setattr(self, name, value)
        self.__dict__["_nv_class"] = class_name

    def state(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_nv_class"}


@dataclass
class SnapshotOptions:
    numpy1_spelling: bool = False  # write `numpy.core.multiarray.scalar` (2020-21 pickles)
    num_fp16_res: int = 0  # the top blocks NVIDIA runs in fp16 (their parameters stay fp32)
    conv_clamp: float | None = None
    resample_filter: tuple = (1, 3, 3, 1)
    use_noise: bool = True
    layer_overrides: dict = field(default_factory=dict)  # extra attributes for every SynthesisLayer


class _SnapshotPickler(pickle._Pickler):  # the Python pickler, so global names can be chosen
    def __init__(self, file, options: SnapshotOptions):
        super().__init__(file, protocol=pickle.DEFAULT_PROTOCOL)
        self.options = options

    def save_global(self, obj, name=None):
        ref = obj.__dict__.get("nv_global") if isinstance(obj, type) else getattr(obj, "nv_global", None)
        if ref is None:
            return super().save_global(obj, name)
        self.save(ref[0])
        self.save(ref[1])
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = lambda self, obj: self.save_global(obj)

    def reducer_override(self, obj):
        if isinstance(obj, Persistent):
            meta = dict(type="class", version=6, module_src=MODULE_SOURCE, class_name=obj._nv_class, state=obj.state())
            return _reconstruct_persistent_obj, (meta,)
        if self.options.numpy1_spelling and isinstance(obj, np.generic):
            return (_numpy1_scalar, *obj.__reduce__()[1:])
        return NotImplemented


def _filter(taps) -> torch.Tensor:
    f = torch.tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def _fc(weight, bias, lr, activation, **extra):
    layer = Persistent(
        "FullyConnectedLayer",
        dict(activation=activation, lr_multiplier=lr, **extra),
        activation=activation,
        in_features=weight.shape[1],
        out_features=weight.shape[0],
        weight_gain=lr / np.sqrt(weight.shape[1]),
        bias_gain=lr,
    )
    layer.weight = torch.nn.Parameter(weight.clone())
    layer.bias = torch.nn.Parameter(bias.clone())
    return layer


def _synthesis_layer(t, name, res, up, o: SnapshotOptions):
    weight = t[f"{name}.weight"]
    layer = Persistent(
        "SynthesisLayer",
        dict(resolution=res, up=up, conv_clamp=o.conv_clamp),
        in_channels=weight.shape[1],
        out_channels=weight.shape[0],
        resolution=res,
        up=up,
        **{
            **dict(
                use_noise=o.use_noise,
                activation="lrelu",
                conv_clamp=o.conv_clamp,
                padding=1,
                act_gain=np.sqrt(2),
                channels_last=False,
            ),
            **o.layer_overrides,
        },
    )
    layer.affine = _fc(t[f"{name}.affine.weight"], t[f"{name}.affine.bias"], 1, "linear", bias_init=1)
    layer.register_buffer("resample_filter", _filter(o.resample_filter))
    if o.use_noise:
        layer.register_buffer("noise_const", t[f"{name}.noise_const"].clone())
        layer.noise_strength = torch.nn.Parameter(t[f"{name}.noise_strength"].clone())
    layer.weight = torch.nn.Parameter(weight.clone())
    layer.bias = torch.nn.Parameter(t[f"{name}.bias"].clone())
    return layer


def _torgb(t, name, o: SnapshotOptions):
    weight = t[f"{name}.weight"]
    layer = Persistent(
        "ToRGBLayer",
        dict(conv_clamp=o.conv_clamp),
        conv_clamp=o.conv_clamp,
        channels_last=False,
        weight_gain=1 / np.sqrt(weight.shape[1]),
    )
    layer.affine = _fc(t[f"{name}.affine.weight"], t[f"{name}.affine.bias"], 1, "linear", bias_init=1)
    layer.weight = torch.nn.Parameter(weight.clone())
    layer.bias = torch.nn.Parameter(t[f"{name}.bias"].clone())
    return layer


def generator_module(gen: StyleGAN2Generator, o: SnapshotOptions) -> Persistent:
    """NVIDIA's `Generator` module tree holding `gen`'s weights."""
    cfg = gen.config
    t = save_rows(gen, nvidia_rows(cfg))
    n_fc = len(cfg.mapping_features) - 1
    mapping = Persistent(
        "MappingNetwork",
        dict(num_layers=n_fc),
        z_dim=cfg.mapping_features[0],
        c_dim=0,
        w_dim=cfg.w_dim,
        num_ws=cfg.n_latent,
        num_layers=n_fc,
        w_avg_beta=0.995,
    )
    for i in range(n_fc):
        setattr(mapping, f"fc{i}", _fc(t[f"mapping.fc{i}.weight"], t[f"mapping.fc{i}.bias"], cfg.mapping_lr, "lrelu"))
    mapping.register_buffer("w_avg", t["mapping.w_avg"].clone())
    resolutions = [4 * 2**k for k in range(len(cfg.channels))]
    fp16_from = resolutions[max(len(resolutions) - o.num_fp16_res, 0)] if o.num_fp16_res else None
    synthesis = Persistent(
        "SynthesisNetwork",
        dict(channel_base=32768, channel_max=512, num_fp16_res=o.num_fp16_res, conv_clamp=o.conv_clamp),
        w_dim=cfg.w_dim,
        img_resolution=cfg.resolution,
        img_resolution_log2=cfg.log2_resolution,
        img_channels=3,
        block_resolutions=resolutions,
        num_fp16_res=o.num_fp16_res,
    )
    for k, r in enumerate(resolutions):
        block = Persistent(
            "SynthesisBlock",
            dict(resolution=r, use_fp16=bool(fp16_from and r >= fp16_from)),
            in_channels=0 if k == 0 else cfg.channels[k - 1],
            w_dim=cfg.w_dim,
            resolution=r,
            img_channels=3,
            is_last=r == cfg.resolution,
            architecture="skip",
            use_fp16=bool(fp16_from and r >= fp16_from),
            channels_last=False,
            fused_modconv_default=True,
            num_conv=0,
            num_torgb=0,
        )
        block.register_buffer("resample_filter", _filter(o.resample_filter))
        if k == 0:
            block.const = torch.nn.Parameter(t["synthesis.b4.const"].clone())
        else:
            block.conv0 = _synthesis_layer(t, f"synthesis.b{r}.conv0", r, 2, o)
        block.conv1 = _synthesis_layer(t, f"synthesis.b{r}.conv1", r, 1, o)
        block.torgb = _torgb(t, f"synthesis.b{r}.torgb", o)
        block.num_conv, block.num_torgb = (1 if k == 0 else 2), 1
        setattr(synthesis, f"b{r}", block)
    g = Persistent(
        "Generator",
        dict(
            z_dim=cfg.mapping_features[0],
            c_dim=0,
            w_dim=cfg.w_dim,
            img_resolution=cfg.resolution,
            img_channels=3,
            mapping_kwargs=EasyDict(num_layers=n_fc),
            synthesis_kwargs=EasyDict(
                channel_base=32768, channel_max=512, num_fp16_res=o.num_fp16_res, conv_clamp=o.conv_clamp
            ),
        ),
        z_dim=cfg.mapping_features[0],
        c_dim=0,
        w_dim=cfg.w_dim,
        img_resolution=cfg.resolution,
        img_channels=3,
        num_ws=cfg.n_latent,
    )
    g.synthesis, g.mapping = synthesis, mapping
    return g.eval().requires_grad_(False)


def _discriminator(seed: int) -> Persistent:
    g = torch.Generator().manual_seed(seed)
    d = Persistent(
        "Discriminator",
        dict(c_dim=0, img_resolution=32, img_channels=3),
        c_dim=0,
        img_resolution=32,
        img_resolution_log2=5,
        img_channels=3,
        block_resolutions=[32, 16, 8],
    )
    for r in (32, 16, 8):
        block = Persistent(
            "DiscriminatorBlock", dict(resolution=r), resolution=r, architecture="resnet", use_fp16=False
        )
        block.register_buffer("resample_filter", _filter((1, 3, 3, 1)))
        conv = Persistent(
            "Conv2dLayer",
            {},
            activation="lrelu",
            up=1,
            down=2,
            conv_clamp=None,
            padding=1,
            weight_gain=1 / np.sqrt(8 * 9),
            act_gain=np.sqrt(2),
        )
        conv.weight = torch.nn.Parameter(torch.randn(8, 8, 3, 3, generator=g))
        conv.bias = torch.nn.Parameter(torch.zeros(8))
        block.conv0 = conv
        setattr(d, f"b{r}", block)
    epilogue = Persistent("DiscriminatorEpilogue", {}, cmap_dim=0, resolution=4, architecture="resnet")
    epilogue.mbstd = Persistent("MinibatchStdLayer", {}, group_size=4, num_channels=1)
    d.b4 = epilogue
    return d.eval().requires_grad_(False)


def _augment_pipe() -> Persistent:
    pipe = Persistent(
        "AugmentPipe",
        dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
        xflip=1.0,
        rotate90=1.0,
        xint=1.0,
        xint_max=0.125,
        scale=1.0,
        rotate=1.0,
        aniso=1.0,
        xfrac=1.0,
        scale_std=0.2,
        rotate_max=1.0,
        aniso_std=0.2,
        xfrac_std=0.125,
    )
    pipe.register_buffer("p", torch.tensor(0.3))
    pipe.register_buffer("Hz_geom", torch.randn(12, generator=torch.Generator().manual_seed(5)))
    return pipe.eval()


def snapshot_bytes(
    g_ema: StyleGAN2Generator,
    g: StyleGAN2Generator | None = None,
    options: SnapshotOptions | None = None,
    training_resolution: int = 32,
) -> bytes:
    """A training snapshot as NVIDIA's training loop pickles it; `g` is the training generator
    (different weights from `g_ema`, as after any training step)."""
    o = options or SnapshotOptions()
    snapshot = dict(
        training_set_kwargs=dict(
            class_name="training.dataset.ImageFolderDataset",
            path="~/datasets/faces.zip",
            use_labels=False,
            max_size=70000,
            xflip=True,
            resolution=training_resolution,
        )
    )
    snapshot["G"] = generator_module(g if g is not None else g_ema, o)
    snapshot["D"] = _discriminator(seed=1)
    snapshot["G_ema"] = generator_module(g_ema, o)
    snapshot["augment_pipe"] = _augment_pipe()
    buffer = io.BytesIO()
    _SnapshotPickler(buffer, o).dump(snapshot)
    return buffer.getvalue()


def snapshot_globals(data: bytes) -> set[str]:
    """Every `module.name` global the pickle asks for, as ilo's restricted reader sees them."""
    from ilo.generators.checkpoints.safe_pickle import _RestrictedUnpickler

    class Recording(_RestrictedUnpickler):
        names: set = set()

        def find_class(self, module, name):
            self.names.add(f"{module}.{name}")
            return super().find_class(module, name)

    reader = Recording(io.BytesIO(data))
    reader.names = set()
    reader.load()
    return reader.names
