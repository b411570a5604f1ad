"""Run every kernel once, forward and VJP, on small shapes against the torch reference.

    python -m ilo.kernels.selfcheck [--library PATH]

Prints the largest relative error per kernel and exits 1 if any is above its tolerance (1e-4;
5e-3 for the TF32 tensor-core convolutions). Small enough to run under compute-sanitizer
(memcheck, racecheck) on a GPU; on the emulated library it runs on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ilo.generators import ops as R
from ilo.kernels import ops as K
from ilo.kernels.fast_path import KernelOps
from ilo.kernels.library import KernelLibraryError, load_library, open_library

TOLERANCE, TF32_TOLERANCE = 1e-4, 5e-3


def _relative(got, want) -> float:
    return max(
        float((a.detach().double() - b.detach().double()).abs().max()) / (float(b.detach().abs().max()) or 1.0)
        for a, b in zip(got, want)
    )


def _randomised(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return module.requires_grad_(False)


def checks(library, device) -> dict[str, float]:
    g = torch.Generator(device=device).manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, device=device, generator=g, requires_grad=True)

    errors = {}
    # (TF32 cases unclamped: a value TF32 rounding moves across the clamp flips its gradient)
    cases = [
        ("modulated conv 3x3, clamped", _randomised(R.StyledConv(20, 70, 8, conv_clamp=0.5), 1), (20, 9), False),
        ("modulated conv 3x3", _randomised(R.StyledConv(20, 70, 8), 1), (20, 9), False),
        ("modulated conv 3x3 (TF32)", _randomised(R.StyledConv(20, 70, 8), 1), (20, 9), True),
        ("modulated up conv + blur", _randomised(R.StyledConv(20, 9, 8, up=True), 2), (20, 5), False),
        ("modulated up conv + blur (TF32)", _randomised(R.StyledConv(20, 9, 8, up=True), 2), (20, 5), True),
        ("to-RGB, clamped", _randomised(R.ToRGB(33, 8, conv_clamp=0.8), 3), (33, 10), False),
        ("to-RGB (TF32)", _randomised(R.ToRGB(33, 8), 3), (33, 10), True),
    ]
    for name, layer, (cin, res), tf32 in cases:
        fast = KernelOps(library, tf32=tf32)
        layer = layer.to(device)
        x, w = rand(2, cin, res, res), rand(2, 8)
        is_rgb = isinstance(layer, R.ToRGB)
        out_res = 2 * res if getattr(getattr(layer, "conv", None), "up", False) else res
        noise = rand(2, 1, out_res, out_res)
        inputs = (x, w) if is_rgb else (x, w, noise)
        results = []
        for impl in (None, fast):
            y = R.with_fast_layers(layer, impl)(*inputs)
            dy = torch.ones_like(y) * torch.linspace(-1, 1, y.numel(), device=device).reshape(y.shape)
            results.append((y, *torch.autograd.grad(y, inputs, dy)))
        errors[name] = _relative(results[1], results[0])
    x = rand(2, 3, 9, 6)
    kernel = R.fir_kernel().to(device)
    for name, args in {"upfirdn2d up 2": (2, 1, (2, 1), 4.0), "upfirdn2d down 2": (1, 2, (1, 1), 1.0)}.items():
        ref, got = R.upfirdn2d(x, kernel, *args), K.upfirdn2d(library, x, kernel, *args)
        errors[name] = _relative(
            (got, *torch.autograd.grad(got, x, torch.ones_like(got))),
            (ref, *torch.autograd.grad(ref, x, torch.ones_like(ref))),
        )
    b = rand(3)
    ref, got = R.bias_act(x, b, clamp=0.5), K.bias_act(library, x, b, clamp=0.5)
    errors["bias_act"] = _relative(
        (got, *torch.autograd.grad(got.sum(), (x, b))), (ref, *torch.autograd.grad(ref.sum(), (x, b)))
    )
    return errors


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="check every kernel against the torch reference")
    p.add_argument("--library", type=Path, help="library file (default: $ILO_KERNELS_LIB, then kernels/lib)")
    args = p.parse_args(argv)
    try:
        library = open_library(args.library) if args.library else load_library()
    except KernelLibraryError as e:
        print(f"ilo.kernels.selfcheck: {e}", file=sys.stderr)
        return 2
    device = torch.device(library.device_type)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    errors = checks(library, device)
    failed = False
    for name, err in errors.items():
        ok = err <= (TF32_TOLERANCE if "TF32" in name else TOLERANCE)
        failed |= not ok
        print(f"{name:35s} max relative error {err:.2e} {'ok' if ok else 'FAIL'}")
    print(f"library: {library.path} ({library.build_info})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
