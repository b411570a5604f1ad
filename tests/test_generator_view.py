"""The solver's generator view: the torch generators and the engine implement every member of
the Protocol, and a generator lacking one is refused by `solve` instead of being probed."""

from __future__ import annotations

import pytest
import torch

from ilo.engine.problems.operators import Inpainting
from ilo.engine.runtimes.bridge import EngineGenerator
from ilo.engine.solver.generator_view import GeneratorView, missing_members
from ilo.engine.solver.ilo_solver import ILOConfig, solve
from ilo.generators.dcgan import DCGANGenerator
from ilo.generators.staged import StagedGenerator
from ilo.generators.stylegan2 import StyleGAN2Generator

MEMBERS = [name for name in vars(GeneratorView) if not name.startswith("_")]


def _static_views(
    torch_model: StagedGenerator, sg2: StyleGAN2Generator, dcgan: DCGANGenerator, engine: EngineGenerator
) -> list[GeneratorView]:
    """Never called: mypy and pyright reject this assignment if a class drifts from the view."""
    return [torch_model, sg2, dcgan, engine]


def test_the_view_lists_what_the_solver_uses():
    assert MEMBERS == [
        "resolution",
        "n_latent",
        "style_dim",
        "has_mapping",
        "specs",
        "stored_noises",
        "mapping",
        "latent_stats",
        "gaussian_to_w",
        "run_stages",
        "image_from_state",
        "synthesize",
        "fused_step",
    ]


@pytest.mark.parametrize("family", ["dcgan", "sg2"])
def test_torch_generators_implement_every_member(request, family):
    gen = request.getfixturevalue(family)
    assert missing_members(gen) == [] and isinstance(gen, GeneratorView)
    assert gen.fused_step(0, Inpainting.centre_box(gen.resolution, 1), 1) is None  # no fused path in torch


def test_engine_class_defines_every_member_itself():
    """On the class, not through attribute pass-through to the torch model."""
    assert not hasattr(EngineGenerator, "__getattr__")
    assert [name for name in MEMBERS if name not in vars(EngineGenerator)] == []


def test_engine_implements_every_member_and_nothing_more_of_the_torch_model(dcgan):
    engine = EngineGenerator(dcgan, "torch")  # runs the graph functions: nothing exported
    assert missing_members(engine) == [] and isinstance(engine, GeneratorView)
    assert (engine.resolution, engine.n_latent, engine.style_dim) == (dcgan.resolution, dcgan.n_latent, dcgan.style_dim)
    assert engine.specs == dcgan.specs and engine.has_mapping is False
    with pytest.raises(AttributeError):
        engine.z_dim  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue]  (not in the view: ask engine.torch_generator)


def test_gaussian_to_w_applies_the_latent_statistics(sg2):
    stats = sg2.latent_stats()
    z = torch.randn(2, sg2.n_latent, sg2.style_dim, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sg2.gaussian_to_w(z, stats), stats.to_w(z))


class _Partial:
    """Every member of the view but `fused_step`, delegated to a torch generator."""

    def __init__(self, gen: StagedGenerator):
        for name in MEMBERS:
            if name != "fused_step":
                setattr(self, name, getattr(gen, name))


def test_a_generator_lacking_a_member_is_refused_not_probed(dcgan):
    partial = _Partial(dcgan)
    assert missing_members(partial) == ["fused_step"] and not isinstance(partial, GeneratorView)
    op = Inpainting.centre_box(dcgan.resolution, 1)
    y = op.A(torch.zeros(1, 3, dcgan.resolution, dcgan.resolution))
    with pytest.raises(TypeError, match="_Partial is not a generator the solver can run: it lacks fused_step"):
        solve(y, op, partial, ILOConfig(steps=[1], restarts=1))  # type: ignore[arg-type]  # pyright: ignore[reportArgumentType]
