"""The HTTP API of `ilo serve`, as plain functions of a request's parts (no Ray, no server), so
every rule is testable on its own and the Serve deployment only wires them up.

    POST /restore              body: the degraded picture's bytes (PNG, JPEG, ...), or JSON
                               {"image": base64, "mask": base64 (inpainting), "name": str}
         ?name=NAME            names the image (its random starts are seeded from it; default:
                               its content), as a file's stem does on the command line
         ?format=json|png      JSON (default): {"name", "image_png" (base64), "metrics"};
                               png: the PNG itself, metrics in the X-ILO-Metrics header
         ?stream=rounds        (or Accept: application/x-ndjson) newline-delimited JSON: each
                               round's image as the solve goes, then the JSON answer (`round_stream`)
    GET  /healthz              200 with the model, task and backend, once a replica is warm
    GET  /                     the page to restore with (`ilo serve --ui`: `web_page`)

Every refusal is a 4xx whose body is one line of JSON: {"error": "..."}.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
QUERY_PARAMETERS = ("name", "format", "stream")
STREAM_TYPE = "application/x-ndjson"
JSON_FIELDS = ("image", "mask", "name", "format")
MAX_NAME_CHARS = 200


class HttpError(Exception):
    """A refusal: its status and a one-line message for the client."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, " ".join(message.split())

    def body(self) -> bytes:
        return error_body(self.message)


def error_body(message: str) -> bytes:
    return json.dumps({"error": " ".join(str(message).split())}).encode() + b"\n"


@dataclass(frozen=True)
class RestoreRequest:
    image: bytes
    mask: bytes | None
    name: str | None
    format: str  # json | png
    stream: bool = False  # the rounds as they go, newline-delimited JSON


def check_route(method: str, path: str, page: bool = False) -> str:
    """Which endpoint a request is for: 'restore', 'health' or (with `page`) 'page'."""
    routes = {"/restore": ("POST", "restore"), "/healthz": ("GET", "health")}
    if page:
        routes["/"] = ("GET", "page")
    route = routes.get(path.rstrip("/") or "/")
    if route is None:
        raise HttpError(404, f"no endpoint {path}: POST /restore or GET /healthz" + (" or GET /" if page else ""))
    if method.upper() != route[0] and not (route[0] == "GET" and method.upper() == "HEAD"):
        raise HttpError(405, f"{path} takes {route[0]}, not {method.upper()}")
    return route[1]


def check_length(content_length: str | None, limit: int) -> None:
    """Refuse a body that says it is too large before reading it."""
    if content_length is None:
        return
    try:
        length = int(content_length)
    except ValueError:
        raise HttpError(400, f"Content-Length '{content_length}' is not a number") from None
    if length < 0:
        raise HttpError(400, f"Content-Length {length} is negative")
    if length > limit:
        raise HttpError(413, f"the body is {length} bytes, over this service's limit of {limit}")


def parse_restore(
    content_type: str | None, query: dict[str, str], body: bytes, limit: int, accept: str | None = None
) -> RestoreRequest:
    """The parts of a POST /restore, checked; a bad one is an HttpError naming it. `accept`: the
    Accept header (application/x-ndjson asks for the rounds, as ?stream=rounds does)."""
    if len(body) > limit:
        raise HttpError(413, f"the body is over this service's limit of {limit} bytes")
    unknown = sorted(set(query) - set(QUERY_PARAMETERS))
    if unknown:
        raise HttpError(400, f"unknown parameter(s) {', '.join(unknown)} (known: {', '.join(QUERY_PARAMETERS)})")
    if not body:
        raise HttpError(400, "the body is empty: POST the degraded picture's bytes, or JSON with an 'image' field")
    kind = (content_type or "application/octet-stream").split(";")[0].strip().lower()
    fields: dict = dict(query)
    if kind == "application/json":
        fields.update(_json_fields(body))
        image, mask = _decode64(fields.get("image"), "image"), _decode64(fields.get("mask"), "mask")
        if image is None:
            raise HttpError(400, "the JSON body has no 'image' (base64 of the picture's bytes)")
    elif kind.startswith(RAW_IMAGE_TYPES) or looks_like_image(body):  # curl's default type is a form's
        image, mask = body, None
    else:
        raise HttpError(
            415, f"Content-Type {kind} is not a picture: send image/png, image/jpeg, ... or application/json"
        )
    answer = _format(fields.get("format"))
    return RestoreRequest(image, mask, _name(fields.get("name")), answer, _stream(query.get("stream"), accept, answer))


# how the formats the image library reads begin: a client that names no type (curl sends
# application/x-www-form-urlencoded) still gets its picture read
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(body: bytes) -> bool:
    return body.startswith(IMAGE_SIGNATURES) or (body[:4] == b"RIFF" and body[8:12] == b"WEBP")


def _json_fields(body: bytes) -> dict:
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise HttpError(400, f"the body is not valid JSON ({e})") from None
    except RecursionError:  # "[[[[...": the client's nesting, not a bug of the service
        raise HttpError(400, "the body is JSON nested too deeply; send an object with an 'image' field") from None
    if not isinstance(fields, dict):
        raise HttpError(400, f"the JSON body must be an object, not a {type(fields).__name__}")
    unknown = sorted(set(fields) - set(JSON_FIELDS))
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(unknown)} (known: {', '.join(JSON_FIELDS)})")
    return fields


def _decode64(value, field: str) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise HttpError(400, f"'{field}' must be a base64 string, not {type(value).__name__}")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, f"'{field}' is not valid base64") from None
    if not data:
        raise HttpError(400, f"'{field}' is empty: base64 of the picture's bytes")
    return data


def _name(value) -> str | None:
    if value is None:
        return None
    # printable: the name is echoed in answers and logs, where control characters could forge lines
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS or not value.isprintable():
        raise HttpError(400, f"'name' must be a non-empty string of at most {MAX_NAME_CHARS} characters, all printable")
    return value


def _format(value) -> str:
    if value is None:
        return "json"
    if value not in ("json", "png"):
        raise HttpError(400, f"'format' must be json or png, not {value!r}")
    return value


def _stream(value: str | None, accept: str | None, answer: str) -> bool:
    if value is not None and value != "rounds":
        raise HttpError(400, f"'stream' must be rounds, not {value!r}")
    asked = value is not None or STREAM_TYPE in (accept or "").lower()
    if asked and answer == "png":
        raise HttpError(400, "a stream of rounds is JSON lines: drop format=png (or the stream)")
    return asked


def restored_json(name: str, png: bytes, metrics: dict) -> bytes:
    return json.dumps({"name": name, "image_png": base64.b64encode(png).decode(), "metrics": metrics}).encode()
