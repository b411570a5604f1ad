"""Our PSNR, SSIM and LPIPS against the references the field reports with: scikit-image,
DeepInverse and the `lpips` package, on the same images, to 1e-4."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from deepinv.loss.metric import PSNR as DeepinvPSNR
from deepinv.loss.metric import SSIM as DeepinvSSIM
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ilo.engine.problems.losses import LPIPS, LPIPS_BACKBONES, hub_checkpoint_dir
from ilo.engine.problems.metrics import psnr, restoration_metrics, ssim

TOLERANCE = 1e-4


def noisy_pairs(n: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random [0, 1] RGB images and noisy copies of them, one noise level per image."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.rand(n, 3, height, width, generator=g)
    sigma = torch.linspace(0.02, 0.3, n).view(n, 1, 1, 1)
    return (truth + sigma * torch.randn(truth.shape, generator=g)).clamp(0, 1), truth


def structured_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth ramp under a sinusoidal texture, and a blurred, brightened copy: errors that are
    spatially correlated, unlike noise."""
    v, u = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    channels = [
        0.3 + 0.4 * u * v + 0.2 * torch.sin(2 * torch.pi * (4 * u + k / 3)) * torch.cos(6 * torch.pi * v)
        for k in range(3)
    ]
    truth = torch.stack(channels)[None].clamp(0, 1)
    blurred = F.avg_pool2d(F.pad(truth, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return (blurred + 0.03).clamp(0, 1), truth


PAIRS = {
    "random_64x64": lambda: noisy_pairs(4, 64, 64, seed=0),
    "structured_64x64": structured_pair,
    "random_32x48": lambda: noisy_pairs(3, 32, 48, seed=1),
    "random_48x32": lambda: noisy_pairs(2, 48, 32, seed=2),
    "random_11x17": lambda: noisy_pairs(2, 11, 17, seed=3),  # the smallest an 11x11 window fits
}


@pytest.fixture(params=list(PAIRS), ids=list(PAIRS))
def pair(request):
    return PAIRS[request.param]()


def to_hwc(images: torch.Tensor) -> list[np.ndarray]:
    return [x.permute(1, 2, 0).double().numpy() for x in images]


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    # Wang et al. 2004 as scikit-image documents it: an 11x11 Gaussian window of sigma 1.5
    # (truncate 3.5 -> radius 5), population covariance, the border where the window does not
    # fit left out, the mean over channels.
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2
    )


def test_psnr_agrees_with_skimage(pair):
    restored, truth = pair
    expected = [peak_signal_noise_ratio(t, r, data_range=1.0) for r, t in zip(to_hwc(restored), to_hwc(truth))]
    np.testing.assert_allclose(psnr(restored, truth).numpy(), expected, rtol=0, atol=TOLERANCE)


def test_ssim_agrees_with_skimage(pair):
    restored, truth = pair
    expected = [skimage_ssim(r, t) for r, t in zip(to_hwc(restored), to_hwc(truth))]
    np.testing.assert_allclose(ssim(restored, truth).numpy(), expected, rtol=0, atol=TOLERANCE)


def test_psnr_agrees_with_deepinv(pair):
    # DeepInverse's PSNR is -10 log10(MSE / range^2 + 1e-8): the epsilon keeps identical images
    # finite (80 dB) but shifts every value by 10 log10(1 + 1e-8 / MSE) dB, up to 4e-4 dB at
    # 40 dB. So its value is compared with ours carried through the same epsilon, and, where the
    # shift is below the tolerance (PSNR under 33 dB), with ours as it is.
    restored, truth = pair
    theirs = DeepinvPSNR(max_pixel=1.0, min_pixel=0.0)(restored, truth).double()
    ours = psnr(restored, truth).double()
    with_epsilon = -10 * torch.log10(10 ** (-ours / 10) + 1e-8)
    torch.testing.assert_close(theirs, with_epsilon, rtol=0, atol=TOLERANCE)
    low = ours < 33
    torch.testing.assert_close(theirs[low], ours[low], rtol=0, atol=TOLERANCE)


def test_ssim_agrees_with_deepinv_given_its_reflected_border(pair):
    # DeepInverse's SSIM (torchmetrics 1.x underneath) reflects the image by the window's radius
    # and averages the SSIM map over every pixel; Wang et al., scikit-image and we average only
    # where the window fits, so the two differ by up to 1e-2 on small images. Ours on the same
    # reflected image is its definition exactly; that ours is Wang's is the scikit-image test.
    restored, truth = pair
    theirs = DeepinvSSIM(max_pixel=1.0, min_pixel=0.0)(restored, truth)

    def reflected(x):
        return F.pad(x, (5, 5, 5, 5), mode="reflect")

    torch.testing.assert_close(theirs, ssim(reflected(restored), reflected(truth)), rtol=0, atol=TOLERANCE)


def test_masked_psnr_agrees_with_numpy_over_the_region():
    restored, truth = noisy_pairs(3, 32, 48, seed=4)
    g = torch.Generator().manual_seed(5)
    regions = torch.rand(3, 1, 32, 48, generator=g) < torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1, 1)
    per_image = psnr(restored, truth, regions.float())
    shared = psnr(restored, truth, regions[:1].float())  # a [1, 1, H, W] weight serves every image
    for i in range(3):
        err = (restored[i].double().numpy() - truth[i].double().numpy()) ** 2
        for got, region in [(per_image[i], regions[i, 0]), (shared[i], regions[0, 0])]:
            expected = 10 * np.log10(1.0 / err[:, region.numpy()].mean())
            assert abs(got.item() - expected) < TOLERANCE


