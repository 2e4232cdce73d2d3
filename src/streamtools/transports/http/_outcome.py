"""What a request is answered with: an `Outcome` (kept by dedup) and its aiohttp Response."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import formatdate
from http import HTTPStatus
from types import MappingProxyType
from typing import Final, NamedTuple

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from streamtools._codec import JSON
from streamtools._foreign.aiohttp import OneWriteResponse
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


_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
_DUPLICATE_LINE: Final = "".join(f"{name}: {value}\r\n" for name, value in DUPLICATE.items())
_date_second = -1
_date_text = ""


def _date() -> str:
    # The Date header (RFC 9110 6.6.1), formatted once a second.
    global _date_second, _date_text
    now = int(time.time())
    if now != _date_second:
        _date_text = formatdate(now, usegmt=True)
        _date_second = now
    return _date_text


class Answer(OneWriteResponse):
    """The answer to a message request (one that passed the checks and reached a route):
    status line, headers and body written with one call.

    The same bytes aiohttp's `web.Response` writes for it (Content-Type, Content-Length,
    Date, Server, Connection as the request and `force_close()` ask), without its general
    machinery: content coding, chunking, cookies, signals and five coroutines per answer
    are for answers of unknown size and shape; these are a status and a body in memory.
    Only for POST and GET requests (a HEAD answer has no body); a 204 has no body, no
    Content-Length and no Content-Type, as RFC 9110 asks. `OneWriteResponse` (aiohttp's
    private response state, fenced) writes what `render` makes.
    """

    def __init__(self, outcome: Outcome, *, duplicate: bool = False) -> None:
        super().__init__(status=outcome.status, headers=DUPLICATE if duplicate else None)
        self._outcome = outcome
        self._duplicate = duplicate

    def render(self, request: web.BaseRequest, keep_alive: bool) -> tuple[bytes, int]:
        status, body, content_type = self._outcome
        version = request.version
        http10 = version == (1, 0)
        head = [
            f"HTTP/{version[0]}.{version[1]} {status} {_REASONS.get(status, '')}\r\n",
            _DUPLICATE_LINE if self._duplicate else "",
        ]
        if body:
            head.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n")
        head.append(f"Date: {_date()}\r\nServer: {SERVER_SOFTWARE}\r\n")
        if keep_alive:
            if http10:
                head.append("Connection: keep-alive\r\n")
        elif not http10:
            head.append("Connection: close\r\n")
        head.append("\r\n")
        return "".join(head).encode("latin-1") + body, len(body)


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
