"""`ilo serve`'s request rules, as plain functions, and the per-round reports its streams are made
of (the service itself: tests/test_fleet.py; its page and streams: tests/test_web_page.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch

from ilo.engine.fleet.http_api import HttpError, check_length, check_route, parse_restore

PNG = (Path(__file__).parents[1] / "examples" / "faces" / "astronaut.png").read_bytes()
LIMIT = 1 << 20


def test_routes_and_methods():
    assert check_route("POST", "/restore") == "restore" and check_route("GET", "/healthz/") == "health"
    for method, path, status in [
        ("GET", "/restore", 405),
        ("POST", "/healthz", 405),
        ("GET", "/", 404),
        ("PUT", "/x", 404),
    ]:
        with pytest.raises(HttpError) as e:
            check_route(method, path)
        assert e.value.status == status


def test_the_page_is_served_only_where_asked():
    assert check_route("GET", "/", page=True) == "page" and check_route("HEAD", "/", page=True) == "page"
    with pytest.raises(HttpError) as e:
        check_route("POST", "/", page=True)
    assert e.value.status == 405
    with pytest.raises(HttpError) as e:
        check_route("GET", "/nowhere", page=True)
    assert e.value.status == 404 and "or GET /" in e.value.message


def test_rounds_stream_only_when_asked():
    assert not parse_restore("image/png", {}, PNG, LIMIT).stream  # existing clients: one answer, as before
    assert parse_restore("image/png", {"stream": "rounds"}, PNG, LIMIT).stream
    assert parse_restore("image/png", {}, PNG, LIMIT, accept="application/x-ndjson, */*").stream
    for query, message in [
        ({"stream": "steps"}, "'stream' must be rounds"),
        ({"stream": "rounds", "format": "png"}, "drop format=png"),
    ]:
        with pytest.raises(HttpError) as e:
            parse_restore("image/png", query, PNG, LIMIT)
        assert e.value.status == 400 and message in e.value.message


def test_each_image_of_a_batch_reports_its_rounds_to_its_own_request():
    from ilo.engine.fleet.round_stream import Job, round_reports

    class Listener:
        def __init__(self):
            self.rounds = []

        def report(self, k, image):
            self.rounds.append((k, float(image.mean())))

    first, third = Listener(), Listener()
    jobs = [Job(None, first), Job(None), Job(None, third)]  # type: ignore[arg-type]
    assert round_reports([Job(None), Job(None)]) is None  # type: ignore[arg-type]  (nobody streams: no work)
    on_round = round_reports(jobs)
    assert on_round is not None
    on_round(0, 0, torch.arange(3.0).reshape(3, 1, 1, 1).expand(3, 3, 2, 2))
    on_round(1, 2, torch.full((1, 3, 2, 2), 7.0))  # a later chunk of the batch: image 2 alone
    assert first.rounds == [(0, 0.0)] and third.rounds == [(0, 2.0), (1, 7.0)]


@pytest.mark.parametrize("ensemble, max_rows", [(1, 2), (2, None)])
def test_the_solver_reports_every_round_of_every_image(dcgan, ensemble, max_rows):
    """In chunks (max_rows) each chunk's images by their place in the batch; an ensemble's as its
    images (member 0's iterates). The last report of a plain solve is what it returns."""
    from ilo.engine.problems.tasks import TaskSpec
    from ilo.engine.solver.ilo_solver import ILOConfig, solve

    torch.manual_seed(0)
    y = torch.rand(3, 3, 64, 64) * 2 - 1
    config = ILOConfig(steps=[2, 1], restarts=2, ensemble=ensemble)
    seen: dict[tuple[int, int], torch.Tensor] = {}

    def on_round(k, first, images):
        for i, image in enumerate(images):
            seen[k, first + i] = image.clone()

    result = solve(y, TaskSpec("denoise").operator(64), dcgan, config, max_rows=max_rows, on_round=on_round)
    assert sorted(seen) == [(k, i) for k in range(3) for i in range(3)]
    if ensemble == 1:
        assert all(torch.equal(seen[2, i], result.images[i]) for i in range(3))


def test_pictures_arrive_raw_with_or_without_their_type_or_as_json():
    assert parse_restore("image/png", {"name": "a"}, PNG, LIMIT).image == PNG
    assert parse_restore("application/x-www-form-urlencoded", {}, PNG, LIMIT).image == PNG  # curl's default
    assert parse_restore(None, {"format": "png"}, PNG, LIMIT).format == "png"
    body = json.dumps({"image": base64.b64encode(PNG).decode(), "mask": base64.b64encode(b"m").decode(), "name": "x"})
    parsed = parse_restore("application/json; charset=utf-8", {}, body.encode(), LIMIT)
    assert (parsed.image, parsed.mask, parsed.name, parsed.format) == (PNG, b"m", "x", "json")


@pytest.mark.parametrize(
    "content_type, query, body, status, message",
    [
        ("text/plain", {}, b"hello", 415, "is not a picture"),
        ("image/png", {"steps": "3"}, PNG, 400, "unknown parameter(s) steps"),
        ("image/png", {}, b"", 400, "the body is empty"),
        ("image/png", {"format": "gif"}, PNG, 400, "'format' must be json or png"),
        ("image/png", {"name": "x" * 201}, PNG, 400, "at most 200 characters"),
        ("application/json", {}, b"[1, 2]", 400, "must be an object, not a list"),
        ("application/json", {}, b'{"picture": "AA=="}', 400, "unknown field(s) picture"),
        ("application/json", {}, b'{"image": 5}', 400, "'image' must be a base64 string"),
        ("application/json", {}, b'{"mask": "AA=="}', 400, "has no 'image'"),
        ("image/png", {}, b"x" * (LIMIT + 1), 413, "over this service's limit"),
    ],
)
def test_bad_requests_are_named(content_type, query, body, status, message):
    with pytest.raises(HttpError) as e:
        parse_restore(content_type, query, body, LIMIT)
    assert e.value.status == status and message in e.value.message
    line = e.value.body().decode()
    assert line.endswith("\n") and line.count("\n") == 1 and message in json.loads(line)["error"]


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    check_length(str(LIMIT), LIMIT)
    check_length(None, LIMIT)
    for value, status in [(str(LIMIT + 1), 413), ("lots", 400)]:
        with pytest.raises(HttpError) as e:
            check_length(value, LIMIT)
        assert e.value.status == status
