"""The layer shapes of a StyleGAN2 config-f generator, for the GPU checks and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

from ilo.generators.stylegan2 import config_f


@dataclass(frozen=True)
class LayerShape:
    kind: str  # "conv" (3x3), "up" (transposed 3x3 + blur), "rgb" (1x1 to RGB)
    cin: int
    cout: int
    res: int  # input resolution

    @property
    def out_res(self) -> int:
        return 2 * self.res if self.kind == "up" else self.res

    @property
    def name(self) -> str:
        return f"{self.kind} {self.cin}->{self.cout} @{self.res}px"

    def macs_per_image(self) -> int:
        """Multiply-adds of the convolution (the transposed conv counts its input grid)."""
        taps = 1 if self.kind == "rgb" else 9
        return self.cin * self.cout * taps * self.res * self.res


def config_f_layers(resolution: int = 1024) -> list[LayerShape]:
    """Every distinct modulated layer of config-f up to `resolution`: the 4px conv, then per
    block the up conv, the conv and the to-RGB, and the 4px to-RGB."""
    channels = config_f(resolution).channels
    layers = [LayerShape("conv", channels[0], channels[0], 4), LayerShape("rgb", channels[0], 3, 4)]
    for k in range(1, len(channels)):
        res = 4 * 2**k
        layers += [
            LayerShape("up", channels[k - 1], channels[k], res // 2),
            LayerShape("conv", channels[k], channels[k], res),
            LayerShape("rgb", channels[k], 3, res),
        ]
    return layers
