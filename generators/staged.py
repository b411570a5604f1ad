"""The staged-generator contract every generator family implements.

A generator is a chain of stages `G = g_n ∘ … ∘ g_0`; each stage is a pure function
`state_out = g_k(state_in, latents_k, noises_k)`. The solver optimises the input
state of stage k in round k, and the exporter traces each stage into its own graphs, so a stage
must not read anything but its arguments and its own constant weights.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from ilo.errors import InputError

State = tuple[torch.Tensor, ...]


@dataclass(frozen=True)
class StageSpec:
    """Where a stage sits in the chain: which latent rows and noise maps it reads, and the
    per-sample shapes of its input and output states (batch axis excluded)."""

    index: int
    resolution: int
    latent_start: int
    latent_count: int
    noise_start: int
    noise_count: int
    state_in: tuple[tuple[int, ...], ...]
    state_out: tuple[tuple[int, ...], ...]

    @property
    def latent_slice(self) -> slice:
        return slice(self.latent_start, self.latent_start + self.latent_count)

    @property
    def noise_indices(self) -> range:
        return range(self.noise_start, self.noise_start + self.noise_count)


def state_fingerprint(module: nn.Module, salt: str = "") -> str:
    """sha256 over every tensor's name, dtype, shape and bytes of a module's state."""
    h = hashlib.sha256(salt.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def latent_row(latents: torch.Tensor, i: int) -> torch.Tensor:
    """Row i of a stage's latents [B, L, D] -> [B, D], as a slice: indexing would export as a
    Gather on a differentiated path, which TensorRT-bound graphs must not contain."""
    return latents[:, i : i + 1].squeeze(1)


class Stage(nn.Module):
    spec: StageSpec

    def forward(self, state: State, latents: torch.Tensor, noises: Sequence[torch.Tensor]) -> State:
        raise NotImplementedError


class StagedGenerator(nn.Module):
    """Common interface: latents in w+ layout [B, n_latent, style_dim], noise maps [B|1, 1, H, W].

    Subclasses set `family`, `resolution`, `n_latent`, `style_dim`, `z_dim`, `stages` and
    implement `mapping`, `image_from_state` and `stored_noises`.
    """

    family: str = ""
    resolution: int
    n_latent: int
    style_dim: int
    z_dim: int
    has_mapping: bool = False
    stages: nn.ModuleList

    # --- latents ------------------------------------------------------------------------------
    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, z_dim] -> w [B, style_dim]."""
        raise NotImplementedError

    @property
    def average_latent(self) -> torch.Tensor | None:
        """The truncation centre in w space, where the family has one."""
        return None

    def latents_from_z(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """Map z and broadcast it to every layer: [B, z_dim] -> w+ [B, n_latent, style_dim]."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise InputError(f"z must have shape [N, {self.z_dim}], got {list(z.shape)}")
        w = self.mapping(z)
        if not math.isfinite(truncation):  # NaN would pass every comparison and render NaN images
            raise InputError(f"truncation must be a finite number, got {truncation}")
        if truncation != 1.0:
            centre = self.average_latent
            if centre is None:
                raise InputError(f"truncation needs an average latent; the {self.family} generator has none")
            w = centre + truncation * (w - centre)
        return w[:, None, :].expand(-1, self.n_latent, -1)

    def latent_stats(self) -> Any:
        """The `LatentStats` of the Gaussianised latent space; a family with a mapping network
        overrides this with `ilo.generators.latent_stats.latent_stats(self)` (that module builds
        on this one, hence the loose type here)."""
        if self.has_mapping:
            raise NotImplementedError(
                f"the {self.family} generator has a mapping network but does not give its latent_stats()"
            )
        raise InputError(f"the {self.family} generator has no mapping network; its latent is already Gaussian")

    def gaussian_to_w(self, z: torch.Tensor, stats: Any) -> torch.Tensor:
        """Gaussianised latent z [..., style_dim] -> w, with `stats` this generator's
        `latent_stats()` already on z's device (the solver moves them once per solve)."""
        return stats.to_w(z)

    def check_latents(self, wplus: torch.Tensor) -> None:
        expected = (self.n_latent, self.style_dim)
        if wplus.ndim != 3 or tuple(wplus.shape[1:]) != expected:
            raise InputError(f"w+ latents must have shape [N, {expected[0]}, {expected[1]}], got {list(wplus.shape)}")

    # --- noise maps ---------------------------------------------------------------------------
    @property
    def noise_shapes(self) -> list[tuple[int, int]]:
        """(H, W) of every noise map, in layer order."""
        return []

    def stored_noises(self) -> list[torch.Tensor]:
        """The checkpoint's fixed noise maps, each [1, 1, H, W]."""
        return []

    def check_noises(self, noises: Sequence[torch.Tensor], batch: int) -> None:
        shapes = self.noise_shapes
        if len(noises) != len(shapes):
            raise InputError(f"expected {len(shapes)} noise maps, got {len(noises)}")
        for i, (noise, (h, w)) in enumerate(zip(noises, shapes)):
            ok = noise.ndim == 4 and noise.shape[0] in (1, batch) and tuple(noise.shape[1:]) == (1, h, w)
            if not ok:
                raise InputError(f"noise map {i} must have shape [1 or {batch}, 1, {h}, {w}], got {list(noise.shape)}")

    # --- stages -------------------------------------------------------------------------------
    @property
    def specs(self) -> list[StageSpec]:
        return [stage.spec for stage in self.stages]

    def state_bytes(self) -> int:
        """Bytes (float32) of every stage's output state for one image: what a pass writes,
        and what memory estimates scale with."""
        return 4 * sum(math.prod(shape) for spec in self.specs for shape in spec.state_out)

    def image_from_state(self, state: State) -> torch.Tensor:
        raise NotImplementedError

    def fused_step(self, start: int, op: object, batch: int, optimised_noises: int = 0) -> None:
        """No fused evaluation on a torch model: the solver runs `run_stages` and its loss in
        autograd. Engines return one (see ilo.engine.solver.generator_view)."""
        return None

    def export_stages(self) -> list[Stage]:
        """The stages as the exporter traces them (a family may fold constants first)."""
        return list(self.stages)

    def run_stages(
        self,
        state: State,
        wplus: torch.Tensor,
        noises: Sequence[torch.Tensor] | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> State:
        """Run stages start..stop-1 from `state` (the input state of stage `start`)."""
        stop = len(self.stages) if stop is None else stop
        noises = self.stored_noises() if noises is None else list(noises)
        for stage in self.stages[start:stop]:
            spec = stage.spec
            state = stage(state, wplus[:, spec.latent_slice], [noises[i] for i in spec.noise_indices])
        return state

    def synthesize(self, wplus: torch.Tensor, noises: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """w+ [B, n_latent, style_dim] -> image [B, 3, R, R] in about [-1, 1] (not clamped)."""
        self.check_latents(wplus)
        if noises is not None:
            self.check_noises(noises, wplus.shape[0])
        return self.image_from_state(self.run_stages((), wplus, noises))

    def fingerprint(self) -> str:
        """The identity of the weights, whatever file format they came from (cache keys use it)."""
        return state_fingerprint(self, self.family)

    def describe(self) -> dict:
        """A plain summary for `ilo info`: stages, shapes, latents and noise maps."""
        return {
            "family": self.family,
            "resolution": self.resolution,
            "z_dim": self.z_dim,
            "style_dim": self.style_dim,
            "n_latent": self.n_latent,
            "has_mapping": self.has_mapping,
            "noise_maps": [list(s) for s in self.noise_shapes],
            "stages": [
                {
                    "index": s.index,
                    "resolution": s.resolution,
                    "latents": list(range(s.latent_start, s.latent_start + s.latent_count)),
                    "noise_maps": list(s.noise_indices),
                    "state_in": [list(x) for x in s.state_in],
                    "state_out": [list(x) for x in s.state_out],
                }
                for s in self.specs
            ],
        }
