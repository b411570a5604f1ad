"""Regenerate examples/faces/: three faces the embedded DCGAN generates from held-out seeds and
the astronaut portrait (Eileen Collins, NASA, public domain; from scikit-image) cropped to 64px.

    python examples/make_faces.py     # needs scikit-image for the photograph
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ilo import load_generator
from ilo.engine.inputs.image_files import save_png, to_uint8

OUT = Path(__file__).parent / "faces"


def main() -> None:
    gen = load_generator("default")
    for seed in (90_100, 90_101, 90_102):
        with torch.no_grad():
            face = gen.synthesize(torch.randn(1, 1, gen.z_dim, generator=torch.Generator().manual_seed(seed)))
        save_png(OUT / f"generated_{seed}.png", to_uint8(face)[0])
    from skimage.data import astronaut

    crop = Image.fromarray(astronaut()[60:190, 160:290]).resize((64, 64), Image.LANCZOS)
    save_png(OUT / "astronaut.png", np.asarray(crop))


if __name__ == "__main__":
    main()
