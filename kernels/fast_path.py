"""The kernels as the StyleGAN2 layers of `ilo.generators.ops`: a `KernelOps` is an
`ops.FastLayers`, given to a module explicitly with `ops.with_fast_layers(module, KernelOps(lib))`
(the layers of the copy it returns call it; the references stay as they were).

KernelOps answers None (run the reference) for anything it does not take: tensors on another
device than the library's, dtypes the build lacks, or weights that require grad (the kernels
give no weight gradients; ILO never needs them).

Convolutions run on TF32 tensor cores exactly when torch's would: `tf32=None` follows
torch.backends.cudnn.allow_tf32 (on by default) on a GPU, and is off on the CPU emulation.
"""

from __future__ import annotations

import weakref

import torch

from ilo.generators import ops as reference
from ilo.kernels import ops as kernel_ops
from ilo.kernels.library import KernelLibrary


class KernelOps:
    def __init__(self, library: KernelLibrary, tf32: bool | None = None):
        self.library, self._tf32 = library, tf32
        # id(conv weight) -> (version key, LayerWeights). Keyed by the weight tensor, not the layer:
        # every graph runs its own copy of the layers (ops.with_fast_layers), all sharing weights.
        # An entry leaves with its tensor (a weak dictionary would compare tensors with ==).
        self._weights: dict[int, tuple] = {}

    @property
    def tf32(self) -> bool:
        if self._tf32 is not None:
            return self._tf32
        return not self.library.emulated and torch.backends.cudnn.allow_tf32

    def _layer_weights(self, layer, conv, spec) -> kernel_ops.LayerWeights:
        """The layer's constants, derived again only when a weight changed (in place, or moved)."""
        key = tuple((t.data_ptr(), t._version) for t in (conv.weight, layer.bias))
        cached = self._weights.get(id(conv.weight))
        if cached is None or cached[0] != key:
            blur = conv.blur_kernel if conv.up else None
            if cached is None:
                weakref.finalize(conv.weight, self._weights.pop, id(conv.weight), None)
            cached = key, kernel_ops.layer_weights(spec, conv.weight * conv.weight_gain, layer.bias, blur)
            self._weights[id(conv.weight)] = cached
        return cached[1]

    def _takes(self, x: torch.Tensor, *modules: torch.nn.Module) -> bool:
        if x.device.type != self.library.device_type or not self.library.supports(x.dtype):
            return False
        return not any(p.requires_grad for m in modules for p in m.parameters())

    def styled_conv(self, layer: reference.StyledConv, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor):
        if not self._takes(x, layer):
            return None
        conv = layer.conv
        spec = kernel_ops.LayerSpec("up" if conv.up else "conv", clamp=layer.conv_clamp, tf32=self.tf32)
        noise_term = (layer.noise_strength * noise).to(x.dtype)
        weights = self._layer_weights(layer, conv, spec)
        return kernel_ops.modulated_layer(self.library, spec, weights, x, conv.affine(w), noise_term)

    def to_rgb(self, layer: reference.ToRGB, x: torch.Tensor, w: torch.Tensor):
        if not self._takes(x, layer):
            return None
        conv = layer.conv
        spec = kernel_ops.LayerSpec("rgb", alpha=1.0, gain=1.0, clamp=layer.conv_clamp, tf32=self.tf32)
        return kernel_ops.modulated_layer(
            self.library, spec, self._layer_weights(layer, conv, spec), x, conv.affine(w), None
        )

    def upsample_rgb(self, skip: torch.Tensor, kernel: torch.Tensor):
        if not self._takes(skip):
            return None
        return kernel_ops.upfirdn2d(self.library, skip, kernel, up=2, pad=(2, 1), gain=4.0)
