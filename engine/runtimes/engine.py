"""The engine a solve runs on: the backend `--backend` names (or `auto` picks), the graphs a
solve loads exported ahead, side by side, and what the backend allows one call to take.

`auto` takes the fused kernels (StyleGAN2 on a GPU, library built) or onnxruntime, and falls
back to torch with a one-line note where the graphs cannot be exported or run; a backend named
explicitly must work or opening the engine fails.

Which bundles a solve loads is the caller's to say (it knows the solver's rounds and losses);
this layer exports and runs graphs and knows nothing of rounds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ilo.engine.runtimes.backends import Backend, OnnxRuntimeBackend, auto_backend_name, get_backend
from ilo.engine.runtimes.bridge import EngineGenerator, EngineLPIPS, frozen
from ilo.errors import IloError
from ilo.export.artifacts import Bundle
from ilo.export.parallel import export_bundles
from ilo.generators.staged import StagedGenerator

# the bundle makers a solve loads, for the (frozen) generator the engine runs: exported ahead
BundlePlan = Callable[[StagedGenerator], Sequence[Callable[[], Bundle]]]
# the learned start's graph on a backend: view -> z, called like the encoder module
EncoderLoader = Callable[[Backend], Callable[[torch.Tensor], torch.Tensor]]


@dataclass(frozen=True)
class Engine:
    """What the solver calls: the generator and LPIPS loss as graphs on `backend`, or the torch
    modules themselves (`backend` None)."""

    generator: StagedGenerator | EngineGenerator
    lpips: torch.nn.Module | None
    backend: Backend | None = None
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None  # the learned start's, where there is one

    @property
    def max_rows(self) -> int | None:
        """The most rows one call may take (a TensorRT engine's batch profile); None: any."""
        return None if self.backend is None else self.backend.max_rows

    @property
    def description(self) -> str:
        """The engine as records and messages name it."""
        return "torch" if self.backend is None else self.backend.describe()

    @property
    def versions(self) -> dict[str, str]:
        """The libraries whose versions change what a step holds here."""
        versions = {"torch": torch.__version__}
        if isinstance(self.backend, OnnxRuntimeBackend):
            versions["onnxruntime"] = self.backend.version
        return versions


def chosen_backend(name: str, device: str, family: str) -> Backend:
    """The backend `name` on `device` ('auto' resolved for the model's family), not yet loaded."""
    return get_backend(auto_backend_name(device, family) if name == "auto" else name, device)


def exports_graphs(name: str, device: str, family: str) -> bool:
    """Whether a solve on backend `name` loads exported files (torch and the kernels run the
    graph functions themselves)."""
    return name != "torch" and not chosen_backend(name, device, family).runs_functions


def open_engine(
    model: StagedGenerator,
    lpips: torch.nn.Module | None,
    backend: str,
    device: str,
    bundles: BundlePlan,
    progress: Callable | None = None,
    encoder: EncoderLoader | None = None,
) -> Engine:
    """The engine on `backend` ('auto', 'torch', 'onnxruntime', ...) for `model`, already on
    `device`: the bundles `bundles` names exported side by side on a cold cache, then loaded.
    `encoder` loads the learned start's graph on the chosen backend."""
    if backend == "torch":
        return Engine(model, lpips)
    try:
        return _on_backend(model, lpips, chosen_backend(backend, device, model.family), bundles, progress, encoder)
    except IloError as e:
        if backend != "auto":
            raise
        print(f"ilo: note: running on torch: the engine is unavailable ({e})", file=sys.stderr)
        return Engine(model, lpips)


def _on_backend(
    model: StagedGenerator,
    lpips: torch.nn.Module | None,
    backend: Backend,
    bundles: BundlePlan,
    progress: Callable | None,
    encoder: EncoderLoader | None,
) -> Engine:
    gen = frozen(model)  # once: the export and the engine would each copy a trainable model
    if not backend.runs_functions:
        export_bundles(list(bundles(gen)), None, None, gen, progress)
    generator = EngineGenerator(gen, backend, progress=progress)
    on_backend = None if encoder is None else encoder(backend)
    engine_lpips = lpips if lpips is None else EngineLPIPS(lpips, gen.resolution, backend, progress=progress)
    return Engine(generator, engine_lpips, backend, on_backend)
