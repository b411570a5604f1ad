"""`ilo sample`: render random or given latents to a PNG grid and/or an exact float32 array."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from ilo.choices import INPUT_SPACES
from ilo.engine.cli.values import seed
from ilo.errors import InputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="render samples of a generator", description=__doc__)
    p.add_argument("--model", default="default", help="'default' (embedded 64px face DCGAN) or a checkpoint path")
    p.add_argument("--n", type=int, default=16, help="number of random samples (ignored with --latents)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the random latents")
    p.add_argument("--latents", type=Path, help=".npy/.pt holding z [N, z_dim] (or w+ with --input-space wplus)")
    p.add_argument("--input-space", choices=INPUT_SPACES, default="z", help="what --latents holds (default z)")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi toward the average latent (z input)")
    p.add_argument("--noises", type=Path, help=".npz with noise_0 ... (default: the checkpoint's stored noise maps)")
    p.add_argument("-o", "--output", type=Path, help="grid PNG to write")
    p.add_argument("--columns", type=int, help="grid columns (default: about square)")
    p.add_argument("--save-array", type=Path, help="write the images as float32 NCHW .npy, unclamped")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from ilo.engine.inputs.latent_files import read_noises
    from ilo.engine.runs.outputs import check_distinct, check_output_file
    from ilo.generators.checkpoints.files import load_generator

    outputs = [(args.output, "-o"), (args.save_array, "--save-array")]
    for path, what in outputs:
        if path is not None:
            check_output_file(path, what)
    model = Path(args.model) if args.model != "default" else None
    check_distinct(outputs, [args.latents, args.noises, model])
    gen = load_generator(args.model)
    latents = read_or_draw_latents(gen, args)
    n = latents.shape[0]
    noises = read_noises(args.noises, gen, n) if args.noises else None
    images = render(gen, latents, noises, args)
    write(images, args)
    written = [str(p) for p in (args.output, args.save_array) if p is not None]
    print(f"wrote {n} sample(s) of {gen.family} {gen.resolution}px to {', '.join(written)}")
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """Refusals known from the arguments alone, before torch loads."""
    if args.output is None and args.save_array is None:
        raise InputError("nothing to write: give -o GRID.png and/or --save-array OUT.npy")
    if args.batch_size < 1 or (args.latents is None and args.n < 1):
        raise InputError("--n and --batch-size must be at least 1")
    if args.columns is not None and args.columns < 1:
        raise InputError("--columns must be at least 1")


def given_wplus(args: argparse.Namespace) -> bool:
    return args.input_space == "wplus" and args.latents is not None


def read_or_draw_latents(gen, args: argparse.Namespace):
    """--latents as read, or --n seeded z draws; refused where the outputs would not fit in memory."""
    import torch

    from ilo.engine.inputs.latent_files import read_latents
    from ilo.engine.runtimes.sample_memory import check_sample_fits

    fits = partial(
        check_sample_fits,
        gen=gen,
        columns=args.columns,
        grid=args.output is not None,
        array=args.save_array is not None,
    )
    if args.latents is not None:
        latents = read_latents(args.latents, gen, args.input_space)
        fits(latents.shape[0], flag=f"--latents {args.latents.name}:")
    else:
        fits(args.n, flag="--n")
        latents = torch.randn(args.n, gen.z_dim, generator=torch.Generator().manual_seed(args.seed))
    if given_wplus(args) and args.truncation != 1.0:
        raise InputError("--truncation applies to z latents, not to --input-space wplus")
    return latents


def render(gen, latents, noises, args: argparse.Namespace):
    """The images of `latents` in batches of --batch-size, refused whole if any is not finite."""
    import torch

    from ilo.engine.runs.progress import Progress

    n = latents.shape[0]
    images = []
    progress = Progress(n, "sample", enabled=not args.quiet)
    with torch.no_grad():
        for start in range(0, n, args.batch_size):
            chunk = latents[start : start + args.batch_size]
            wplus = chunk if given_wplus(args) else gen.latents_from_z(chunk, args.truncation)
            chunk_noises = (
                None if noises is None else [x if x.shape[0] == 1 else x[start : start + len(chunk)] for x in noises]
            )
            chunk_images = gen.synthesize(wplus, chunk_noises)
            if not torch.isfinite(chunk_images).all():  # e.g. a --truncation far from 1 overflows w
                cause = f"--truncation {args.truncation}" if args.truncation != 1.0 else "latents"
                raise InputError(
                    f"samples {start}..{start + len(chunk) - 1} hold NaN or inf values, so nothing was written: "
                    f"{cause} far outside the generator's range?"
                )
            images.append(chunk_images)
            progress.advance(len(chunk))
    return torch.cat(images)


def write(images, args: argparse.Namespace) -> None:
    """--save-array as exact float32 NCHW, -o as a PNG grid."""
    import numpy as np

    from ilo.atomic import atomic_path
    from ilo.engine.inputs.image_writing import make_grid, save_png, to_uint8

    if args.save_array is not None:
        with atomic_path(args.save_array) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, images.numpy().astype(np.float32))
    if args.output is not None:
        save_png(args.output, make_grid(to_uint8(images), args.columns))
