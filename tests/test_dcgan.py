"""The embedded default DCGAN is the gan-face-generate generator, unchanged, split into stages."""

import torch
from torch import nn

from ilo.generators.checkpoints.files import default_weights_path


def _tutorial_generator() -> nn.Sequential:
    # The PyTorch DCGAN-tutorial layout (nz=100, ngf=64) the upstream package trains.
    def block(c_in, c_out, stride, pad):
        return [nn.ConvTranspose2d(c_in, c_out, 4, stride, pad, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]

    layers = block(100, 512, 1, 0) + block(512, 256, 2, 1) + block(256, 128, 2, 1) + block(128, 64, 2, 1)
    return nn.Sequential(*layers, nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh())


def test_default_matches_upstream_architecture(dcgan):
    from safetensors.torch import load_file

    reference = nn.Module()
    reference.main = _tutorial_generator()
    reference.load_state_dict(load_file(str(default_weights_path())))
    reference.eval()
    z = torch.randn(5, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference.main(z[:, :, None, None])
        ours = dcgan.synthesize(z[:, None, :])
    assert ours.shape == (5, 3, 64, 64)
    assert (ours - expected).abs().max().item() <= 1e-5


def test_batchnorm_stays_in_eval_mode(dcgan):
    z = torch.randn(4, 1, 100, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = dcgan.synthesize(z)
        dcgan.train()
        after = dcgan.synthesize(z)
    assert not dcgan.training and torch.equal(before, after)
    # In eval mode an image does not depend on the rest of its batch.
    with torch.no_grad():
        assert torch.allclose(dcgan.synthesize(z[:1]), before[:1], atol=1e-6)


def test_default_describes_five_stages(dcgan):
    d = dcgan.describe()
    assert d["resolution"] == 64 and d["z_dim"] == 100 and d["n_latent"] == 1
    assert [s["state_out"] for s in d["stages"]][-1] == [[3, 64, 64]]
    assert len(d["stages"]) == 5 and d["noise_maps"] == []
