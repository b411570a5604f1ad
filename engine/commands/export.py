"""`ilo export`: trace every generator stage (and the latent mapping proxy) into a forward and
a VJP ONNX graph, lint them for TensorRT, check them against torch, and cache them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ilo.export.checkpoints.files import load_generator


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export stage graphs (forward + VJP) to ONNX, verified and cached", description=__doc__)
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--cache", type=Path, help="cache folder (default: $ILO_CACHE_DIR/graphs or ~/.cache/ilo/graphs)")
    p.add_argument("--force", action="store_true", help="export again even when the cache holds these graphs")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ilo.export.artifacts import export_generator  # onnx and the exporter load only when used

    gen = load_generator(args.model)

    def progress(i, n, name):
        print(f"export: {i + 1}/{n} {name}", file=sys.stderr, flush=True)

    result = export_generator(gen, args.cache, progress=progress, force=args.force)
    m = result.manifest
    if result.cache_hit:
        print(f"cache hit: {len(m['graphs'])} graphs of this {m['family']} {m['resolution']}px already exported")
    for g in m["graphs"]:
        worst = max(g["max_relative_error"].values())
        print(f"  {g['name']:12s} {g['bytes'] / 1e6:8.2f} MB  max rel. error {worst:.1e}  {g['export_seconds']:6.1f}s  "
              f"{'lint ok' if not g['lint'] else 'LINT: ' + '; '.join(g['lint'])}")  # fmt: skip
    print(f"{'found' if result.cache_hit else 'wrote'} {len(m['graphs'])} graphs and manifest.json in {result.folder}")
    return 0
