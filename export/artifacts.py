"""The artifact cache of exported graphs: one folder per (weights, exporter) key holding the
ONNX files and a manifest. Exporting the same thing again is a cache hit; changed weights, a
changed exporter or a different torch/onnx version is a miss, written to a new folder.

manifest.json records per graph: file, sha256, bytes, input/output names and shapes (batch
axis "batch"), opset, the lint result, the max relative error against torch at each checked
batch size, and the export time.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx
import torch

from ilo.atomic import exclusive_lock
from ilo.errors import IloError
from ilo.export.graphs import GraphFn, LossHead, generator_graphs, loss_head_graphs, lpips_graphs, step_graph
from ilo.export.lint import lint
from ilo.export.onnx_export import OPSET, export_onnx
from ilo.export.verify import check_graph, reference_graphs
from ilo.generators.staged import StagedGenerator, state_fingerprint
from ilo.paths import cache_dir

EXPORTER_VERSION = "2"  # bump when graph functions or export settings change
MAX_RELATIVE_ERROR = 1e-4
KINK_L2_ERROR = 1e-2  # see _errors
MANIFEST = "manifest.json"


def _versions() -> dict[str, str]:
    import onnxruntime
    import onnxscript

    from ilo.version import __version__

    return {
        "ilo": __version__,
        "exporter": EXPORTER_VERSION,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


@dataclass
class Bundle:
    """A set of graphs exported, checked and cached together. `build` makes the graph functions
    and their float64 references (plain torch autograd) only on a cache miss: the references
    deep-copy the model in float64, which a cache hit must not pay for."""

    name: str  # "generator", "lpips-vgg", "loss-heads"
    identity: dict  # what makes two bundles the same (weights hash, resolution, ...)
    build: Callable[[], tuple[list[GraphFn], dict[str, GraphFn]]]


def _by_name(graphs: list[GraphFn]) -> dict[str, GraphFn]:
    return {g.name: g for g in graphs}


GENERATOR_PARTS = ("all", "forward", "vjp")


def generator_bundle(gen: StagedGenerator, part: str = "all") -> Bundle:
    """The generator's graphs: all, or one part: 'forward' (the mapping proxy and each stage's
    forward, what every solve runs) or 'vjp' (each stage's VJP, only for chained steps: LPIPS,
    operators without a loss head). A solve on the fused step graphs never runs the stage VJPs,
    so the engine exports them on first use instead of paying for them at a cold start."""
    if part not in GENERATOR_PARTS:
        raise IloError(f"unknown part of the generator's graphs '{part}' (one of {', '.join(GENERATOR_PARTS)})")

    def wanted(name: str) -> bool:
        return part == "all" or (name.endswith(".vjp") and name.startswith("stage")) == (part == "vjp")

    def build():
        graphs, references = generator_graphs(gen), reference_graphs(gen)
        return [g for g in graphs if wanted(g.name)], {k: v for k, v in references.items() if wanted(k)}

    identity = {"checkpoint_sha256": gen.fingerprint(), "family": gen.family, "resolution": gen.resolution}
    return Bundle("generator" if part == "all" else f"generator-{part}", identity, build)


def lpips_bundle(lpips, resolution: int) -> Bundle:
    def build():
        double = copy.deepcopy(lpips).double()
        return lpips_graphs(lpips, resolution), _by_name(lpips_graphs(double, resolution, frozen=False))

    identity = {"lpips_sha256": state_fingerprint(lpips, f"lpips-{lpips.net}"), "resolution": resolution}
    return Bundle(f"lpips-{lpips.net}", identity, build)


def loss_head_bundle(heads: list[LossHead], resolution: int) -> Bundle:
    def build():
        return loss_head_graphs(heads, resolution), _by_name(loss_head_graphs(heads, resolution, frozen=False))

    identity = {"resolution": resolution, "heads": {h.name: h.revision for h in heads}}
    return Bundle("loss-heads", identity, build)


def step_bundle(gen: StagedGenerator, head: LossHead, start: int, optimised_noises: int) -> Bundle:
    """The fused step graph of round `start` with loss head `head` (export/graphs.py)."""
    if not 0 <= start < len(gen.stages):
        raise IloError(f"round {start} is outside the generator's {len(gen.stages)} stages")

    def build():
        double = copy.deepcopy(gen).double().requires_grad_(True)
        reference = step_graph(double, head, start, optimised_noises, list(double.stages), frozen=False)
        graph = step_graph(gen, head, start, optimised_noises)
        return [graph], {graph.name: reference}

    identity = {
        "checkpoint_sha256": gen.fingerprint(),
        "family": gen.family,
        "resolution": gen.resolution,
        "head": head.name,
        "head_revision": head.revision,
        "round": start,
        "optimised_noises": optimised_noises,
    }
    return Bundle(f"step-round{start}-{head.name}", identity, build)


def cache_key(bundle: Bundle) -> str:
    payload = json.dumps(
        {"bundle": bundle.name, **bundle.identity, "versions": _versions(), "opset": OPSET}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class ExportResult:
    folder: Path
    manifest: dict
    cache_hit: bool


def _io(graph: GraphFn, items) -> list[dict]:
    out = []
    for name, shape in items:
        dims = list(shape)
        for axis, dim in graph.symbolic.get(name, {}).items():
            dims[axis - (name not in graph.shared)] = dim
        out.append({"name": name, "shape": dims if name in graph.shared else ["batch", *dims]})
    return out


def bundle_folder(bundle: Bundle, root: Path | None = None) -> Path:
    """Where the cache keeps `bundle` (under `root`, default the user's cache)."""
    root = Path(root) if root is not None else cache_dir() / "graphs"
    return root / f"{bundle.name}-{cache_key(bundle)[:20]}"


def read_cached(folder: Path) -> dict | None:
    """The manifest of a complete cached bundle in `folder`, or None."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    for g in manifest.get("graphs", []):
        file = folder / g["file"]
        if not file.is_file() or file.stat().st_size != g["bytes"]:
            return None
    return manifest


def export_generator(
    gen: StagedGenerator, root: Path | None = None, progress=None, force: bool = False
) -> ExportResult:
    """Export, lint and verify every stage and mapping graph of `gen` (or find them cached)."""
    return export_bundle(generator_bundle(gen), root, progress, force)


def export_bundle(bundle: Bundle, root: Path | None = None, progress=None, force: bool = False) -> ExportResult:
    """Export, lint and verify every graph of a bundle into the cache (or find it there).

    Processes that share the cache (export workers, Ray actors and Serve replicas on one node,
    test workers) export a bundle once: the first holds the bundle's lock while it exports, the
    others wait for it and then find the bundle cached, instead of each spending the same
    minutes and gigabytes on it."""
    folder = bundle_folder(bundle, root)
    if not force:
        manifest = read_cached(folder)
        if manifest is not None:
            return ExportResult(folder, manifest, True)

    def waiting() -> None:
        if progress is not None:
            progress(0, 1, f"{bundle.name}: waiting for another process exporting it")

    with exclusive_lock(folder.parent / f".{folder.name}.lock", waiting):
        if not force:
            manifest = read_cached(folder)  # the process we waited for exported it
            if manifest is not None:
                return ExportResult(folder, manifest, True)
        return _export_new(bundle, folder, progress, force)


def _export_new(bundle: Bundle, folder: Path, progress, force: bool) -> ExportResult:
    root, key = folder.parent, cache_key(bundle)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))  # renamed into place when complete
    try:
        entries = []
        graphs, references = bundle.build()
        for i, graph in enumerate(graphs):
            if progress is not None:
                progress(i, len(graphs), f"{bundle.name}/{graph.name}")
            entries.append(_export_one(graph, references[graph.name], work))
            gc.collect()  # the exporter and the checks leave large cycles behind
        manifest = {
            "key": key,
            "bundle": bundle.name,
            **bundle.identity,
            "versions": _versions(),
            "opset": OPSET,
            "dynamic_axes": {"batch": 0},
            "max_relative_error_allowed": MAX_RELATIVE_ERROR,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "graphs": entries,
        }
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        failed = [e["name"] for e in entries if e["lint"] or not e["passed"]]
        if failed:
            keep = root / f"failed-{folder.name}"
            shutil.rmtree(keep, ignore_errors=True)
            work.rename(keep)
            raise IloError(f"graphs failed their checks: {', '.join(failed)} (see {keep / MANIFEST})")
        if not force:  # another process (a second Ray actor, say) may have finished the same export first
            theirs = read_cached(folder)
            if theirs is not None:
                return ExportResult(folder, theirs, True)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
        try:
            work.rename(folder)
        except OSError:  # another process renamed its copy into place between our check and here
            theirs = read_cached(folder)
            if theirs is None:
                raise
            return ExportResult(folder, theirs, True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(folder, manifest, False)


def _errors(errors: dict, is_vjp: bool) -> dict:
    """A graph passes when its error is within MAX_RELATIVE_ERROR. Piecewise-linear kinks
    (ReLU, leaky ReLU, max-pool) defeat that bound in float32 for the gradients of wide
    networks: an activation near zero (or a near-tie in a pooling window) lands on the other
    side under rounding, its gradient takes the other path, and every gradient summed over that
    pixel moves. Torch's own float32 gradient misses the bound the same way, by chance at some
    batches and not others (`torch_float32_max_relative_error` records it). A VJP graph passes
    as `kink_limited` when its l2 error stays within KINK_L2_ERROR: a wrong graph is off by
    O(1) in l2, a kink flip by 1e-4 to 1e-3."""
    error = max(errors["max"].values())
    l2 = max(errors["l2"].values())
    kink_limited = is_vjp and error > MAX_RELATIVE_ERROR and l2 <= KINK_L2_ERROR
    return {
        "max_relative_error": errors["max"],
        "l2_relative_error": errors["l2"],
        "outlier_fraction": errors["outliers"],
        "torch_float32_max_relative_error": errors["torch_max"],
        "error": error,
        "kink_limited": kink_limited,
        "passed": error <= MAX_RELATIVE_ERROR or kink_limited,
    }


def _export_one(graph: GraphFn, reference: GraphFn, folder: Path) -> dict:
    file = f"{graph.name.replace('.', '_')}.onnx"
    seconds = export_onnx(graph, folder / file)
    model = onnx.load(str(folder / file))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise IloError(f"{graph.name}: the ONNX checker rejects the graph ({str(e).splitlines()[0]})") from e
    is_vjp = graph.name.endswith((".vjp", ".step"))  # graphs that carry gradients
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != [n for n, _ in graph.inputs] or names_out != [n for n, _ in graph.outputs]:
        raise IloError(f"{graph.name}: exported names {names_in} -> {names_out} differ from the graph function's")
    return {
        "name": graph.name,
        "file": file,
        "kind": graph.name.split(".")[-1],
        "stage": graph.stage,
        "inputs": _io(graph, graph.inputs),
        "outputs": _io(graph, graph.outputs),
        "ops": sorted({n.op_type for n in model.graph.node}),
        "lint": lint(model, is_vjp=is_vjp),
        **_errors(check_graph(folder / file, graph, reference), is_vjp=is_vjp),
        "reference": "torch float64, plain autograd",
        "export_seconds": round(seconds, 3),
        "bytes": (folder / file).stat().st_size,
        "sha256": _sha256(folder / file),
    }
