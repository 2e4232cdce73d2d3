"""The runner's endpoints (`GET /healthz`, `/metrics`, the docs page), independent of every
transport.

A consumer whose transport serves on a port (`Capabilities.serves_port`, e.g. HTTP) is a
`ServesPort`: the runner sets its host and port and mounts its endpoints on it, so they share
the port the consumers serve on. Without such a consumer the runner serves them itself with
`serve_endpoints`, a minimal HTTP/1.1 server on asyncio streams (no client library needed:
RabbitMQ-only services get a health check too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, NamedTuple, Protocol, runtime_checkable

import msgspec

from streamtools.errors import ConfigurationError

logger = logging.getLogger("streamtools.runner")

HEALTH_PATH: Final = "/healthz"
JSON: Final = "application/json"


class Answer(NamedTuple):
    """What an endpoint answers to GET: a status and a body (JSON unless it says otherwise,
    e.g. a metrics endpoint's text format)."""

    status: int
    body: bytes
    content_type: str = JSON


Endpoint = Callable[[], Answer]
"""Computes an endpoint's answer on each GET (or HEAD) of its path."""

HealthCheck = Callable[[], tuple[bool, Mapping[str, object]]]
"""Returns (healthy, report)."""


def health_endpoint(check: HealthCheck) -> Endpoint:
    """`/healthz`: 200 with the report while healthy, else 503 with it."""
    encode = msgspec.json.Encoder().encode

    def answer() -> Answer:
        healthy, report = check()
        return Answer(200 if healthy else 503, encode(report))

    return answer


@runtime_checkable
class ServesPort(Protocol):
    """A consumer that serves on a host and port of its own (`Capabilities.serves_port`).

    The runner sets `host` and `port` before the consumer opens, and mounts its endpoints
    with `mount(path, endpoint)`: the consumer's server answers GET and HEAD on `path`
    (a path the consumer does not otherwise serve) with the endpoint's answer. After start,
    `port` is the bound port (so consumers given `port=0` then share the first one's port).
    """

    host: str

    @property
    def port(self) -> int: ...

    @port.setter
    def port(self, port: int) -> None: ...

    def mount(self, path: str, endpoint: Endpoint) -> None: ...


_REASONS: Final = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request"}
_REASONS_503: Final = "Service Unavailable"
_MAX_HEAD: Final = 16 * 1024
_READ_TIMEOUT: Final = 10.0


async def serve_endpoints(
    endpoints: Mapping[str, Endpoint],
    *,
    host: str,
    port: int,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Callable[[], Awaitable[None]]]:
    """Serve `endpoints` (path -> endpoint) on host:port over plain HTTP/1.1, with `headers`
    on every answer (e.g. the docs page's Content-Security-Policy).

    Returns the bound port (useful with port=0) and a coroutine function that stops serving.
    Each connection carries one request (`Connection: close`): health probes need no more.
    """
    paths = dict(endpoints)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    connections: set[asyncio.Task[None]] = set()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            connections.add(task)
        try:
            (status, body, content_type), head_only = await _answer(reader, paths)
            reason = _REASONS.get(status, _REASONS_503)
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n".encode()
                + (b"" if head_only else body)
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if task is not None:
                connections.discard(task)

    try:
        server = await asyncio.start_server(on_connection, host, port, limit=_MAX_HEAD)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose a free port (or 0)"
        ) from exc
    bound: int = server.sockets[0].getsockname()[1]

    async def stop() -> None:
        server.close()
        for task in list(connections):
            task.cancel()
        await server.wait_closed()

    return bound, stop


async def _answer(
    reader: asyncio.StreamReader, paths: Mapping[str, Endpoint]
) -> tuple[Answer, bool]:
    """The answer to one request, and whether it is a HEAD (headers only)."""
    encode = msgspec.json.encode
    async with asyncio.timeout(_READ_TIMEOUT):
        head = await reader.readuntil(b"\r\n\r\n")
    request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return Answer(
            400, encode({"error": "malformed", "detail": "not an HTTP/1.x request"})
        ), False
    method, target, _ = parts
    head_only = method == "HEAD"
    path = target.split("?", 1)[0]
    endpoint = paths.get(path)
    if endpoint is None:
        return Answer(
            404, encode({"error": "not_found", "detail": f"nothing at {path}"})
        ), head_only
    if method not in ("GET", "HEAD"):
        detail = f"{path} answers GET"
        return Answer(405, encode({"error": "method_not_allowed", "detail": detail})), False
    return endpoint(), head_only
