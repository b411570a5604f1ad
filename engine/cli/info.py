"""`ilo info`: stages, state shapes, latents and noise maps of a checkpoint."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="describe a generator's stages, latents and noise maps", description=__doc__)
    p.add_argument("model", help="'default' or a checkpoint path")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ilo.generators.checkpoints.files import load_generator

    gen = load_generator(args.model)
    d = gen.describe()
    d["fingerprint"] = gen.fingerprint()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"{args.model}: {d['family']} generator, {d['resolution']}x{d['resolution']}")
    print(
        f"  z: [{d['z_dim']}]   latents (w+): [{d['n_latent']}, {d['style_dim']}]   mapping network: {'yes' if d['has_mapping'] else 'no'}"
    )
    noise = ", ".join(f"{i}:{h}x{w}" for i, (h, w) in enumerate(d["noise_maps"])) or "none"
    print(f"  noise maps ({len(d['noise_maps'])}): {noise}")
    print(f"  fingerprint: {d['fingerprint'][:16]}")
    print(f"  {'stage':>5}  {'res':>5}  {'latents':<10} {'noise':<8} {'state in':<28} state out")
    for s in d["stages"]:
        shapes = lambda xs: " + ".join("x".join(map(str, x)) for x in xs) or "-"  # noqa: E731
        print(
            f"  {s['index']:>5}  {s['resolution']:>5}  {','.join(map(str, s['latents'])) or '-':<10} "
            f"{','.join(map(str, s['noise_maps'])) or '-':<8} {shapes(s['state_in']):<28} {shapes(s['state_out'])}"
        )
    return 0
