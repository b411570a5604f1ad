"""`ilo serve`: an online restoration endpoint on Ray Serve (the HTTP API: `http_api`).

Each replica holds one warmed `ilo.Restorer` and is ready (routable) only once warm-up is done.
Concurrent requests are gathered into one solve by `serve.batch` (at most `max_batch_size`,
waiting at most `batch_wait_s` for company). A request is decoded and checked before it joins a
batch, so a bad one is refused alone with a 4xx and never spoils its neighbours or the replica.
Overload is refused with 503 once `max_queued` requests wait (Serve's bounded queue), and a
request that outlives `timeout_s` gets 408, so memory stays bounded whatever arrives.

A request may ask for its rounds as they go (`round_stream`); it still joins the same batches.
With `ui`, GET / serves the page to restore with (`web_page`), a client of the same /restore.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import sys
from dataclasses import dataclass

import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ilo.engine.inputs.measurements import Prepared
from ilo.engine.api.restorer import Restored, Restorer, RestorerSettings, restored_images
from ilo.engine.fleet.http_api import (
    STREAM_TYPE,
    HttpError,
    check_length,
    check_route,
    error_body,
    parse_restore,
    restored_json,
)
from ilo.engine.fleet.ray_batch import connect, import_ray
from ilo.engine.fleet.round_stream import Job, RoundListener, event_line, round_reports, streamed
from ilo.engine.fleet.web_page import page_html
from ilo.engine.solver.config import last_round
from ilo.errors import IloError, InputError

log = logging.getLogger("ilo.serve")
APP_NAME = "ilo"


@dataclass
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    max_batch_size: int = 8  # 1 = no batching
    # how long a request waits for others to share its solve: a few percent of a solve (seconds),
    # long enough that clients answered together and sending again together land in one batch
    batch_wait_s: float = 0.2
    max_queued: int = 64  # requests waiting beyond those in flight; more get 503
    timeout_s: float = 300.0  # per request, queueing included; later gets 408
    max_body_bytes: int = 16 << 20
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    ui: bool = False  # GET / serves the page to restore with

    def __post_init__(self):
        # finite too: an infinite wait or time limit never answers, and NaN passes no comparison
        finite = math.isfinite
        checks = [
            (self.replicas >= 1, "--replicas must be at least 1"),
            (self.max_batch_size >= 1, "--max-batch-size must be at least 1"),
            (finite(self.batch_wait_s) and self.batch_wait_s >= 0, "--batch-wait-ms must be a number of at least 0"),
            (self.max_queued >= 1, "--max-queued must be at least 1"),
            (finite(self.timeout_s) and self.timeout_s > 0, "--timeout-s must be a positive number"),
            (self.max_body_bytes >= 1, "--max-body-mb must be positive"),
            (
                finite(self.cpus_per_replica) and self.cpus_per_replica > 0,
                "--cpus-per-replica must be a positive number",
            ),
            (
                finite(self.gpus_per_replica) and self.gpus_per_replica >= 0,
                "--gpus-per-replica must be a number of at least 0",
            ),
            (0 < self.port < 65536, f"--port {self.port} is not a port number"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def in_flight(self) -> int:
        # room for one batch being solved and the next one filling
        return 2 * self.max_batch_size


class RestoreService:
    """A Serve replica: decode and check each request, solve them in batches, answer each."""

    def __init__(self, settings: RestorerSettings, config: ServiceConfig):
        torch.set_num_threads(max(1, int(config.cpus_per_replica)))
        self.config = config
        self.restorer = Restorer(settings=settings, warm=True, quiet=True)
        self.solve_many.set_max_batch_size(config.max_batch_size)
        self.solve_many.set_batch_wait_timeout_s(config.batch_wait_s)
        self.solved = {"requests": 0, "batches": 0, "largest_batch": 0}

    def health(self) -> dict:
        task = self.restorer.task
        return {
            "status": "ready",
            "model": self.restorer.fingerprint(),
            "task": task.describe(),
            "method": self.restorer.settings.method,
            "backend": self.restorer.backend_name,
            # what a client (the page) needs to make a request: the picture's size, and whether a
            # mask is sent or the task's own is used
            "resolution": self.restorer.resolution,
            "fit": self.restorer.settings.fit,
            "takes_masks": task.kind.takes_masks and not task.has_built_in_mask,
            "rounds": self._rounds(),
            **self.solved,
        }

    def _rounds(self) -> int:
        """How many rounds a solve reports (0: a single pass, no rounds)."""
        config = self.restorer.settings.config
        if not self.restorer.method.optimises or config is None:
            return 0
        return last_round(config, len(self.restorer.model.specs)) + 1

    async def __call__(self, request: Request) -> Response:
        try:
            path = request.url.path.removeprefix(request.scope.get("root_path", "").rstrip("/"))
            route = check_route(request.method, path, page=self.config.ui)
            if route == "health":
                return Response(json.dumps(self.health()) + "\n", media_type="application/json")
            if route == "page":
                return Response(page_html(), media_type="text/html; charset=utf-8")
            # the time limit is kept here, not only by Serve's proxy: a client header cannot lift
            # it, and the answer is JSON like every other refusal
            return await asyncio.wait_for(self._restore(request), timeout=self.config.timeout_s)
        except HttpError as e:
            return Response(e.body(), status_code=e.status, media_type="application/json")
        except asyncio.TimeoutError:
            return Response(error_body(self._too_late()), status_code=408, media_type="application/json")
        except Exception as e:  # a bug, not the client's: logged, answered in one line, the replica lives on
            log.exception("request failed")
            return Response(
                error_body(f"internal error: {type(e).__name__}: {e}"), status_code=500, media_type="application/json"
            )

    def _too_late(self) -> str:
        return (
            f"not answered within this service's limit of {self.config.timeout_s:g} s; "
            "the service is busy, try again later"
        )

    async def _restore(self, request: Request) -> Response:
        deadline = asyncio.get_running_loop().time() + self.config.timeout_s
        limit = self.config.max_body_bytes
        check_length(request.headers.get("content-length"), limit)
        body = await _read_capped(request, limit)
        headers = request.headers
        parsed = parse_restore(
            headers.get("content-type"), dict(request.query_params), body, limit, headers.get("accept")
        )
        prepared = await asyncio.to_thread(self._prepare, parsed.image, parsed.mask, parsed.name)
        if parsed.stream:
            return self._stream(prepared, deadline)
        result = await self.solve_many(Job(prepared))
        if isinstance(result, HttpError):
            raise result
        png = result.png_bytes()
        metrics = result.metrics()
        if parsed.format == "png":
            return Response(png, media_type="image/png", headers={"X-ILO-Metrics": json.dumps(metrics)})
        return Response(restored_json(result.name, png, metrics) + b"\n", media_type="application/json")

    def _stream(self, prepared: Prepared, deadline: float) -> StreamingResponse:
        """The rounds as the batch's solve reports them, then the answer (`round_stream`)."""
        listener = RoundListener(self._rounds())
        too_late = event_line("error", status=408, error=self._too_late())
        lines = streamed(self.solve_many(Job(prepared, listener)), listener, _result_event, deadline, too_late)
        return StreamingResponse(lines, media_type=STREAM_TYPE)

    def _prepare(self, image: bytes, mask: bytes | None, name: str | None) -> Prepared:
        try:
            [prepared] = self.restorer.prepare(
                [image],
                None if mask is None else [mask],
                None if name is None else [name],
                labels=["the uploaded picture"],
            )
        except InputError as e:
            raise HttpError(400, str(e)) from None
        return prepared

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)  # set from the config in __init__
    async def solve_many(self, jobs: list[Job]) -> list[Restored | HttpError]:
        return await asyncio.to_thread(self._solve, jobs)

    def _solve(self, jobs: list[Job]) -> list[Restored | HttpError]:
        items = [job.prepared for job in jobs]
        try:
            result = self.restorer.solve(items, on_round=round_reports(jobs))
        except IloError as e:  # e.g. the optimisation diverged: every image of the batch is answered
            return [HttpError(422, f"the solve failed: {e}")] * len(items)
        self.solved["requests"] += len(items)
        self.solved["batches"] += 1
        self.solved["largest_batch"] = max(self.solved["largest_batch"], len(items))
        return list(restored_images(items, result))


