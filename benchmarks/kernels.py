"""The CUDA kernels against the best torch formulations of a StyleGAN2 layer.

For every config-f layer shape, at one batch size: forward, and forward + VJP (w.r.t. the
input, the latent and the noise map), of
  - torch grouped:  per-sample weights, one grouped conv (StyleGAN2's fused_modconv form),
  - torch scaled:   scale -> conv -> scale (ilo.generators.ops, the engine's reference),
  - kernels:        the fused kernels (ilo.kernels),
each with TF32 off and on; then whole synthesis blocks (up conv, conv, to-RGB and skip
upsampling), forward + VJP, where the target is the best kernels >= 1.5x the best torch form
at batch 8 for resolutions >= 128. Reported with the card, its measured fp32 and TF32 matmul
peaks and the fraction of them each kernel reaches. Timings are medians of CUDA-event-timed repeats, all
formulations interleaved in one process; no timing is ever asserted in a test.

    cmake -S . -B build && cmake --build build -j         # the library, into kernels/lib
    python benchmarks/kernels.py                          # batch 8, config-f up to 1024 px
    python benchmarks/kernels.py --batch 1 --max-res 256

`--device cpu --library kernels/lib/libilo_kernels_emulated.so --smoke` runs the same code on
the host emulation at tiny sizes: a check of this script, not a measurement.
"""

from __future__ import annotations

import contextlib
import functools
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, machine_line

BLOCK_TARGET, BLOCK_TARGET_MIN_RES, BLOCK_TARGET_BATCH = 1.5, 128, 8


# --- the torch grouped form -------------------------------------------------------------------
def grouped_forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """ModulatedConv2d.forward with per-sample weights and one grouped conv, as StyleGAN2's
    reference code computes it (fused_modconv=True)."""
    from ilo.generators import ops as R

    styles = self.affine(w)
    weight = self.weight * self.weight_gain
    batch, (co, ci, k, _) = x.shape[0], weight.shape
    wb = weight[None] * styles[:, None, :, None, None]
    if self.demodulate:
        wb = wb * torch.rsqrt(wb.square().sum(dim=(2, 3, 4)) + R.DEMODULATION_EPS)[:, :, None, None, None]
    xg = x.reshape(1, batch * ci, *x.shape[2:])
    if self.up:
        y = F.conv_transpose2d(xg, wb.transpose(1, 2).reshape(batch * ci, co, k, k), stride=2, groups=batch)
        return R.upfirdn2d(y.reshape(batch, co, *y.shape[2:]), self.blur_kernel, pad=(1, 1), gain=4.0)
    y = F.conv2d(xg, wb.reshape(batch * co, ci, k, k), padding=self.padding, groups=batch)
    return y.reshape(batch, co, *y.shape[2:])


@contextlib.contextmanager
def formulation(name: str, library, tf32: bool):
    """Within this block, `prepare(module)` (what it yields) is the module in formulation
    `name`: its layers on the kernels (a copy, weights shared) or the torch reference."""
    from ilo.generators import ops as R
    from ilo.kernels.fast_path import KernelOps

    saved = R.ModulatedConv2d.forward, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    if name == "torch grouped":
        R.ModulatedConv2d.forward = grouped_forward
    try:
        fast = KernelOps(library, tf32=tf32) if name == "kernels" else None
        yield lambda module: R.with_fast_layers(module, fast)
    finally:
        R.ModulatedConv2d.forward, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


FORMS = [
    ("torch grouped", False),
    ("torch grouped", True),
    ("torch scaled", False),
    ("torch scaled", True),
    ("kernels", False),
    ("kernels", True),
]
TORCH_FORMS = [f for f in FORMS if f[0] != "kernels"]
KERNEL_FORMS = [f for f in FORMS if f[0] == "kernels"]


def form_label(name: str, tf32: bool) -> str:
    return f"{name} ({'TF32' if tf32 else 'fp32'})"


