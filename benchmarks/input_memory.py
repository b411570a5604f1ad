"""Peak memory of reading one large input for a small generator, as a ratio in one run.

The fast path (`read_picture(..., fit=("resize", size))`) shrinks the image while it is still
8-bit; the reference path decodes it whole to float and lets `fit_to` resize it. Each runs in a
fresh process (peak RSS is per process), on the same PNG, and both results are compared.

    python benchmarks/input_memory.py [--side 12000] [--size 64]

The test image is the example photograph (examples/faces/astronaut.png) blown up with nearest
neighbours, so the PNG stays small while its decoded pixels are large. Writes
benchmarks/results/input_memory.md. Target: the fast path needs at most a quarter of the
reference's peak memory, and its pixels differ from the reference's by at most 0.02 on average
(of the [-1, 1] range; the box pre-filter and the bicubic one differ at sharp edges).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a file: `benchmarks` importable
from benchmarks.report import Script, machine_line

_CHILD = """
import json, resource, sys, time
import numpy as np, torch
from ilo.engine.inputs.image_files import fit_to, image_tensor, read_picture
path, size, fast = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "fast"
start = time.perf_counter()
picture = read_picture(path, max_pixels=10**10, fit=("resize", size) if fast else None)
image, _ = fit_to(image_tensor(picture), size, "resize", path)
seconds = time.perf_counter() - start
np.save(sys.argv[4], image.numpy())
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds}))
"""


def _measure(path: Path, size: int, mode: str, out: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(size), mode, str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    import numpy as np
    from PIL import Image

    script = Script(__file__, __doc__, quick={"side": 1000})
    script.parser.add_argument("--side", type=int, default=12000)
    script.parser.add_argument("--size", type=int, default=64)
    args = script.parse(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "large.png"
        photo = np.asarray(
            Image.open(Path(__file__).parents[1] / "examples" / "faces" / "astronaut.png").convert("RGB")
        )
        block = -(-args.side // photo.shape[0])
        big = np.kron(photo, np.ones((block, block, 1), np.uint8))[: args.side, : args.side]
        Image.fromarray(big).save(path)
        baseline = json.loads(
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    "import json, resource, torch, numpy\n"
                    "print(json.dumps({'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        fast = _measure(path, args.size, "fast", Path(tmp) / "fast.npy")
        reference = _measure(path, args.size, "reference", Path(tmp) / "reference.npy")
        gap = np.abs(np.load(Path(tmp) / "fast.npy") - np.load(Path(tmp) / "reference.npy"))
        difference, worst = float(gap.mean()), float(gap.max())
        file_mb = path.stat().st_size / 1e6
    ratio = fast["peak_mb"] / reference["peak_mb"]  # whole processes: the imports count on both sides
    met = ratio <= 0.25 and difference <= 0.02
    lines = [
        f"# Input memory: a {args.side}x{args.side} PNG ({file_mb:.1f} MB) for a {args.size}px generator",
        "",
        f"Peak RSS of each fresh process (one that only imports torch and numpy peaks at {baseline['peak_mb']:.0f} MB).",
        "",
        "| path | peak MB | seconds |",
        "| --- | ---: | ---: |",
        f"| reduce while 8-bit (`read_picture(..., fit=('resize', {args.size}))`) | {fast['peak_mb']:.0f} | {fast['seconds']:.2f} |",
        f"| reference: decode whole to float, then resize | {reference['peak_mb']:.0f} | {reference['seconds']:.2f} |",
        "",
        f"Ratio {ratio:.3f} (target <= 0.25); pixel difference {difference:.4f} on average (target <= 0.02), "
        f"{worst:.3f} at most, of the [-1, 1] range: {'met' if met else 'MISSED'}.",
        "",
    ]
    script.write("input_memory", "\n".join(lines), None, machine_line("PIL and torch, one process per path"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
