"""The StyleGAN2 reference matches what rosinality's implementation produced (tests/fixtures/README.md)."""

import pytest
import torch

from ilo import load_generator, save_generator

TOL = 1e-4


def _renders(gen, golden):
    with torch.no_grad():
        return {
            "w": gen.mapping(golden["z"]),
            "img_z": gen.synthesize(gen.latents_from_z(golden["z"])),
            "img_trunc": gen.synthesize(gen.latents_from_z(golden["z"], golden["truncation"])),
            "img_wplus": gen.synthesize(golden["wplus"], golden["noises"]),
        }


@pytest.mark.parametrize("key", ["w", "img_z", "img_trunc", "img_wplus"])
def test_rosinality_checkpoint_matches_golden(sg2, golden, key):
    out = _renders(sg2, golden)[key]
    assert out.shape == golden[key].shape
    assert (out - golden[key]).abs().max().item() <= TOL


def test_config_inferred_from_shapes(sg2):
    assert sg2.resolution == 32 and sg2.style_dim == 64 and sg2.z_dim == 64
    assert sg2.n_latent == 8 and len(sg2.mapping_network.layers) == 4
    assert sg2.config.channels == (32, 32, 32, 32)


@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
def test_matches_golden_through_written_checkpoints(sg2, golden, tmp_path, suffix):
    path = tmp_path / f"g{suffix}"
    save_generator(sg2, path)
    out = _renders(load_generator(path), golden)
    for key in ("img_z", "img_trunc", "img_wplus"):
        assert (out[key] - golden[key]).abs().max().item() <= TOL, key
