"""`ilo convert`: StyleGAN2 checkpoints between rosinality .pt and NVIDIA .pkl, verified lossless.

A .pkl written here holds NVIDIA's structure and weights but not NVIDIA's networks.py source
(their loader executes it, and its licence does not let this project ship it): it loads in ilo,
not in NVIDIA's `legacy.load_network_pkl`. Use the .pt format to share a model with other tools."""

from __future__ import annotations

import argparse
from pathlib import Path

from ilo.choices import SAVE_FORMATS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a StyleGAN2 checkpoint between formats",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", help="checkpoint to read (any supported format)")
    p.add_argument(
        "destination", type=Path, help="file to write (.pt: rosinality; .pkl: NVIDIA's layout, loads in ilo only)"
    )
    p.add_argument("--to", choices=sorted(SAVE_FORMATS), help="output format (default: from the suffix)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ilo.atomic import atomic_write_bytes
    from ilo.engine.runs.outputs import check_distinct, check_output_file
    from ilo.errors import CheckpointError
    from ilo.generators.checkpoints.files import (
        checkpoint_bytes,
        decode_checkpoint,
        format_for_path,
        generator_from_data,
        load_generator,
    )

    example = "model" + SAVE_FORMATS[args.to or "rosinality"]  # a checkpoint's name, not a picture's
    check_output_file(args.destination, "the destination", example)
    check_distinct([(args.destination, "the destination")], [Path(args.source)])
    fmt = args.to or format_for_path(args.destination)
    gen = load_generator(args.source)
    data = checkpoint_bytes(gen, fmt)
    # Check the written bytes read back to identical tensors before anything reaches the disk.
    before = gen.state_dict()
    after = generator_from_data(decode_checkpoint(data, "converted checkpoint"), "converted checkpoint").state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if changed:
        raise CheckpointError(f"conversion would change {len(changed)} tensors (first: {changed[0]}); nothing written")
    atomic_write_bytes(args.destination, data)
    print(f"wrote {args.destination} ({fmt}, {len(data) / 1e6:.1f} MB), verified lossless")
    return 0
