"""What a request is answered with: an `Outcome` (kept by dedup) and its aiohttp Response."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Final, NamedTuple

from aiohttp import web

from streamtools._codec import JSON
from streamtools.transports.http._negotiation import json_encoder


class Outcome(NamedTuple):
    status: int
    body: bytes
    content_type: str


def error_outcome(status: int, error: str, detail: str, **extra: str) -> Outcome:
    """The JSON error body every refusal carries: `{"error": ..., "detail": ...}`."""
    return Outcome(status, json_encoder.encode({"error": error, "detail": detail, **extra}), JSON)


NO_CONTENT: Final = Outcome(204, b"", "")
DUPLICATE: Final[Mapping[str, str]] = MappingProxyType({"x-streamtools-duplicate": "true"})
UNAVAILABLE: Final = error_outcome(
    503, "unavailable", "the consumer is shutting down; retry on another instance"
)
RETRY_LATER: Final[Mapping[str, str]] = MappingProxyType({"Retry-After": "1"})


def response(
    outcome: Outcome, headers: Mapping[str, str] | None = None, *, close: bool = False
) -> web.Response:
    """The aiohttp response for `outcome`; `close` ends the connection after it."""
    if outcome.body:
        resp = web.Response(
            status=outcome.status,
            body=outcome.body,
            content_type=outcome.content_type,
            headers=headers,
        )
    else:
        resp = web.Response(status=outcome.status, headers=headers)
    if close:
        resp.force_close()
    return resp


def raw_answer(outcome: Outcome, headers: Mapping[str, str] = RETRY_LATER) -> bytes:
    """`outcome` as the bytes of a whole HTTP/1.1 answer that closes the connection: for
    the places that answer outside aiohttp's request cycle (a refused connection, a
    request whose headers came too late, one whose handler ignored its cancellation)."""
    head = [f"HTTP/1.1 {outcome.status} {HTTPStatus(outcome.status).phrase}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    head += [
        f"Content-Type: {outcome.content_type}",
        f"Content-Length: {len(outcome.body)}",
        "Connection: close",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + outcome.body


def error(
    status: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: str,
) -> web.Response:
    """An error response (see `error_outcome`)."""
    return response(error_outcome(status, error, detail, **extra), headers)
