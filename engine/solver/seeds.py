"""Where a solve's random numbers come from: each image's random starts, its eq. 4 noise streams
and its ensemble members' seeds, all from the image's own seed, so an image's result does not
depend on what else is in its batch."""

from __future__ import annotations

import hashlib

import torch

from ilo.engine.solver.generator_view import GeneratorView


def initial_z(gen: GeneratorView, seeds: list[int], restart: int) -> torch.Tensor:
    """Random start `restart` of each image: [images, rows, style_dim], drawn on the CPU (the same
    starts on any device)."""
    rows = [
        torch.randn(
            gen.n_latent if gen.has_mapping else 1,
            gen.style_dim,
            generator=torch.Generator().manual_seed(s * 1009 + restart),
        )
        for s in seeds
    ]
    z = torch.stack(rows)
    if gen.has_mapping:  # every layer starts from the same latent, as a mapped z would
        z = z[:, :1].expand_as(z).clone()
    return z


def noise_stream(seed: int, start: int | None = None) -> torch.Generator:
    """Eq. 4's noise for an image (its later rounds) or for one of its round-0 starts."""
    return torch.Generator().manual_seed(seed * 7919 + 17 + (0 if start is None else 1_000_003 * (start + 1)))


def member_seed(seed: int, member: int) -> int:
    """The seed of an image's ensemble member; member 0 keeps the image's own (its plain solve).
    A hash, not a mix like the one that makes image seeds from `--seed`: with the same mix,
    member m at --seed 0 would be the plain solve at --seed m, and the ensembles of nearby
    seeds would share members."""
    if member == 0:
        return seed
    digest = hashlib.blake2b(f"ensemble member {member} of seed {seed}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF
