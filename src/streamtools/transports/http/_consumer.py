"""HTTPConsumer: serves a queue as the route `/{queue name}` of a shared aiohttp server."""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import ssl as ssl_module
from collections.abc import Sequence
from typing import Final

from aiohttp import web
from yarl import URL

from streamtools import _settings, _telemetry
from streamtools._base import Capabilities, Consumer, Route, encode_reply
from streamtools._binding import CE
from streamtools._codec import CONTENT_TYPES, JSON, Metadata, type_name
from streamtools._health import Endpoint
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, Limits
from streamtools._types import Queue, T
from streamtools.errors import (
    ConfigurationError,
    DecodeError,
    HandlerError,
    ValidationError,
)
from streamtools.transports.http import _config
from streamtools.transports.http._body import Pending, buffered_body, encoding, read_body
from streamtools.transports.http._connection import Connection, ConnectionLimits
from streamtools.transports.http._dedup import Dedup
from streamtools.transports.http._negotiation import accepted, body_type, converter
from streamtools.transports.http._outcome import (
    NO_CONTENT,
    RETRY_LATER,
    UNAVAILABLE,
    Answer,
    Outcome,
    error,
    error_outcome,
    response,
)
from streamtools.transports.http._server import HEALTH_PATH, SharedServer
from streamtools.transports.http._wire import request_metadata

logger = logging.getLogger("streamtools.http")

_valid_id: Final = re.compile(r"[!-~]{1,256}").fullmatch
# After a shutdown timeout, how long cancelled handlers get to end before the server answers
# their requests 503 itself (shorter than the core's grace: no message is lost by HTTP).
_ABORT_GRACE: Final = 0.5
_CLOSING: Final = {**RETRY_LATER, "Connection": "close"}


class HTTPConsumer(Consumer[T]):
    """Serves a queue as the route `/{queue name}` of an aiohttp server.

    `host` and `port` default to `HTTP_HOST` / `HTTP_PORT`, else localhost:8080; `port=0`
    picks a free port, readable as `consumer.port` once started (with port=0 use an IP
    address as host: "localhost" may bind IPv4 and IPv6 on different ports). Consumers of
    one event loop on the same host and port share one server, so many queues (and both
    GET and POST on a queue) are served on one port; `GET /healthz` lists them.

    `@consumer(method="POST"|"GET")` registers a handler (one per method). Request bodies
    over `limits.max_message_size` bytes are refused with 413 before they are read; `token=` (else
    `STREAMTOOLS_HTTP_TOKEN`) requires `Authorization: Bearer <token>`; `ssl=` serves TLS.
    The outcomes of recently handled messages, identified by (`ce-source`, `ce-id`), are
    kept (at most `dedup_window` of them and `dedup_max_bytes` of reply bodies and keys),
    so a retried request is answered as before without running the handler again
    (`dedup_window=0` turns this off). `lingering_time` bounds how long aiohttp reads and
    drops the rest of a refused upload (undecoded) so that the client sees the error;
    `close()` ends such reads at once.

    Limits per client: at most `limits.max_in_flight` requests are handled at once (beyond, 503
    with `Retry-After`; a handler whose client left still counts until it ends); a
    request's headers must arrive within `header_timeout` seconds of its first byte (and a
    new connection's first request within it of connecting), its body within
    `body_timeout` (else 408); an idle keep-alive connection closes after
    `keepalive_timeout`; connections past `max_connections` (default: half the process's
    descriptor limit, at most 1024) are answered 503 and closed at once. With a token,
    `GET /healthz` answers a client without it the status only. A shared server takes
    `ssl`, `lingering_time`, the timeouts but `body_timeout`, `max_connections` and
    `shutdown_timeout` from the consumer that starts it.
    """

    transport = _config.TRANSPORT
    messaging_system = "streamtools.http"
    capabilities = Capabilities(
        queued=False,
        persistent=False,
        redelivery=False,
        dead_letter=False,
        request_reply=True,
        serves_port=True,
    )
    route_options = frozenset({"method"})

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        limits: Limits = DEFAULT_LIMITS,
        dedup_window: int = 10_000,
        dedup_max_bytes: int = 16 * 1024 * 1024,
        lingering_time: float = 2.0,
        header_timeout: float = 10.0,
        body_timeout: float = 30.0,
        keepalive_timeout: float = 75.0,
        max_connections: int | None = None,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        # deprecated, for one release: limits=Limits(max_message_size=..., max_in_flight=...)
        max_body_size: int | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
        )
        owner = type(self).__name__
        if self.queue.name == HEALTH_PATH:
            raise ConfigurationError(
                f"the queue name {HEALTH_PATH!r} is reserved for health checks"
            )
        self.host = _config.env_host(owner, host)
        self._port = _config.env_port(owner, port, allow_zero=True)
        self.ssl = _config.check_ssl(owner, ssl)
        _, self.limits = _settings.policy(
            owner,
            _settings.DEFAULT_RETRY,
            limits,
            {"max_body_size": max_body_size, "max_in_flight": max_in_flight},
            stacklevel=3,
        )
        self.max_body_size = self.limits.max_message_size
        self.max_in_flight = self.limits.max_in_flight
        window = _settings.integer(owner, "dedup_window", dedup_window, minimum=0)
        max_bytes = _settings.integer(owner, "dedup_max_bytes", dedup_max_bytes, minimum=1)
        self.lingering_time = _settings.seconds(
            owner, "lingering_time", lingering_time, positive=True
        )
        self.header_timeout = _settings.seconds(
            owner, "header_timeout", header_timeout, positive=True
        )
        self.body_timeout = _settings.seconds(owner, "body_timeout", body_timeout, positive=True)
        self.keepalive_timeout = _settings.seconds(
            owner, "keepalive_timeout", keepalive_timeout, positive=True
        )
        self.max_connections = _settings.integer(
            owner,
            "max_connections",
            _config.default_max_connections() if max_connections is None else max_connections,
            minimum=1,
        )
        self._token = _config.env_token(owner, token)
        self._token_bytes = self._token.encode() if self._token is not None else b""
        self._dedup = Dedup(window, max_bytes) if window else None
        self._type_name = type_name(self.queue.message_type)
        self._by_method: dict[str, Route[T]] = {}
        self._mounts: dict[str, Endpoint] = {}
        self._server: SharedServer | None = None
        self._draining = False
        self._aborting = False
        self._active = 0  # requests past the checks, until their handler ends
        self._requests: dict[asyncio.Task[object], web.BaseRequest] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.queue.name!r}, {self.host}:{self.port})"

    @property
    def port(self) -> int:
        """The port served on: the bound one once started (useful with `port=0`)."""
        return self._server.bound_port if self._server is not None else self._port

    @port.setter
    def port(self, port: int) -> None:
        if self._server is not None:
            raise ConfigurationError(f"{self!r} is open; set its port before a_init()")
        self._port = _config.env_port(type(self).__name__, port, allow_zero=True)

    @property
    def url(self) -> str:
        """The URL of this queue's route (the bound port once started)."""
        scheme = "https" if self.ssl is not None else "http"
        return str(
            URL.build(scheme=scheme, host=self.host, port=self.port, path="/" + self.queue.name)
        )

    def mount(self, path: str, endpoint: Endpoint) -> None:
        """Answer GET and HEAD on `path` (e.g. a runner's `/healthz`) on this server."""
        if path[:1] != "/" or path == "/" + self.queue.name:
            raise ConfigurationError(f"{self!r} cannot mount {path!r}: not a free absolute path")
        self._mounts[path] = endpoint
        if self._server is not None:
            self._server.routes.mount(path, endpoint)

    def _add_route(self, route: Route[T]) -> None:
        method = _config.method(route.options.get("method", "POST"))
        if method in self._by_method:
            raise ConfigurationError(f"{self!r} already has a {method} handler")
        if self._server is not None and self._started:
            self._server.routes.bind(self, method)
        self._by_method[method] = route
        self.routes.append(route)

    async def _open(self) -> None:
        limits = ConnectionLimits(
            max_connections=self.max_connections,
            header_timeout=self.header_timeout,
            keepalive_timeout=self.keepalive_timeout,
            lingering_time=self.lingering_time,
        )
        self._server = SharedServer.acquire(self.host, self._port, self.ssl, limits)
        for path, endpoint in self._mounts.items():
            self._server.routes.mount(path, endpoint)

    async def _start(self) -> None:
        assert self._server is not None  # set by _open
        await self._server.start(self.shutdown_timeout)
        for method in self._by_method:
            self._server.routes.bind(self, method)

    async def _stop_intake(self) -> None:
        self._draining = True

    async def _abort_inflight(self) -> None:
        self._aborting = True  # the cancelled requests answer 503 (see _serve)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_ABORT_GRACE)
        for task in tasks:
            # A handler that ignores its cancellation: answer its request 503 and close the
            # connection without it, so close() is not held by it.
            request = self._requests.get(task)
            if not task.done() and request is not None:
                protocol = request.protocol
                if isinstance(protocol, Connection):
                    protocol.abandon()

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._port = server.bound_port
            server.routes.unbind(self)
            await server.release()

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, request: web.BaseRequest, method: str) -> web.StreamResponse:
        """Answer one request routed to this consumer.

        The hot path of the HTTP consumer, kept flat on purpose: the checks, the metadata,
        the dedup window and the handler run in this coroutine and `_handle_request` (with
        telemetry on, `_handle_traced` between them), and the answer is an `Answer`.
        """
        checked = self._check(request, method)
        if not isinstance(checked, str):
            if checked.status != 503:  # refusals while stopping are not the sender's fault
                logger.info(
                    "rejected a request to /%s with %d: %s",
                    self.queue.name,
                    checked.status,
                    checked.reason,
                    extra={
                        "queue": self.queue.name,
                        "transport": self.messaging_system,
                        "method": method,
                        "status": checked.status,
                    },
                )
            return checked
        if self._active >= self.max_in_flight:
            return error(
                503,
                "overloaded",
                f"{self.max_in_flight} requests are in flight on /{self.queue.name}; retry later",
                RETRY_LATER,
            )
        headers = request.headers
        meta = request_metadata(request, self._type_name, headers, checked)
        reply_type = accepted(headers.get("Accept")) if method == "GET" else checked
        dedup = self._dedup if CE.id in headers else None
        key = (meta.source, meta.id)
        if dedup is not None and (known := dedup.get(key)) is not None:
            return Answer(known, duplicate=True)
        task = asyncio.current_task()
        assert task is not None  # aiohttp runs each request in a task
        # Tracked for an abort until answered (the finally below; no done callback needed).
        self._tasks.add(task)
        self._requests[task] = request
        self._active += 1
        self._delivery_started()
        try:
            if dedup is not None:
                if key in dedup.running:
                    # The same message is being handled right now: answer with its outcome.
                    return Answer(await asyncio.shield(dedup.waiter(key)), duplicate=True)
                dedup.running[key] = None
            outcome = UNAVAILABLE
            try:
                if _telemetry.active():
                    outcome, handled = await self._handle_traced(request, method, meta, reply_type)
                else:
                    outcome, handled = await self._handle_request(request, method, meta, reply_type)
                # Bad input is not remembered: it never reached the handler.
                if handled and dedup is not None:
                    dedup.remember(key, outcome)
            finally:
                if dedup is not None:
                    waiter = dedup.running.pop(key)
                    if waiter is not None:
                        waiter.set_result(outcome)
            return Answer(outcome)
        except asyncio.CancelledError:
            # close() timed out on this request: answer 503 (not handled, retry elsewhere).
            if self._aborting and task.uncancel() == 0:
                return response(UNAVAILABLE)
            raise
        finally:
            self._tasks.discard(task)  # answered: a later abort must not cut the response
            self._requests.pop(task, None)
            self._active -= 1
            self._delivery_done()

    def _check(self, request: web.BaseRequest, method: str) -> str | web.StreamResponse:
        """The request's content type, or the refusal when it is not served (503, 401, 415,
        413 by its Content-Length, 400 for a bad `ce-id`)."""
        if self._draining:
            return response(UNAVAILABLE, _CLOSING, close=True)
        headers = request.headers
        if self._token is not None and not self._authorized(headers.get("Authorization")):
            return error(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="streamtools"'},
            )
        content_type = JSON
        if method != "GET":
            found = body_type(headers.get("Content-Type"), request)
            if found is None:
                return error(
                    415,
                    "unsupported_media_type",
                    f"content type {request.content_type!r} is not supported; "
                    f"use {' or '.join(CONTENT_TYPES)}",
                )
            content_type = found
            if encoding(headers.get("Content-Encoding")) is None:
                return error(
                    415,
                    "unsupported_encoding",
                    f"content encoding {headers.get('Content-Encoding')!r} is not supported; "
                    "use gzip, deflate or none",
                )
            length = request.content_length
            if length is not None and length > self.max_body_size:
                return response(self._too_large())
        explicit_id = headers.get(CE.id)
        if explicit_id is not None and not _valid_id(explicit_id):
            return error(
                400, "malformed", "the ce-id header must be 1 to 256 visible ASCII characters"
            )
        return content_type

    async def _handle_traced(
        self, request: web.BaseRequest, method: str, meta: Metadata, reply_type: str
    ) -> tuple[Outcome, bool]:
        """`_handle_request` in the span and metrics of one delivery (telemetry on)."""
        attributes = {"http.request.method": method, "url.path": request.path}
        with self._processing(meta, attributes, carrier=request.headers) as observed:
            outcome, handled = await self._handle_request(request, method, meta, reply_type)
            status = outcome.status
            observed.outcome = "ok" if status < 400 else "failed" if status >= 500 else "invalid"
            if status >= 400:
                observed.error = _Rejected(f"HTTP {status}")
            return outcome, handled

    async def _handle_request(
        self, request: web.BaseRequest, method: str, meta: Metadata, reply_type: str
    ) -> tuple[Outcome, bool]:
        """Decode and run the handler: (outcome, whether the handler ran).

        The status mapping is HTTP's own: bad input 400/422, the handler raised 500.
        """
        try:
            body: bytes | Pending | None
            if method == "GET":
                body = converter(self.queue.message_type).to_json(request.query)
            else:
                coding = encoding(request.headers.get("Content-Encoding")) or "identity"
                # Usually the whole body came with the headers: taken without awaiting.
                body = buffered_body(request, self.max_body_size, coding)
                if body is Pending.PENDING:
                    body = await read_body(request, self.max_body_size, coding, self.body_timeout)
            if body is None:
                return self._too_large(), False
            reply = await self._process(self._by_method[method], body, meta)
        except ValidationError as exc:
            self._log_rejection(422, str(exc), meta, method)
            return error_outcome(422, "validation", str(exc), path=exc.path), False
        except DecodeError as exc:
            self._log_rejection(400, str(exc), meta, method)
            return error_outcome(400, "malformed", str(exc)), False
        except TimeoutError:
            detail = f"the request body did not arrive within {self.body_timeout:g} s"
            return error_outcome(408, "timeout", detail), False
        except HandlerError as exc:
            self._log_failure("handler failed on message %s", meta, method, exc.__cause__ or exc)
            detail = f"the handler failed on message {meta.id}; see the consumer's log"
            return error_outcome(500, "handler_failed", detail), True
        if reply is None:
            return NO_CONTENT, True
        try:
            encoded = encode_reply(reply, reply_type)
        except Exception as exc:
            self._log_failure("cannot encode the reply to message %s", meta, method, exc)
            detail = f"the handler's reply to message {meta.id} cannot be encoded; see the log"
            return error_outcome(500, "handler_failed", detail), True
        return Outcome(200, encoded, reply_type), True

    def _log_failure(self, text: str, meta: Metadata, method: str, exc: BaseException) -> None:
        logger.error(text, meta.id, exc_info=exc, extra=self._log_extra(meta, method))

    def _log_rejection(self, status: int, reason: str, meta: Metadata, method: str) -> None:
        # Once per rejected request, at INFO: what the sender got and why (never the body).
        logger.info(
            "rejected message %s with %d: %s",
            meta.id,
            status,
            reason,
            extra={**self._log_extra(meta, method), "status": status},
        )

    def _log_extra(self, meta: Metadata, method: str) -> dict[str, object]:
        extra: dict[str, object] = {
            "queue": self.queue.name,
            "message_id": meta.id,
            "transport": self.messaging_system,
            "method": method,
        }
        trace_id = _telemetry.current_trace_id()
        if trace_id is not None:
            extra["trace_id"] = trace_id
        return extra

    def _too_large(self) -> Outcome:
        return error_outcome(
            413, "too_large", f"the request body is over the limit of {self.max_body_size} bytes"
        )

    def _authorized(self, header: str | None) -> bool:
        if header is None or header[:7].lower() != "bearer ":
            return False
        given = header[7:].strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token_bytes)


class _Rejected(Exception):
    """What a trace records for an answer that is an error status."""
