"""What a request is answered with: an `Outcome` (kept by dedup) and its aiohttp Response."""

from __future__ import annotations

from collections.abc import Mapping
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


def response(outcome: Outcome, headers: Mapping[str, str] | None = None) -> web.Response:
    """The aiohttp response for `outcome`."""
    if outcome.body:
        return web.Response(
            status=outcome.status,
            body=outcome.body,
            content_type=outcome.content_type,
            headers=headers,
        )
    return web.Response(status=outcome.status, headers=headers)


def error(
    status: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: str,
) -> web.Response:
    """An error response (see `error_outcome`)."""
    return response(error_outcome(status, error, detail, **extra), headers)
