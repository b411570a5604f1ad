"""Loss terms of the ILO objective, each per image ([B] out) so a batch never mixes images.

dist(f(G), y) + R(z): the measurement MSE is each operator's own `data_fit` (inpainting counts
observed pixels only) and its `perceptual_target` the eq. 3 fill; here are LPIPS, the geodesic
"geocross" regulariser over the latent vectors, and eq. 4's fresh noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ilo.engine.problems.operators import Operator
from ilo.errors import IloError


def geocross(latents: torch.Tensor) -> torch.Tensor:
    """Geodesic spread of each image's latent vectors: latents [B, L, D] -> [B].

    D_ij = 2·atan2(|x_i − x_j|, |x_i + x_j|), R = (D/8)·mean_ij D_ij² (D = 512 gives PULSE's
    512/8). Applied per image over all L vectors (the paper's code slices the batch axis).
    """
    a, b = latents[:, :, None, :], latents[:, None, :, :]
    angle = 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))
    return angle.square().mean(dim=(1, 2)) * latents.shape[-1] / 8


def measurement_noise(
    shape: torch.Size, op: Operator, generators: list[torch.Generator] | None = None, device=None
) -> torch.Tensor | None:
    """Eq. 4's fresh noise N(0, σ²) of an image's shape (σ known, per image), or None when σ
    is zero. With one generator per image, an image's noise does not depend on its batch."""
    std = op.noise_std(shape[0], device)
    if float(std.abs().max()) == 0:
        return None
    if generators is None:
        noise = torch.randn(shape)
    else:
        noise = torch.stack([torch.randn(shape[1:], generator=g) for g in generators])
    return std * noise.to(device)


def add_measurement_noise(
    image: torch.Tensor, op: Operator, generators: list[torch.Generator] | None = None
) -> torch.Tensor:
    """Eq. 4: G + N(0, σ²) with fresh noise at every evaluation."""
    noise = measurement_noise(image.shape, op, generators, image.device)
    return image if noise is None else image + noise.to(image.dtype)


# --- LPIPS ------------------------------------------------------------------------------------

# Backbone files torchvision publishes, as the torch hub cache names them.
LPIPS_BACKBONES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


def hub_checkpoint_dir() -> Path:
    torch_home = (
        os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "torch"
    )
    return Path(torch_home) / "hub" / "checkpoints"


def find_backbone(net: str, backbone: str | Path | None) -> Path:
    if net not in LPIPS_BACKBONES:
        raise IloError(f"unknown LPIPS network '{net}'; choose from {sorted(LPIPS_BACKBONES)}")
    path = Path(backbone).expanduser() if backbone else hub_checkpoint_dir() / LPIPS_BACKBONES[net]
    if not path.is_file():
        raise IloError(
            f"LPIPS '{net}' needs the torchvision ImageNet backbone {LPIPS_BACKBONES[net]}, not found at {path}; "
            f"copy it there (or pass its path with --lpips-backbone); nothing is downloaded at run time"
        )
    return path


class LPIPS(torch.nn.Module):
    """LPIPS distance per image ([B] out) from the `lpips` package, with the backbone loaded
    from a local file. `backbone='random'` builds a seeded random backbone (tests only)."""

    def __init__(self, net: str = "vgg", backbone: str | Path | None = None, seed: int = 0):
        super().__init__()
        import warnings

        import lpips

        self.net = net
        path = None if backbone == "random" else find_backbone(net, backbone)
        torch.manual_seed(seed)
        with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained`
            warnings.simplefilter("ignore", UserWarning)
            # pnet_rand: build the backbone without torchvision's download; weights come next.
            self.model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        if path is not None:
            self._load_backbone(path)
        self.model.eval().requires_grad_(False)

    def _load_backbone(self, path: Path) -> None:
        from ilo.generators.checkpoints.files import read_checkpoint

        state = read_checkpoint(path)  # never runs code from the file, and says why it refuses one
        if not isinstance(state, dict):
            raise IloError(
                f"{path}: not a torchvision backbone for LPIPS (holds a {type(state).__name__}, not a state dict)"
            )
        target = self.model.net
        slices = {}
        for name, module in target.named_modules():
            parts = name.split(".")
            if len(parts) == 2 and parts[0].startswith("slice"):
                slices[parts[1]] = name
        mapped = {}
        for key, value in state.items():
            parts = key.split(".")
            if parts[0] == "features" and parts[1] in slices:
                mapped[f"{slices[parts[1]]}.{parts[2]}"] = value
        missing = set(target.state_dict()) - set(mapped)
        if missing:
            raise IloError(f"{path}: not a torchvision backbone for LPIPS (missing {sorted(missing)[:3]})")
        target.load_state_dict(mapped, strict=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.model(a, b, normalize=False).reshape(a.shape[0])

    def target_features(self, target: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The unit-normalised backbone features of a target, computed once per measurement."""
        import lpips

        outs = self.model.net.forward(self.model.scaling_layer(target))
        return tuple(lpips.normalize_tensor(o) for o in outs)

    def distance_to_features(self, image: torch.Tensor, features: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """LPIPS between `image` and a target given by its `target_features` ([B] out); equals
        `forward(image, target)` (the exported LPIPS graphs are traced from this)."""
        mine = self.target_features(image)
        total = 0
        for lin, a, b in zip(self.model.lins, mine, features):
            total = total + lin((a - b).square()).mean(dim=(2, 3), keepdim=True)
        return total.reshape(image.shape[0])
