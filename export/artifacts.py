"""The artifact cache of exported graphs: one folder per (weights, exporter) key holding the
ONNX files and a manifest. Exporting the same thing again is a cache hit; changed weights, a
changed exporter or a different torch/onnx version is a miss, written to a new folder.

manifest.json records per graph: file, sha256, bytes, input/output names and shapes (batch
axis "batch"), opset, the lint result, the max relative error against torch at each checked
batch size, and the export time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch

from ilo.errors import IloError
from ilo.export.graphs import GraphFn, generator_graphs
from ilo.export.lint import lint
from ilo.export.onnx_export import OPSET, export_onnx
from ilo.export.staged import StagedGenerator
from ilo.export.verify import check_graph, reference_graphs
from ilo.paths import cache_dir

EXPORTER_VERSION = "1"  # bump when graph functions or export settings change
MAX_RELATIVE_ERROR = 1e-4
MANIFEST = "manifest.json"


def _versions() -> dict[str, str]:
    import onnxruntime
    import onnxscript

    from ilo import __version__

    return {"ilo": __version__, "exporter": EXPORTER_VERSION, "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxscript": onnxscript.__version__, "onnxruntime": onnxruntime.__version__}  # fmt: skip


def cache_key(gen: StagedGenerator) -> str:
    payload = json.dumps({"weights": gen.fingerprint(), "versions": _versions(), "opset": OPSET}, sort_keys=True)
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


def _io(items, batch="batch") -> list[dict]:
    return [{"name": n, "shape": [batch, *s]} for n, s in items]


def _valid_cache(folder: Path) -> dict | None:
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


def export_generator(gen: StagedGenerator, root: Path | None = None, progress=None, force: bool = False) -> ExportResult:
    """Export, lint and verify every graph of `gen` into the cache (or find it there)."""
    root = Path(root) if root is not None else cache_dir() / "graphs"
    key = cache_key(gen)
    folder = root / key[:24]
    if not force:
        manifest = _valid_cache(folder)
        if manifest is not None:
            return ExportResult(folder, manifest, True)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{key[:24]}.", dir=root))  # renamed into place when complete
    try:
        graphs = generator_graphs(gen)
        references = reference_graphs(gen)
        entries = []
        for i, graph in enumerate(graphs):
            if progress is not None:
                progress(i, len(graphs), graph.name)
            entries.append(_export_one(graph, references[graph.name], work))
        manifest = {
            "key": key, "checkpoint_sha256": gen.fingerprint(), "family": gen.family, "resolution": gen.resolution,
            "versions": _versions(), "opset": OPSET, "dynamic_axes": {"batch": 0},
            "max_relative_error_allowed": MAX_RELATIVE_ERROR, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "graphs": entries,
        }  # fmt: skip
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        failed = [e["name"] for e in entries if e["lint"] or max(e["max_relative_error"].values()) > MAX_RELATIVE_ERROR]
        if failed:
            keep = root / f"failed-{key[:24]}"
            shutil.rmtree(keep, ignore_errors=True)
            work.rename(keep)
            raise IloError(f"graphs failed their checks: {', '.join(failed)} (see {keep / MANIFEST})")
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(folder, manifest, False)


def _export_one(graph: GraphFn, reference: GraphFn, folder: Path) -> dict:
    file = f"{graph.name.replace('.', '_')}.onnx"
    seconds = export_onnx(graph, folder / file)
    model = onnx.load(str(folder / file))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise IloError(f"{graph.name}: the ONNX checker rejects the graph ({str(e).splitlines()[0]})") from e
    names_in = [i.name for i in model.graph.input]
    names_out = [o.name for o in model.graph.output]
    if names_in != [n for n, _ in graph.inputs] or names_out != [n for n, _ in graph.outputs]:
        raise IloError(f"{graph.name}: exported names {names_in} -> {names_out} differ from the graph function's")
    return {
        "name": graph.name, "file": file, "kind": graph.name.split(".")[-1], "stage": graph.stage,
        "inputs": _io(graph.inputs), "outputs": _io(graph.outputs),
        "ops": sorted({n.op_type for n in model.graph.node}),
        "lint": lint(model, is_vjp=graph.name.endswith(".vjp")),
        "max_relative_error": check_graph(folder / file, graph, reference),
        "export_seconds": round(seconds, 3), "bytes": (folder / file).stat().st_size, "sha256": _sha256(folder / file),
    }  # fmt: skip
