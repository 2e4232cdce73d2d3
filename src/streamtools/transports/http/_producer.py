"""HTTPProducer: each message is one HTTP request, retried with the same message id."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl as ssl_module
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import msgspec
from multidict import CIMultiDict
from yarl import URL

from streamtools import _settings
from streamtools._base import Producer
from streamtools._binding import CE
from streamtools._codec import JSON, Codec, Metadata, codec_for
from streamtools._deadlines import Deadlines
from streamtools._delivery import backoff_delay
from streamtools._middleware import Middleware
from streamtools._settings import RetryPolicy
from streamtools._types import Queue, T
from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    DeliveryError,
    EncodeError,
    PublishError,
    ReplyTimeoutError,
)
from streamtools.transports.http import _config, _presets
from streamtools.transports.http._errors import client_error, error_summary, retryable
from streamtools.transports.http._negotiation import (
    EXACT_TYPES,
    json_decoder,
    query_text,
)
from streamtools.transports.http._presets import HeadersPreset

logger = logging.getLogger("streamtools.http")

_SEND_OPTIONS: Final = frozenset({"method", "endpoint", "headers_tag", "header_tag"})
# aiohttp rejects request lines over 8190 bytes; keep GET URLs safely below that.
_MAX_GET_TARGET: Final = 8000
_MAX_TARGETS: Final = 256


@dataclass(frozen=True, slots=True)
class _Target:
    """Everything per (endpoint, method, preset) that does not change per message."""

    url: URL
    method: str
    # The target's own headers (Accept and a preset's, Content-Type): copied per message
    # (a C-level copy) with ce-id and ce-time added, and passed as a CIMultiDict, which
    # aiohttp takes without converting it again. The producer-wide ones (ce-type,
    # ce-source, ce-specversion, Authorization) are the session's defaults.
    headers: CIMultiDict[str]
    codec: Codec[Any]


def _cancelling() -> int:
    """Whether the running task is being cancelled (by its caller, not by a library)."""
    task = asyncio.current_task()
    return task.cancelling() if task is not None else 0


class HTTPProducer(Producer[T]):
    """Sends messages to an `HTTPConsumer` as HTTP requests.

    The endpoint is `send(endpoint=...)`, else `http(s)://{host}:{port}/{queue name}` where
    host and port are the keywords, else the `HTTP_HOST` / `HTTP_PORT` environment variables,
    else localhost:8080 (the consumer's defaults, so a local pair works without settings).
    The environment is read once, here. `token=` (else `STREAMTOOLS_HTTP_TOKEN`) is sent as a
    bearer token; `ssl=` makes the default endpoint https and verifies with that context.

    `send_timeout` bounds each attempt, `connect_timeout` each connect. Connection errors and
    502/503/504 answers are sent again as `resend=` says (a RetryPolicy: by default 3 more
    attempts, 0.1 s doubling up to 5 s, with jitter), always with the same `ce-id`, so the
    consumer runs the handler once. Another error status raises
    DeliveryError with the status and the consumer's error body; no connection after the
    retries raises ConnectError.

    Send options: `method="POST"|"GET"` (GET carries the message as query parameters:
    scalars as text, nested values as compact JSON), `endpoint=`, and `headers_tag=`
    (alias `header_tag=`), a preset name from `register_headers_preset` (JSON, MSGPACK, ...).
    """

    transport = _config.TRANSPORT
    messaging_system = "streamtools.http"

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        send_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        resend: RetryPolicy = _config.RESEND,
        max_connections: int = 100,
        # deprecated, for one release: send_timeout=, resend=RetryPolicy(...)
        timeout: float | None = None,
        retries: int | None = None,
        retry_backoff: float | None = None,
        max_retry_backoff: float | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            source=source,
            validate=validate,
            middlewares=middlewares,
        )
        owner = type(self).__name__
        self.host = _config.env_host(owner, host)
        self.port = _config.env_port(owner, port, allow_zero=False)
        self.ssl = _config.check_ssl(owner, ssl)
        if timeout is not None:
            _settings.renamed(owner, "timeout", f"send_timeout={timeout!r}")
            send_timeout = timeout
        self.send_timeout = _settings.seconds(owner, "send_timeout", send_timeout, positive=True)
        self.connect_timeout = _settings.seconds(
            owner, "connect_timeout", connect_timeout, positive=True
        )
        self.resend = _config.resend_policy(
            owner, resend, retries, retry_backoff, max_retry_backoff
        )
        self.max_connections = _settings.integer(
            owner, "max_connections", max_connections, minimum=1
        )
        self._token = _config.env_token(owner, token)
        self.endpoint = URL.build(
            scheme="https" if self.ssl is not None else "http",
            host=self.host,
            port=self.port,
            path="/" + self.queue.name,
        )
        self._session: aiohttp.ClientSession | None = None
        self._deadlines = Deadlines()
        self._targets: dict[tuple[object, str, HeadersPreset], _Target] = {}
        self._default_target: _Target | None = None
        # Exchanges under way, so that close() lets them finish (and, set by close, the
        # event it waits on for the last one).
        self._in_flight = 0
        self._drained: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.queue.name!r}, endpoint={str(self.endpoint)!r})"

    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, ssl=self.ssl if self.ssl is not None else True
        )
        # aiohttp bounds connecting (and waiting for a pooled connection) only; the whole
        # attempt is bounded by the producer's deadline timer (see _exchange).
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, ceil_threshold=math.inf
        )
        # What every request of this producer carries goes in the session's defaults, which
        # aiohttp copies in one call; a request adds its target's and message's headers.
        constant = CE.constant(self._codec.type_name, self.source)
        if self._token is not None:
            constant["Authorization"] = f"Bearer {self._token}"
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            raise_for_status=False,
            headers=constant,
        )

    async def _close(self) -> None:
        # Graceful: sends under way finish first (each attempt is bounded by send_timeout);
        # one still running after that fails with PublishError when the session closes.
        if self._in_flight:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.send_timeout):
                    await self._drained.wait()
        self._deadlines.close()
        if self._session is not None:
            await self._session.close()

    def _codec_for_send(self, options: Mapping[str, object]) -> Codec[T]:
        codec: Codec[T] = self._target(options).codec
        return codec

    def _target(self, options: Mapping[str, object]) -> _Target:
        """The cached per-(endpoint, method, preset) request template for these options."""
        if not options:
            target = self._default_target
            if target is None:
                target = self._default_target = self._build_target(None, "POST", _presets.DEFAULT)
            return target
        _settings.send_options("HTTPProducer", options, _SEND_OPTIONS)
        method = _config.method(options.get("method", "POST"))
        tag = options.get("headers_tag", "JSON")
        if "header_tag" in options:
            if "headers_tag" in options and options["header_tag"] != tag:
                raise ConfigurationError("pass headers_tag= or header_tag=, not both")
            tag = options["header_tag"]
        preset = _presets.preset(tag)
        endpoint = options.get("endpoint")
        key = (endpoint, method, preset)
        target = self._targets.get(key)
        if target is None:
            target = self._build_target(endpoint, method, preset)
            if len(self._targets) >= _MAX_TARGETS:
                self._targets.clear()
            self._targets[key] = target
        return target

    def _build_target(self, endpoint: object, method: str, preset: HeadersPreset) -> _Target:
        if endpoint is None:
            url = self.endpoint
        elif isinstance(endpoint, str | URL):
            try:
                url = URL(endpoint)
            except (TypeError, ValueError) as exc:
                raise ConfigurationError(f"invalid endpoint {endpoint!r}: {exc}") from exc
            if url.scheme not in ("http", "https") or not url.host:
                raise ConfigurationError(
                    f"endpoint must be an absolute http:// or https:// URL, got {endpoint!r}"
                )
        else:
            raise ConfigurationError(f"endpoint must be a URL string, got {endpoint!r}")
        # GET carries the message as query parameters: text, so always the JSON codec; the
        # preset's content type then only picks the reply format (Accept).
        get = method == "GET"
        codec: Codec[Any] = codec_for(self.queue.message_type, JSON if get else preset.content_type)
        # ce-type, ce-source, ce-specversion and Authorization are the session's defaults.
        headers = dict(preset.headers)
        if not get:
            headers["Content-Type"] = preset.content_type
        return _Target(url, method, CIMultiDict(headers), codec)

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        target = self._default_target if not options else self._target(options)
        if target is None:
            target = self._target(options)
        await self._exchange(target, body, meta, None)

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        target = self._target(options)
        status, reply, content_type = await self._exchange(target, body, meta, timeout)
        if status == 204 or not reply:
            return b"null", JSON  # the handler returned None, as on the other transports
        return reply, content_type

    async def _exchange(
        self, target: _Target, body: bytes, meta: Metadata, budget: float | None
    ) -> tuple[int, bytes, str]:
        """One message, retried: returns (status, body, content type) of a 2xx answer.

        Without a `budget` (send) each attempt has `timeout` seconds, else ReplyTimeoutError
        (not retried: the message may have been handled). With a `budget` of seconds
        (request/reply) the whole exchange, retries and backoff included, has that long,
        else ReplyTimeoutError naming it. The producer's one deadline timer bounds both
        (`streamtools._deadlines`: no timer per request; aiohttp's own bounds only connects).
        """
        session = self._session
        if session is None or self._closing is not None:
            raise ConfigurationError(f"{self!r} is closed; create a new one")
        url = target.url
        data: bytes | None = body
        if target.method == "GET":
            url = self._get_url(url, body)
            data = None
        headers = target.headers.copy()
        headers[CE.id] = meta.id
        headers[CE.time] = meta.time
        if meta.headers:  # the trace context, when tracing
            headers.update(meta.headers)
        deadlines = self._deadlines
        # Request/reply: one bound over every attempt and backoff; send: one per attempt.
        whole = None if budget is None else deadlines.start(budget)
        attempt = 0
        self._in_flight += 1
        try:
            while True:
                attempt += 1
                wait = whole if whole is not None else deadlines.start(self.send_timeout)
                try:
                    try:
                        resp = await session.request(target.method, url, data=data, headers=headers)
                        try:
                            reply = await resp.read()
                        finally:
                            resp.release()
                        status = resp.status
                        raw_type = resp.headers.get("Content-Type") if reply else JSON
                        # The usual exact value skips aiohttp's parse of the header.
                        content_type = raw_type if raw_type in EXACT_TYPES else resp.content_type
                    except asyncio.CancelledError:
                        if self.closed and not _cancelling():
                            # Not this task's cancellation: close() ended the session.
                            raise PublishError(
                                f"{self!r} was closed while message {meta.id} was in "
                                "flight; it may have been delivered"
                            ) from None
                        if whole is not None or not wait.timed_out():
                            raise  # the caller's cancellation, or the budget (below)
                        timed_out = TimeoutError()  # as aiohttp's own timer raised it
                        raise client_error(timed_out, url) from timed_out
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        raise client_error(exc, url) from exc
                    finally:
                        if whole is None:
                            deadlines.finish(wait)
                    if status >= 300:
                        raise self._delivery_error(target, url, status, reply)
                    return status, reply, content_type
                except (ConnectError, DeliveryError) as exc:
                    if attempt > self.resend.attempts or not retryable(exc):
                        raise
                    delay = backoff_delay(attempt, self.resend.delay, self.resend.max_delay)
                    logger.debug(
                        "retrying message %s in %.2f s: %s",
                        meta.id,
                        delay,
                        exc,
                        extra={"queue": self.queue.name, "message_id": meta.id, "attempt": attempt},
                    )
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if whole is None or not whole.timed_out():
                raise
            raise ReplyTimeoutError(
                f"no reply to message {meta.id} from {target.url} within {budget} s "
                "(retries included); the message may still be handled"
            ) from None
        finally:
            if whole is not None:
                deadlines.finish(whole)
            self._in_flight -= 1
            if not self._in_flight and self._drained is not None:
                self._drained.set()

    @staticmethod
    def _get_url(url: URL, body: bytes) -> URL:
        data = json_decoder.decode(body)
        if not isinstance(data, dict):
            raise EncodeError(
                "GET carries a message as query parameters, so it must encode as a JSON "
                "object; send it with method='POST'"
            )
        full = url.extend_query({str(k): query_text(v) for k, v in data.items()})
        if len(full.raw_path_qs) > _MAX_GET_TARGET:
            raise EncodeError(
                f"the message makes a GET URL of {len(full.raw_path_qs)} bytes, over the "
                f"{_MAX_GET_TARGET} servers accept; send it with method='POST'"
            )
        return full

    @staticmethod
    def _delivery_error(target: _Target, url: URL, status: int, reply: bytes) -> DeliveryError:
        body: object
        try:
            body = json_decoder.decode(reply)
        except msgspec.DecodeError:
            body = reply.decode("utf-8", "replace")[:2000]
        return DeliveryError(
            f"{target.method} {url.with_query(None)} answered {status} ({error_summary(body)})",
            status=status,
            body=body,
        )