def test_restoration_metrics_agree_with_skimage_on_the_saved_pixels():
    # restoration_metrics takes the generator's [-1, 1] range and clips as a saved PNG would.
    restored, truth = noisy_pairs(2, 64, 64, seed=6)
    restored_gen, truth_gen = restored * 2.2 - 1.1, truth * 2 - 1  # some pixels past [-1, 1]
    observed = torch.ones(1, 1, 64, 64)
    observed[..., 16:48, 20:44] = 0
    m = restoration_metrics(restored_gen, truth_gen, observed)
    hole = observed[0, 0].numpy() == 0
    for i, (r, t) in enumerate(zip(to_hwc(((restored_gen + 1) / 2).clamp(0, 1)), to_hwc((truth_gen + 1) / 2))):
        assert abs(m["psnr"][i].item() - peak_signal_noise_ratio(t, r, data_range=1.0)) < TOLERANCE
        assert abs(m["ssim"][i].item() - skimage_ssim(r, t)) < TOLERANCE
        assert abs(m["psnr_hole"][i].item() - peak_signal_noise_ratio(t[hole], r[hole], data_range=1.0)) < TOLERANCE
        assert abs(m["mse_observed"][i].item() - ((r - t)[~hole] ** 2).mean()) < 1e-7


# --- LPIPS --------------------------------------------------------------------------------------


def lpips_package_model(net: str):
    """The `lpips` package's own model; torchvision reads the backbone from the torch hub cache
    (the file is there, so nothing is downloaded)."""
    import warnings

    import lpips

    with warnings.catch_warnings():  # torchvision's deprecated `pretrained`, inside lpips
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net=net, pretrained=True, verbose=False).eval()


def assert_lpips_agrees_with_the_package(net: str) -> None:
    ours, theirs = LPIPS(net), lpips_package_model(net)
    for name in ["random_64x64", "structured_64x64", "random_32x48"]:
        restored, truth = (x * 2 - 1 for x in PAIRS[name]())  # LPIPS takes [-1, 1]
        with torch.no_grad():
            expected = theirs(restored, truth).flatten()
            # relative as well: with a random backbone the distances are ~1e-3, below an absolute 1e-4's reach
            torch.testing.assert_close(ours(restored, truth), expected, rtol=TOLERANCE, atol=1e-6)
            assert (expected > 0).all()


@pytest.mark.parametrize("net", sorted(LPIPS_BACKBONES))
def test_lpips_agrees_with_the_lpips_package(net):
    backbone = hub_checkpoint_dir() / LPIPS_BACKBONES[net]
    if not backbone.is_file():
        pytest.skip(
            f"LPIPS '{net}' backbone {LPIPS_BACKBONES[net]} is not on this machine: put torchvision's "
            f"ImageNet file at {backbone} (the torch hub cache; $TORCH_HOME/hub/checkpoints)"
        )
    assert_lpips_agrees_with_the_package(net)


def test_lpips_loads_a_backbone_as_the_lpips_package_does(tmp_path, monkeypatch):
    # Runs where the real weights are absent too: any torchvision AlexNet file in the hub cache
    # (here a seeded random one) must give the package's distances, so the way we map the file
    # into lpips' layers is checked whatever the weights are.
    import torchvision

    torch.manual_seed(0)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), hub / LPIPS_BACKBONES["alex"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert hub_checkpoint_dir() == hub  # both models read this folder
    assert_lpips_agrees_with_the_package("alex")
