"""`ilo serve`'s request rules, as plain functions (the service itself: tests/test_fleet.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

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
