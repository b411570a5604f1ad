"""Statistics of the Gaussianised latent: seeded, chunk-independent, cached, invertible."""

import pytest
import torch

from ilo import InputError
from ilo.generators.latent_stats import compute_latent_stats, latent_stats


def test_reproducible_and_chunk_independent(sg2):
    a = compute_latent_stats(sg2, samples=5000, seed=7, chunk=1000)
    b = compute_latent_stats(sg2, samples=5000, seed=7, chunk=1000)
    c = compute_latent_stats(sg2, samples=5000, seed=7, chunk=5000)
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)
    assert torch.allclose(a.mean, c.mean, atol=1e-5) and torch.allclose(a.std, c.std, atol=1e-5)
    d = compute_latent_stats(sg2, samples=5000, seed=8)
    assert not torch.equal(a.mean, d.mean)


def test_statistics_describe_the_mapping_output(sg2):
    stats = compute_latent_stats(sg2, samples=20000, seed=0)
    z = torch.randn(20000, sg2.z_dim, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        u = torch.nn.functional.leaky_relu(sg2.mapping(z), 5.0)
    assert torch.allclose(u.mean(0), stats.mean, atol=0.05 * stats.std.mean().item())
    assert torch.allclose(u.std(0), stats.std, rtol=0.05)


def test_to_w_and_back(sg2):
    stats = compute_latent_stats(sg2, samples=2000)
    z = torch.randn(3, sg2.n_latent, sg2.style_dim)
    assert torch.allclose(stats.from_w(stats.to_w(z)), z, atol=1e-4)


def test_cached_per_generator(sg2, tmp_path):
    first = latent_stats(sg2, samples=3000, cache=tmp_path)
    files = list((tmp_path / "latent_stats").iterdir())
    assert len(files) == 1 and sg2.fingerprint()[:32] in files[0].name
    files[0].write_bytes(b"damaged")  # a damaged entry is recomputed, not trusted
    again = latent_stats(sg2, samples=3000, cache=tmp_path)
    assert torch.equal(first.mean, again.mean) and torch.equal(first.std, again.std)


def test_dcgan_has_no_mapping(dcgan):
    with pytest.raises(InputError, match="no mapping network"):
        compute_latent_stats(dcgan, samples=10)
