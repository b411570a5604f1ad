"""`ilo serve`: an HTTP endpoint on Ray Serve that restores one picture per request, gathering
concurrent requests into batched solves. POST /restore with the degraded picture's bytes (or
JSON with base64 'image' and 'mask'; ?stream=rounds streams each round's image); GET /healthz;
with --ui, GET / is a page to restore with in a browser. Needs the [ray] extra."""

from __future__ import annotations

import argparse
import math

from ilo.engine.cli.solver_args import add_solver_arguments, restorer_settings
from ilo.engine.cli.task_args import add_task_arguments, task_from_args


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve restoration over HTTP on Ray Serve (batched, replicated)", description=__doc__
    )
    add_task_arguments(p, files=False)
    add_solver_arguments(p)
    h = p.add_argument_group("service")
    h.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    h.add_argument("--port", type=int, default=8000)
    h.add_argument("--replicas", type=int, default=1, help="replicas, each with one warmed engine")
    h.add_argument("--cpus-per-replica", type=float, default=1, help="CPUs (and torch threads) per replica")
    h.add_argument("--gpus-per-replica", type=float, default=0, help="GPUs per replica, e.g. 1 with --device cuda")
    h.add_argument("--max-batch-size", type=int, default=8, help="requests solved together at most (1 = no batching)")
    h.add_argument(
        "--batch-wait-ms",
        type=float,
        default=200,
        help="how long a request waits for others to share its solve (default 200; 0 = only those already waiting)",
    )
    h.add_argument("--max-queued", type=int, default=64, help="requests waiting beyond those in flight; more get 503")
    h.add_argument("--timeout-s", type=float, default=300, help="per request, queueing included; later gets 408")
    h.add_argument("--max-body-mb", type=float, default=16, help="larger request bodies get 413")
    h.add_argument(
        "--ray",
        default="local",
        metavar="local|auto|ADDRESS",
        help="'local' (default) = a Ray started here; 'auto' or an address = a running cluster",
    )
    h.add_argument("--quiet", action="store_true", help="no access log")
    h.add_argument(
        "--ui", action="store_true", help="serve a page to restore with at / (upload, draw the hole, watch the rounds)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ilo.engine.fleet.ray_batch import import_ray
    from ilo.engine.runtimes.backends import check_device
    from ilo.errors import InputError

    import_ray()
    if args.gpus_per_replica and not args.device.startswith("cuda"):
        raise InputError("--gpus-per-replica gives replicas GPUs: run them there with --device cuda")
    if not args.gpus_per_replica:  # GPU replicas check their own devices (this machine may have none)
        check_device(args.device)
    from ilo.engine.api.restorer import Restorer
    from ilo.engine.inputs.measurements import InputSpec, MeasurementReader
    from ilo.engine.fleet.ray_batch import resolved
    from ilo.engine.fleet.service import ServiceConfig, serve_forever
    from ilo.generators.checkpoints.files import load_generator

    task = task_from_args(args)
    if task.kind.vector_measurements:
        raise InputError(
            "ilo serve takes pictures; compressed-sensing measurements are vectors: use ilo restore "
            "or the Python API (ilo.Restorer) for --task cs"
        )
    # everything a replica would refuse at start-up is refused here, in one line, before Ray starts
    gen = load_generator(args.model)
    settings = restorer_settings(args, task, gen)
    MeasurementReader(InputSpec.for_settings(settings), gen.resolution)
    if task.has_built_in_mask:
        task.built_in_mask(gen.resolution, "check")
    model = resolved(args.model) if args.model != "default" else "default"
    # made here, not warmed: the encoder and schedule are decided once (each replica runs these
    # settings, or refuses where its node lacks the encoder), and what cannot fit is refused
    restorer = Restorer(settings=settings, warm=False, quiet=args.quiet)
    settings = restorer.settings
    if not args.gpus_per_replica:  # a model whose step cannot fit here is refused before Ray starts
        restorer.preflight()
    settings.model = str(model)  # replicas load it from its path (a cluster's nodes see the same path)
    if not (math.isfinite(args.max_body_mb) and args.max_body_mb > 0):  # before int() of it fails on NaN or inf
        raise InputError(f"--max-body-mb must be a positive number, got {args.max_body_mb}")
    config = ServiceConfig(
        host=args.host,
        port=args.port,
        replicas=args.replicas,
        max_batch_size=args.max_batch_size,
        batch_wait_s=args.batch_wait_ms / 1000,
        max_queued=args.max_queued,
        timeout_s=args.timeout_s,
        max_body_bytes=int(args.max_body_mb * (1 << 20)),
        cpus_per_replica=args.cpus_per_replica,
        gpus_per_replica=args.gpus_per_replica,
        ui=args.ui,
    )
    serve_forever(settings, config, args.ray, args.quiet)
    return 0
