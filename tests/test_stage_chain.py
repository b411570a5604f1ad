"""Running stages k..n from the state of stages 0..k-1 reproduces the full forward exactly."""

import pytest
import torch
from conftest import random_stylegan2

from ilo.generators.stylegan2 import StyleGAN2Config, config_f


def _check_chain(gen, wplus, noises):
    with torch.no_grad():
        full = gen.synthesize(wplus, noises)
        for k in range(len(gen.stages) + 1):
            head = gen.run_stages((), wplus, noises, 0, k)
            spec_shapes = gen.specs[k].state_in if k < len(gen.stages) else gen.specs[-1].state_out
            assert [tuple(t.shape[1:]) for t in head] == list(spec_shapes)
            tail = gen.run_stages(head, wplus, noises, k)
            assert torch.equal(gen.image_from_state(tail), full), f"split at stage {k}"


def test_stylegan2_fixture_chain(sg2):
    g = torch.Generator().manual_seed(1)
    wplus = torch.randn(3, sg2.n_latent, sg2.style_dim, generator=g)
    noises = [torch.randn(3, 1, h, w, generator=g) for h, w in sg2.noise_shapes]
    _check_chain(sg2, wplus, noises)


def test_dcgan_chain(dcgan):
    wplus = torch.randn(2, 1, dcgan.style_dim, generator=torch.Generator().manual_seed(2))
    _check_chain(dcgan, wplus, [])


@pytest.mark.parametrize("resolution", [8, 16, 64])
def test_random_stylegan2_chain_every_resolution(resolution):
    config = config_f(resolution, w_dim=16, mapping_layers=2, channel_divisor=64)
    gen = random_stylegan2(config)
    wplus = torch.randn(2, gen.n_latent, gen.style_dim)
    _check_chain(gen, wplus, gen.stored_noises())
    assert gen.synthesize(wplus).shape == (2, 3, resolution, resolution)


def test_every_supported_resolution_builds():
    for log2 in range(3, 11):
        config = config_f(2**log2, w_dim=8, mapping_layers=1, channel_divisor=64)
        assert len(config.channels) == log2 - 1 and config.n_latent == 2 * log2 - 2


def test_stage_latent_and_noise_indices_follow_stylegan2():
    config = config_f(1024, channel_divisor=64)
    specs = [s for s in random_stylegan2(config).specs]
    assert config.n_latent == 18 and config.n_noise == 17
    assert (specs[0].latent_start, specs[0].latent_count, specs[0].noise_start, specs[0].noise_count) == (0, 2, 0, 1)
    for k, s in enumerate(specs[1:], start=1):
        assert (s.latent_start, s.latent_count, s.noise_start, s.noise_count) == (2 * k - 1, 3, 2 * k - 1, 2)
    assert specs[-1].latent_slice.stop == 18 and specs[-1].noise_indices.stop == 17


def test_invalid_resolution_refused():
    with pytest.raises(ValueError):
        StyleGAN2Config(48, (8, 8), (8, 8, 8, 8)).validate()
