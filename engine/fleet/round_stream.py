"""A restore that streams its rounds (POST /restore?stream=rounds, or Accept: application/x-ndjson):
the answer is newline-delimited JSON, one event a line, written as the solve goes:

    {"event": "round", "round": k, "rounds": n, "image_png": base64}   after each round k (0 .. n-1)
    {"event": "result", "name", "image_png", "metrics"}                 the answer /restore gives
    {"event": "error", "status": 4xx/5xx, "error": "..."}               the solve failed or ran out of time

The request joins the same batches as every other (`RestoreService.solve_many`): each request in a
batch has its own listener, and the solver's per-round report (`on_round`, the batch's best
iterates so far) is split by row to the listeners of the requests that asked. A refusal found
before the solve (a bad body or picture) is still an ordinary one-line 4xx, not a stream.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import torch

from ilo.engine.inputs.measurements import Prepared


def event_line(event: str, **fields) -> bytes:
    return json.dumps({"event": event, **fields}).encode() + b"\n"


def png_base64(image: torch.Tensor) -> str:
    """[3, H, W] in [-1, 1] (the solver's) as base64 PNG, the same bytes `Restored.png_bytes` gives."""
    from PIL import Image

    unit = (image.detach().float().cpu().clamp(-1, 1) + 1) / 2  # as restored_images and Restored.to_numpy
    pixels = (unit.clamp(0, 1) * 255).round().to(torch.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class RoundListener:
    """One streaming request's rounds: reported from the solve's thread, read on the event loop."""

    def __init__(self, rounds: int):
        self.rounds = rounds
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    def report(self, k: int, image: torch.Tensor) -> None:
        # runs inside the batch's solve: a round that cannot be shown (the client's loop closed at
        # shutdown) is dropped, and the batch, whose other requests share it, goes on
        try:
            line = event_line("round", round=k, rounds=self.rounds, image_png=png_base64(image))
            self.loop.call_soon_threadsafe(self.queue.put_nowait, line)
        except RuntimeError:
            pass

    def close(self) -> None:
        """No more rounds (called on the loop, after the solve's last report was queued)."""
        self.queue.put_nowait(None)


@dataclass(frozen=True)
class Job:
    """One request in a batch: its measurements, and its listener where it streams."""

    prepared: Prepared
    listener: RoundListener | None = None


def round_reports(jobs: list[Job]) -> Callable[[int, int, torch.Tensor], None] | None:
    """The solver's on_round for a batch: each image's rows to its own request's listener (None
    where no request of the batch streams, so the solve does no extra work)."""
    listeners = [job.listener for job in jobs]
    if not any(listeners):
        return None

    def on_round(k: int, first: int, images: torch.Tensor) -> None:
        for i, image in enumerate(images):
            listener = listeners[first + i]
            if listener is not None:
                listener.report(k, image)

    return on_round


async def streamed(
    solving: Awaitable, listener: RoundListener, answer: Callable[[object], bytes], deadline: float, too_late: bytes
) -> AsyncIterator[bytes]:
    """The stream's lines: each round as it comes, then `answer(result)` (the result event, or an
    error event); `too_late` where the deadline (the loop's clock) passes first, the solve then
    cancelled."""
    task = asyncio.ensure_future(solving)
    task.add_done_callback(lambda _: listener.close())  # after every report queued from the solve
    try:
        while True:
            remaining = deadline - listener.loop.time()
            try:
                line = await asyncio.wait_for(listener.queue.get(), timeout=max(remaining, 0.001))
            except asyncio.TimeoutError:
                yield too_late
                return
            if line is None:
                break
            yield line
        try:
            result = task.result()
        except Exception as e:  # noqa: BLE001  (answered in the stream: its status line is sent)
            result = e
        yield answer(result)
    finally:
        task.cancel()