def _result_event(result) -> bytes:
    """A streamed request's last line: its answer, or why there is none."""
    if isinstance(result, Restored):
        return event_line(
            "result",
            name=result.name,
            image_png=base64.b64encode(result.png_bytes()).decode(),
            metrics=result.metrics(),
        )
    if isinstance(result, HttpError):
        return event_line("error", status=result.status, error=result.message)
    log.error("a streamed request failed", exc_info=result)
    return event_line("error", status=500, error=" ".join(f"internal error: {type(result).__name__}: {result}".split()))


async def _read_capped(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes the limit (a body sent without a length)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HttpError(413, f"the body is over this service's limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def start(
    settings: RestorerSettings,
    config: ServiceConfig,
    address: str = "local",
    quiet: bool = True,
    app_name: str = APP_NAME,
    route_prefix: str = "/",
) -> tuple[str, bool]:
    """Deploy the service and wait until every replica is warm; returns its URL and whether Ray
    was started here (then `stop(True)` stops it too)."""
    import_ray()
    if quiet:
        logging.getLogger("ray.serve").setLevel(logging.WARNING)
    started = connect(address, config.replicas * config.cpus_per_replica if address == "local" else None, quiet)
    # Serve's proxy keeps a looser limit as a backstop (the replica answers 408 at timeout_s). On a
    # cluster where Serve already runs, its HTTP host, port and limit stay as they are.
    serve.start(
        http_options={"host": config.host, "port": config.port, "request_timeout_s": config.timeout_s + 30},
        logging_config={"log_level": "WARNING" if quiet else "INFO", "enable_access_log": not quiet},
    )
    deployment = serve.deployment(RestoreService).options(
        name="restore",
        num_replicas=config.replicas,
        max_ongoing_requests=config.in_flight(),
        max_queued_requests=config.max_queued,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "num_gpus": config.gpus_per_replica},
    )
    try:
        serve.run(deployment.bind(settings, config), name=app_name, route_prefix=route_prefix)
    except RuntimeError as e:  # a replica failed to start (a missing checkpoint, say): say why in one line
        stop(started, app_name)
        raise IloError(f"the service did not start: {str(e).strip().splitlines()[-1]}") from None
    return f"http://{config.host}:{config.port}{route_prefix.rstrip('/')}", started


def stop(started_ray: bool, app_name: str = APP_NAME) -> None:
    """Take the service down: all of Serve and Ray where this process started them, else only
    this app (other apps on a shared cluster keep running)."""
    import ray

    if not started_ray:
        serve.delete(app_name)
        return
    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def serve_forever(settings: RestorerSettings, config: ServiceConfig, address: str, quiet: bool) -> None:
    """`ilo serve`: start, say where, answer until interrupted (Ctrl-C or SIGTERM), stop."""
    import signal
    import threading

    url, started = start(settings, config, address, quiet)
    page = f"; the page to restore with: {url}/" if config.ui else ""
    print(
        f"ilo: serving {settings.task.task} on {url} (POST /restore, GET /healthz){page}; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        print("ilo: stopping the service", file=sys.stderr, flush=True)
        stop(started)
