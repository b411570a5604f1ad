"""The kernels as the StyleGAN2 layers of `ilo.export.ops`, inside `ops.fast_layers(...)`.

KernelOps answers None (run the reference) for anything it does not take: tensors on another
device than the library's, dtypes the build lacks, or weights that require grad (the kernels
give no weight gradients; ILO never needs them).
"""

from __future__ import annotations

import torch

from ilo.export import ops as reference
from ilo.kernels import ops as kernel_ops
from ilo.kernels.library import KernelLibrary


class KernelOps:
    def __init__(self, library: KernelLibrary):
        self.library = library

    def _takes(self, x: torch.Tensor, *modules: torch.nn.Module) -> bool:
        if x.device.type != self.library.device_type or not self.library.supports(x.dtype):
            return False
        return not any(p.requires_grad for m in modules for p in m.parameters())

    def styled_conv(self, layer: reference.StyledConv, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor):
        if not self._takes(x, layer):
            return None
        conv = layer.conv
        spec = kernel_ops.LayerSpec("up" if conv.up else "conv", clamp=layer.conv_clamp)
        blur = kernel_ops._taps(conv.blur_kernel, 4.0, x) if conv.up else None
        noise_term = (layer.noise_strength * noise).to(x.dtype)
        return kernel_ops.modulated_layer(self.library, spec, x, conv.affine(w), noise_term,
                                          conv.weight * conv.weight_gain, layer.bias, blur)  # fmt: skip

    def to_rgb(self, layer: reference.ToRGB, x: torch.Tensor, w: torch.Tensor):
        if not self._takes(x, layer):
            return None
        conv = layer.conv
        spec = kernel_ops.LayerSpec("rgb", alpha=1.0, gain=1.0, clamp=layer.conv_clamp)
        return kernel_ops.modulated_layer(self.library, spec, x, conv.affine(w), None,
                                          conv.weight * conv.weight_gain, layer.bias)  # fmt: skip

    def upsample_rgb(self, skip: torch.Tensor, kernel: torch.Tensor):
        if not self._takes(skip):
            return None
        return kernel_ops.upfirdn2d(self.library, skip, kernel, up=2, pad=(2, 1), gain=4.0)