def best(row: dict, forms, prefix: str = "") -> tuple[float, str]:
    return min((row[prefix + form_label(*f)], form_label(*f)) for f in forms)


# --- timing -----------------------------------------------------------------------------------
def timed(fn, device: torch.device, repeats: int) -> float:
    """Median milliseconds of fn() over `repeats` runs after warm-up."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def matmul_peak_tflops(device: torch.device, tf32: bool) -> float | None:
    """The card's measured float32 matmul rate (cuBLAS, 8192^3), TF32 off (the CUDA cores) or
    on (the tensor cores): the yardsticks for the two kinds of kernel."""
    if device.type != "cuda":
        return None
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(8192, 8192, device=device)
    ms = timed(lambda: a @ a, device, 10)
    torch.backends.cuda.matmul.allow_tf32 = saved
    return 2 * 8192**3 / ms / 1e9


# --- layers and blocks ------------------------------------------------------------------------
def make_layer(shape, device, seed=0):
    from ilo.generators import ops as R

    layer = (
        R.ToRGB(shape.cin, 512)
        if shape.kind == "rgb"
        else R.StyledConv(shape.cin, shape.cout, 512, up=shape.kind == "up")
    )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim <= 1 else 1.0))
    return layer.requires_grad_(False).to(device)


def layer_case(shape, batch, device):
    layer = make_layer(shape, device)
    g = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(batch, shape.cin, shape.res, shape.res, device=device, generator=g, requires_grad=True)
    w = torch.randn(batch, 512, device=device, generator=g, requires_grad=True)
    noise = torch.randn(batch, 1, shape.out_res, shape.out_res, device=device, generator=g, requires_grad=True)
    inputs = (x, w) if shape.kind == "rgb" else (x, w, noise)
    call = (lambda m: m(x, w)) if shape.kind == "rgb" else (lambda m: m(x, w, noise))
    return layer, call, inputs


def block_case(res, batch, device, channels):
    from ilo.generators.stylegan2 import BlockStage, StyleGAN2Config

    k = int(math.log2(res)) - 2
    config = StyleGAN2Config(res, (512, 512), tuple(channels[: k + 1]))
    block = BlockStage(config, k)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.1 if p.ndim <= 1 else 1.0))
    block = block.requires_grad_(False).to(device)
    gd = torch.Generator(device=device).manual_seed(3)
    c_in, half = channels[k - 1], res // 2
    x = torch.randn(batch, c_in, half, half, device=device, generator=gd, requires_grad=True)
    skip = torch.randn(batch, 3, half, half, device=device, generator=gd, requires_grad=True)
    w = torch.randn(batch, 3, 512, device=device, generator=gd, requires_grad=True)
    noises = [torch.randn(batch, 1, res, res, device=device, generator=gd, requires_grad=True) for _ in range(2)]

    def call(m):
        feats, rgb = m((x, skip), w, noises)
        return feats.square().mean() + rgb.square().mean()

    return block, call, (x, skip, w, *noises)


def forward_and_vjp(run, inputs):
    """One forward and VJP, with the same (seeded) cotangent at every call."""
    cotangent = {}

    def step():
        out = run()
        if out.shape not in cotangent:
            g = torch.Generator(device=out.device).manual_seed(4)
            cotangent[out.shape] = torch.randn(out.shape, device=out.device, generator=g).to(out.dtype)
        return torch.autograd.grad(out, inputs, cotangent[out.shape])

    return step


def max_relative(a, b) -> float:
    return max(float((x.double() - y.double()).abs().max()) / (float(y.abs().max()) or 1.0) for x, y in zip(a, b))


def measure_layers(shapes, batch, device, library, repeats, peaks):
    rows = []
    for shape in shapes:
        layer, call, inputs = layer_case(shape, batch, device)
        row = {
            "layer": shape.name,
            "kind": shape.kind,
            "cin": shape.cin,
            "cout": shape.cout,
            "res": shape.res,
            "batch": batch,
        }
        for name, tf32 in FORMS:
            label = form_label(name, tf32)
            with formulation(name, library, tf32) as prepare:
                run = functools.partial(call, prepare(layer))
                with torch.no_grad():
                    row[f"fwd {label}"] = timed(run, device, repeats)
                row[f"fwd+vjp {label}"] = timed(forward_and_vjp(run, inputs), device, repeats)
        with formulation("torch scaled", library, False) as prepare:  # the errors, against fp32 torch
            want = forward_and_vjp(functools.partial(call, prepare(layer)), inputs)()
        for tf32 in (False, True):
            with formulation("kernels", library, tf32) as prepare:
                got = forward_and_vjp(functools.partial(call, prepare(layer)), inputs)()
                row[f"max relative error {form_label('kernels', tf32)}"] = max_relative(got, want)
        (torch_ms, torch_form), (kernel_ms, kernel_form) = (
            best(row, TORCH_FORMS, "fwd+vjp "),
            best(row, KERNEL_FORMS, "fwd+vjp "),
        )
        row["fwd+vjp speed-up"], row["best torch"], row["best kernels"] = torch_ms / kernel_ms, torch_form, kernel_form
        flops = 2 * shape.macs_per_image() * batch
        for tf32 in (False, True):
            label = form_label("kernels", tf32)
            row[f"fwd TFLOP/s {label}"] = flops / row[f"fwd {label}"] / 1e9
            peak = peaks["TF32" if tf32 else "fp32"]
            row[f"fwd fraction of peak {label}"] = row[f"fwd TFLOP/s {label}"] / peak if peak else None
        rows.append(row)
        print(
            f"{shape.name}: fwd+vjp {row['best kernels']} {row['fwd+vjp speed-up']:.2f}x {row['best torch']}",
            flush=True,
        )
    return rows


def measure_blocks(resolutions, batch, device, library, repeats, channels):
    rows = []
    for res in resolutions:
        block, call, inputs = block_case(res, batch, device, channels)
        row = {
            "block": f"{channels[int(math.log2(res)) - 3]}->{channels[int(math.log2(res)) - 2]} @{res}px",
            "res": res,
            "batch": batch,
        }
        for name, tf32 in FORMS:
            with formulation(name, library, tf32) as prepare:
                row[form_label(name, tf32)] = timed(
                    forward_and_vjp(functools.partial(call, prepare(block)), inputs), device, repeats
                )
        (torch_ms, torch_form), (kernel_ms, kernel_form) = best(row, TORCH_FORMS), best(row, KERNEL_FORMS)
        row["best torch"], row["best kernels"], row["speed-up"] = torch_form, kernel_form, torch_ms / kernel_ms
        rows.append(row)
        print(f"block @{res}px: {kernel_form} {row['speed-up']:.2f}x {torch_form}", flush=True)
    return rows


# --- report -----------------------------------------------------------------------------------
def environment(device: torch.device, library) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "library": library.build_info}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            card=props.name,
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            multiprocessors=props.multi_processor_count,
        )
    else:
        env.update(card=f"CPU ({platform.processor() or platform.machine()}), host emulation: not a measurement")
    return env


def markdown(result: dict) -> str:
    env, layers, blocks = result["environment"], result["layers"], result["blocks"]
    peaks = result["matmul peak TFLOP/s"]
    out = [
        f"# Kernels against torch ({env['card']})",
        "",
        ", ".join(f"{k} {v}" for k, v in env.items())
        + (
            f"; measured matmul peaks: fp32 {peaks['fp32']:.1f}, TF32 {peaks['TF32']:.1f} TFLOP/s"
            if peaks["fp32"]
            else ""
        ),
        "",
        "## Synthesis blocks, forward + VJP (ms)",
        "",
    ]
    labels = [form_label(n, t) for n, t in FORMS]
    out += [
        "| block | batch | " + " | ".join(labels) + " | best kernels over best torch | target |",
        "| --- | --- | " + " | ".join("---" for _ in labels) + " | --- | --- |",
    ]
    for r in blocks:
        target = ""
        if r["res"] >= BLOCK_TARGET_MIN_RES and r["batch"] == BLOCK_TARGET_BATCH:
            target = f"{BLOCK_TARGET}×: {'meets' if r['speed-up'] >= BLOCK_TARGET else 'MISSES'}"
        out.append(
            f"| {r['block']} | {r['batch']} | "
            + " | ".join(f"{r[lab]:.3f}" for lab in labels)
            + f" | **{r['speed-up']:.2f}×** ({r['best kernels']} / {r['best torch']}) | {target} |"
        )
    out += [
        "",
        "## Layers (ms; the kernels' forward TFLOP/s, and as a fraction of the measured fp32 / TF32 matmul peak)",
        "",
        "| layer | "
        + " | ".join(f"fwd {lab}" for lab in labels)
        + " | "
        + " | ".join(f"fwd+vjp {lab}" for lab in labels)
        + " | fwd+vjp best kernels over best torch | fwd TFLOP/s fp32 / TF32 | of peak fp32 / TF32 | max rel. error fp32 / TF32 |",
        "| --- | " + " | ".join("---" for _ in range(2 * len(labels) + 4)) + " |",
    ]
    for r in layers:
        k32, ktf = form_label("kernels", False), form_label("kernels", True)
        fractions = [r[f"fwd fraction of peak {k}"] for k in (k32, ktf)]
        frac = " / ".join(f"{100 * f:.0f} %" for f in fractions) if fractions[0] is not None else "n/a"
        out.append(
            f"| {r['layer']} | "
            + " | ".join(f"{r['fwd ' + lab]:.3f}" for lab in labels)
            + " | "
            + " | ".join(f"{r['fwd+vjp ' + lab]:.3f}" for lab in labels)
            + f" | {r['fwd+vjp speed-up']:.2f}× | {r['fwd TFLOP/s ' + k32]:.2f} / {r['fwd TFLOP/s ' + ktf]:.2f} | {frac}"
            + f" | {r['max relative error ' + k32]:.1e} / {r['max relative error ' + ktf]:.1e} |"
        )
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    from ilo.generators.stylegan2 import config_f
    from ilo.kernels.layer_shapes import config_f_layers
    from ilo.kernels.library import KernelLibraryError, load_library, open_library

    script = Script(__file__, __doc__)
    p = script.parser
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-res", type=int, default=1024)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--library", type=Path, help="the library file (default: $ILO_KERNELS_LIB, then kernels/lib)")
    p.add_argument(
        "--smoke",
        "--quick",
        action="store_true",
        help="tiny channel counts and sizes: checks the script, measures nothing (results: kernels_smoke.*)",
    )
    args = script.parse(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks/kernels.py needs a CUDA device (or --device cpu with the emulated library and --smoke)"
        )
    try:
        library = open_library(args.library) if args.library else load_library()
    except KernelLibraryError as e:
        raise SystemExit(str(e)) from None
    divisor = 32 if args.smoke else 1
    channels = config_f(args.max_res, channel_divisor=divisor).channels
    shapes = [
        s.__class__(s.kind, max(1, s.cin // divisor), 3 if s.kind == "rgb" else max(1, s.cout // divisor), s.res)
        for s in config_f_layers(args.max_res)
    ]
    peaks = {"fp32": matmul_peak_tflops(device, False), "TF32": matmul_peak_tflops(device, True)}
    repeats = 1 if args.smoke else args.repeats
    result = {
        "environment": environment(device, library),
        "matmul peak TFLOP/s": peaks,
    }
    resolutions = [4 * 2**k for k in range(1, len(channels))]
    result["blocks"] = measure_blocks(resolutions, args.batch, device, library, repeats, channels)
    result["layers"] = measure_layers(shapes, args.batch, device, library, repeats, peaks)
    stem = "kernels" if device.type == "cuda" else "kernels_smoke"
    script.write(stem, markdown(result), result, machine_line("fused kernels against torch", args.device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
