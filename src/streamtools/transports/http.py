"""The HTTP transport on aiohttp: typed request/response between services.

`HTTPProducer` sends each message as one HTTP request (POST body, or GET query parameters)
with CloudEvents binary-mode headers, over one pooled `ClientSession` per producer, retrying
connection errors and 502/503/504 with the same message id. `HTTPConsumer` serves one route
per queue (`/{queue name}`) on an aiohttp server that consumers of the same loop, host and
port share. Bad input gets a JSON error body `{"error": ..., "detail": ...}` and its status:

    400 malformed body or query     413 body over `max_body_size`   404 unknown queue
    422 schema violation (+ path)   415 unsupported content type    405 wrong method
    401 missing or wrong token      500 the handler raised          503 shutting down

A handler's returned Struct is the 200 body (in the request's content type), else 204.
A request whose `ce-id` was handled recently is answered as before without running the
handler again, so producer retries are safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import math
import os
import re
import ssl as ssl_module
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.streams import StreamReader
from multidict import CIMultiDict, MultiMapping
from yarl import URL

from streamtools._base import Capabilities, Consumer, Producer, Route, encode_reply
from streamtools._delivery import backoff_delay
from streamtools._codec import (
    CONTENT_TYPES,
    JSON,
    MSGPACK,
    SPECVERSION,
    Codec,
    Metadata,
    codec_for,
    error_path,
    type_name,
)
from streamtools._types import Queue, T
from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    DecodeError,
    DeliveryError,
    EncodeError,
    HandlerError,
    PublishError,
    ReplyTimeoutError,
    StreamtoolsError,
    ValidationError,
)

__all__ = [
    "HTTPConsumer",
    "HTTPProducer",
    "HeadersPreset",
    "headers_presets",
    "register_headers_preset",
]

logger = logging.getLogger("streamtools.http")
logger.addHandler(logging.NullHandler())

TRANSPORT: Final = "HTTPHandler"
DEFAULT_HOST: Final = "localhost"
DEFAULT_PORT: Final = 8080
TOKEN_ENV: Final = "STREAMTOOLS_HTTP_TOKEN"
HEALTH_PATH: Final = "healthz"

_METHODS: Final = ("GET", "POST")
_RETRY_STATUSES: Final = frozenset({502, 503, 504})
_SEND_OPTIONS: Final = frozenset({"method", "endpoint", "headers_tag", "header_tag"})
# aiohttp rejects request lines over 8190 bytes; keep GET URLs safely below that.
_MAX_GET_TARGET: Final = 8000
_MAX_TARGETS: Final = 256
# Bound on waiting for cancelled handlers that ignore their cancellation.
_ABORT_GRACE: Final = 5.0
_CE_ID_RE: Final = re.compile(r"[!-~]{1,256}")
_CONTENT_TYPE_ALIASES: Final[Mapping[str, str]] = {
    JSON: JSON,
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}
_EXACT_TYPES: Final = frozenset({JSON, MSGPACK})
_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder()


# -- header presets -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: a cache key
class HeadersPreset:
    """A named wire format for `send(headers_tag=...)`: content type plus extra headers."""

    name: str
    content_type: str
    headers: Mapping[str, str]


_MANAGED_HEADERS: Final = frozenset({"content-type", "authorization", "content-length"})
_BUILTIN_PRESETS: Final = frozenset({"JSON", "MSGPACK"})
_presets: dict[str, HeadersPreset] = {
    "JSON": HeadersPreset("JSON", JSON, MappingProxyType({"Accept": JSON})),
    "MSGPACK": HeadersPreset("MSGPACK", MSGPACK, MappingProxyType({"Accept": MSGPACK})),
}


def register_headers_preset(
    name: str, content_type: str = JSON, extra_headers: Mapping[str, str] | None = None
) -> HeadersPreset:
    """Register a header preset that `HTTPProducer.send(headers_tag=name)` can name.

    Names are case-insensitive. `content_type` picks the codec (JSON or msgpack);
    `extra_headers` go on every request (an `Accept` defaults to the content type).
    Content-Type, Authorization and `ce-*` headers are set by the producer and cannot be
    overridden here; the built-in JSON and MSGPACK presets cannot be replaced.
    """
    if not isinstance(name, str) or not name.strip():  # type: ignore[redundant-expr]  # untyped callers
        raise ConfigurationError(f"a headers preset needs a non-empty name, got {name!r}")
    key = name.strip().upper()
    if key in _BUILTIN_PRESETS:
        raise ConfigurationError(f"headers preset {key!r} is built in and cannot be replaced")
    if content_type not in CONTENT_TYPES:
        raise ConfigurationError(
            f"headers preset {key!r}: content type must be one of {', '.join(CONTENT_TYPES)}, "
            f"got {content_type!r}"
        )
    headers = {"Accept": content_type}
    for header, value in (extra_headers or {}).items():
        lowered = header.lower()
        if lowered in _MANAGED_HEADERS or lowered.startswith("ce-"):
            raise ConfigurationError(
                f"headers preset {key!r}: {header} is set by the producer; remove it"
            )
        headers[header] = value
    preset = _presets[key] = HeadersPreset(key, content_type, MappingProxyType(headers))
    return preset


def headers_presets() -> Mapping[str, HeadersPreset]:
    """The registered header presets by name."""
    return MappingProxyType(_presets)


def _preset(tag: object) -> HeadersPreset:
    preset = _presets.get(tag.upper()) if isinstance(tag, str) else None
    if preset is None:
        raise ConfigurationError(
            f"unknown headers_tag {tag!r}; known: {', '.join(sorted(_presets))} "
            "(add one with register_headers_preset)"
        )
    return preset


# -- settings -----------------------------------------------------------------------------


def _env_host(host: object) -> str:
    if host is None:
        host = os.environ.get("HTTP_HOST") or DEFAULT_HOST
    if not isinstance(host, str) or not host or any(c in host for c in "/ ?#@"):
        raise ConfigurationError(f"host must be a host name or IP address, got {host!r}")
    return host


def _env_port(port: object, *, allow_zero: bool) -> int:
    if port is None:
        raw = os.environ.get("HTTP_PORT")
        if not raw:
            return DEFAULT_PORT
        try:
            port = int(raw)
        except ValueError:
            raise ConfigurationError(f"HTTP_PORT must be a port number, got {raw!r}") from None
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        raise ConfigurationError(f"port must be an integer in {low}..65535, got {port!r}")
    return port


def _env_token(token: object) -> str | None:
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None and (not isinstance(token, str) or not token.isprintable()):
        raise ConfigurationError("token must be a non-empty printable string")
    return token or None


def _positive(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_ssl(ssl: ssl_module.SSLContext | None) -> ssl_module.SSLContext | None:
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise ConfigurationError(f"ssl must be an ssl.SSLContext or None, got {ssl!r}")
    return ssl


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


# -- producer -----------------------------------------------------------------------------


def _client_error(exc: Exception, url: URL) -> StreamtoolsError:
    """The one place aiohttp client errors become streamtools errors (raise it `from exc`)."""
    where = f"{url.host}:{url.port}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return ConnectError(
            f"TLS with the HTTP consumer at {where} failed: {exc}; check the ssl= context"
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError(
            f"timed out connecting to the HTTP consumer at {where}; is it running and reachable?"
        )
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return ReplyTimeoutError(
            f"the HTTP consumer at {where} did not answer {url} in time; "
            "the message may still be handled"
        )
    if isinstance(exc, aiohttp.ClientConnectionError):
        return ConnectError(
            f"cannot reach the HTTP consumer at {where} ({type(exc).__name__}: {exc}); "
            "is it running?"
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigurationError(f"invalid HTTP endpoint {url}: {exc}")
    return PublishError(f"HTTP exchange with {where} failed: {exc}")


def _client_timeout(total: float, connect: float) -> aiohttp.ClientTimeout:
    # No rounding up to whole seconds (aiohttp's default above 5 s): request(timeout=) is a
    # bound on the whole exchange and its first attempt relies on this timer alone.
    return aiohttp.ClientTimeout(total=total, connect=connect, ceil_threshold=math.inf)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, DeliveryError):
        return exc.status in _RETRY_STATUSES
    # A certificate or TLS mismatch does not heal by retrying.
    return isinstance(exc, ConnectError) and not isinstance(exc.__cause__, aiohttp.ClientSSLError)


def _query_text(value: object) -> str:
    # Scalars travel as text, everything nested (and null) as compact JSON.
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _json_encoder.encode(value).decode()


def _error_summary(body: object) -> str:
    if isinstance(body, dict):
        return f"{body.get('error', '')}: {body.get('detail', '')}"
    return str(body)[:500]


@dataclass(frozen=True, slots=True)
class _Target:
    """Everything per (endpoint, method, preset) that does not change per message."""

    url: URL
    method: str
    # Every header but ce-id and ce-time: copied per message (a C-level copy) and passed
    # as a CIMultiDict, which aiohttp takes without converting it again.
    headers: CIMultiDict[str]
    codec: Codec[Any]


class HTTPProducer(Producer[T]):
    """Sends messages to an `HTTPConsumer` as HTTP requests.

    The endpoint is `send(endpoint=...)`, else `http(s)://{host}:{port}/{queue name}` where
    host and port are the keywords, else the `HTTP_HOST` / `HTTP_PORT` environment variables,
    else localhost:8080 (the consumer's defaults, so a local pair works without settings).
    The environment is read once, here. `token=` (else `STREAMTOOLS_HTTP_TOKEN`) is sent as a
    bearer token; `ssl=` makes the default endpoint https and verifies with that context.

    `timeout` bounds each attempt, `connect_timeout` each connect. Connection errors and
    502/503/504 answers are retried `retries` times with exponential backoff and jitter
    (`retry_backoff` doubling up to `max_retry_backoff` seconds), always with the same
    `ce-id`, so the consumer runs the handler once. Another error status raises
    DeliveryError with the status and the consumer's error body; no connection after the
    retries raises ConnectError.

    Send options: `method="POST"|"GET"` (GET carries the message as query parameters:
    scalars as text, nested values as compact JSON), `endpoint=`, and `headers_tag=`
    (alias `header_tag=`), a preset name from `register_headers_preset` (JSON, MSGPACK, ...).
    """

    transport = TRANSPORT

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        host: str | None = None,
        port: int | None = None,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        retries: int = 3,
        retry_backoff: float = 0.1,
        max_retry_backoff: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(queue, message_type=message_type, source=source, validate=validate)
        self.host = _env_host(host)
        self.port = _env_port(port, allow_zero=False)
        self.ssl = _check_ssl(ssl)
        self.timeout = _positive("timeout", timeout)
        self.connect_timeout = _positive("connect_timeout", connect_timeout)
        self.retry_backoff = _positive("retry_backoff", retry_backoff)
        self.max_retry_backoff = _positive("max_retry_backoff", max_retry_backoff)
        self.retries = _count("retries", retries, 0)
        self.max_connections = _count("max_connections", max_connections, 1)
        self._token = _env_token(token)
        self.endpoint = URL.build(
            scheme="https" if self.ssl is not None else "http",
            host=self.host,
            port=self.port,
            path="/" + self.queue.name,
        )
        self._session: aiohttp.ClientSession | None = None
        self._client_timeout = _client_timeout(self.timeout, self.connect_timeout)
        self._targets: dict[tuple[object, str, HeadersPreset], _Target] = {}
        self._default_target: _Target | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.queue.name!r}, endpoint={str(self.endpoint)!r})"

    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, ssl=self.ssl if self.ssl is not None else True
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=self._client_timeout, raise_for_status=False
        )

    async def _close(self) -> None:
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
                target = self._default_target = self._build_target(None, "POST", _presets["JSON"])
            return target
        if not options.keys() <= _SEND_OPTIONS:
            unknown = ", ".join(sorted(set(options) - _SEND_OPTIONS))
            raise ConfigurationError(
                f"HTTPProducer.send has no option {unknown}; "
                f"accepted: {', '.join(sorted(_SEND_OPTIONS))}"
            )
        method = options.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise ConfigurationError(f"method must be 'POST' or 'GET', got {method!r}")
        method = method.upper()
        tag = options.get("headers_tag", "JSON")
        if "header_tag" in options:
            if "headers_tag" in options and options["header_tag"] != tag:
                raise ConfigurationError("pass headers_tag= or header_tag=, not both")
            tag = options["header_tag"]
        preset = _preset(tag)
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
        headers = {
            **preset.headers,
            "ce-type": codec.type_name,
            "ce-source": self.source,
            "ce-specversion": SPECVERSION,
        }
        if not get:
            headers["Content-Type"] = preset.content_type
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token}"
        return _Target(url, method, CIMultiDict(headers), codec)

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        await self._exchange(self._target(options), body, meta, self._client_timeout, None)

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        target = self._target(options)
        client_timeout = (
            self._client_timeout
            if timeout == self.timeout
            else _client_timeout(timeout, self.connect_timeout)
        )
        try:
            status, reply, content_type = await self._exchange(
                target, body, meta, client_timeout, timeout
            )
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply to message {meta.id} from {target.url} within {timeout} s "
                "(retries included); the message may still be handled"
            ) from None
        if status == 204 or not reply:
            return b"null", JSON  # the handler returned None, as on the other transports
        return reply, content_type

    async def _exchange(
        self,
        target: _Target,
        body: bytes,
        meta: Metadata,
        client_timeout: aiohttp.ClientTimeout,
        budget: float | None,
    ) -> tuple[int, bytes, str]:
        """One message, retried: returns (status, body, content type) of a 2xx answer.

        With a `budget` of seconds (request/reply) the whole exchange, retries and backoff
        included, raises TimeoutError once it is spent. No timer of ours enforces it:
        `client_timeout.total` is the budget, and each retry gets what is left of it.
        """
        session = self._session
        if session is None or self.closed:
            raise ConfigurationError(f"{self!r} is closed; create a new one")
        deadline = None if budget is None else asyncio.get_running_loop().time() + budget
        url = target.url
        data: bytes | None = body
        if target.method == "GET":
            url = self._get_url(url, body)
            data = None
        headers = target.headers.copy()
        headers["ce-id"] = meta.id
        headers["ce-time"] = meta.time
        attempt = 0
        while True:
            attempt += 1
            try:
                try:
                    async with session.request(
                        target.method, url, data=data, headers=headers, timeout=client_timeout
                    ) as resp:
                        reply = await resp.read()
                        status = resp.status
                        raw_type = resp.headers.get("Content-Type") if reply else JSON
                        # The usual exact value skips aiohttp's parse of the header.
                        content_type = raw_type if raw_type in _EXACT_TYPES else resp.content_type
                except (aiohttp.ClientError, TimeoutError) as exc:
                    if deadline is not None and type(exc) is TimeoutError:
                        raise  # aiohttp's total timer: the budget is spent, _request says so
                    raise _client_error(exc, url) from exc
                if status >= 300:
                    raise self._delivery_error(target, url, status, reply)
                return status, reply, content_type
            except (ConnectError, DeliveryError) as exc:
                if attempt > self.retries or not _retryable(exc):
                    raise
                delay = backoff_delay(attempt, self.retry_backoff, self.max_retry_backoff)
                logger.debug(
                    "retrying message %s in %.2f s: %s",
                    meta.id,
                    delay,
                    exc,
                    extra={"queue": self.queue.name, "message_id": meta.id, "attempt": attempt},
                )
                if deadline is None:
                    await asyncio.sleep(delay)
                    continue
                loop = asyncio.get_running_loop()
                await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError from None
                client_timeout = _client_timeout(left, self.connect_timeout)

    @staticmethod
    def _get_url(url: URL, body: bytes) -> URL:
        data = _json_decoder.decode(body)
        if not isinstance(data, dict):
            raise EncodeError(
                "GET carries a message as query parameters, so it must encode as a JSON "
                "object; send it with method='POST'"
            )
        full = url.extend_query({str(k): _query_text(v) for k, v in data.items()})
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
            body = _json_decoder.decode(reply)
        except msgspec.DecodeError:
            body = reply.decode("utf-8", "replace")[:2000]
        return DeliveryError(
            f"{target.method} {url.with_query(None)} answered {status} ({_error_summary(body)})",
            status=status,
            body=body,
        )


# -- GET query parameters -> message ------------------------------------------------------

_SEQUENCE_TYPES: Final = (
    msgspec.inspect.ListType,
    msgspec.inspect.SetType,
    msgspec.inspect.FrozenSetType,
    msgspec.inspect.VarTupleType,
)
_NESTED_TYPES: Final = (
    *_SEQUENCE_TYPES,
    msgspec.inspect.TupleType,
    msgspec.inspect.DictType,
    msgspec.inspect.StructType,
    msgspec.inspect.TypedDictType,
    msgspec.inspect.DataclassType,
    msgspec.inspect.NamedTupleType,
)

_TEXT, _NULLABLE, _NESTED, _SEQUENCE, _AUTO = range(5)


def _field_kind(info: msgspec.inspect.Type) -> int:
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    nullable = any(isinstance(m, msgspec.inspect.NoneType) for m in members)
    values = [m for m in members if not isinstance(m, msgspec.inspect.NoneType)]
    if any(isinstance(m, msgspec.inspect.AnyType) for m in values):
        return _AUTO
    if values and all(isinstance(m, _SEQUENCE_TYPES) for m in values):
        return _SEQUENCE
    if values and all(isinstance(m, _NESTED_TYPES) for m in values):
        return _NESTED
    return _NULLABLE if nullable else _TEXT


class _QueryConverter:
    """Turns GET query parameters into the JSON body of a message type (cached per type)."""

    def __init__(self, message_type: type[Any]) -> None:
        self.message_type = message_type
        info = msgspec.inspect.type_info(message_type)
        fields = getattr(info, "fields", ())
        self.kinds = {f.encode_name: _field_kind(f.type) for f in fields}
        self.default = _AUTO if not fields else _TEXT

    def to_json(self, query: MultiMapping[str]) -> bytes:
        data: dict[str, object] = {}
        for key in dict.fromkeys(query.keys()):
            values = query.getall(key)
            kind = self.kinds.get(key, self.default)
            if len(values) > 1:
                if kind != _SEQUENCE:
                    raise DecodeError(f"query parameter {key!r} is given {len(values)} times")
                data[key] = values
                continue
            text = values[0]
            if kind == _TEXT:
                data[key] = text
            elif kind == _NULLABLE:
                data[key] = None if text == "null" else text
            elif kind == _AUTO:
                data[key] = self._auto(text)
            else:
                try:
                    data[key] = _json_decoder.decode(text)
                except msgspec.DecodeError as exc:
                    if kind != _SEQUENCE:
                        raise DecodeError(f"query parameter {key!r} must be JSON ({exc})") from exc
                    data[key] = [text]  # `?tags=a` for a list field
        try:
            msg = msgspec.convert(data, self.message_type, strict=False)
        except msgspec.ValidationError as exc:
            raise ValidationError(
                f"{type_name(self.message_type)} message does not match its schema: {exc}",
                path=error_path(exc),
            ) from exc
        return _json_encoder.encode(msg)

    @staticmethod
    def _auto(text: str) -> object:
        if text[:1] in ("{", "["):
            with contextlib.suppress(msgspec.DecodeError):
                return _json_decoder.decode(text)
        return text


_converters: dict[type[Any], _QueryConverter] = {}


def _converter(message_type: type[Any]) -> _QueryConverter:
    converter = _converters.get(message_type)
    if converter is None:
        converter = _converters[message_type] = _QueryConverter(message_type)
    return converter


# -- server -------------------------------------------------------------------------------


class _Outcome(NamedTuple):
    status: int
    body: bytes
    content_type: str


def _error_outcome(status: int, error: str, detail: str, **extra: str) -> _Outcome:
    return _Outcome(status, _json_encoder.encode({"error": error, "detail": detail, **extra}), JSON)


_NO_CONTENT: Final = _Outcome(204, b"", "")
_DUPLICATE: Final[Mapping[str, str]] = MappingProxyType({"x-streamtools-duplicate": "true"})


def _response(outcome: _Outcome, headers: Mapping[str, str] | None = None) -> web.Response:
    if outcome.body:
        return web.Response(
            status=outcome.status,
            body=outcome.body,
            content_type=outcome.content_type,
            headers=headers,
        )
    return web.Response(status=outcome.status, headers=headers)


def _error(
    status: int,
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: str,
) -> web.Response:
    return _response(_error_outcome(status, error, detail, **extra), headers)


class _Runner(web.ServerRunner):
    """A ServerRunner whose shutdown hook ends lingering reads of unread request bodies."""

    def __init__(self, server: web.Server, owner: _SharedServer, shutdown_timeout: float) -> None:
        # When it stops, the consumers have drained their handlers already: the timeout only
        # bounds writing the last answers to slow clients.
        super().__init__(server, shutdown_timeout=shutdown_timeout)
        self._owner = owner

    async def shutdown(self) -> None:
        # Runs after aiohttp closed every connection for new data (pre_shutdown). A client
        # still uploading a body we refused (413, 401, ...) would hold aiohttp's lingering
        # close, and with it this stop, for `lingering_time`: end those reads now.
        for payload in self._owner._unread:
            if not payload.is_eof() and payload.exception() is None:
                payload.feed_eof()
        self._owner._unread.clear()


_servers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], _SharedServer]
] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class _SharedServer:
    """One aiohttp server on (host, port) serving the queues of every consumer bound to it.

    Consumers of the same event loop with the same explicit host and port share one
    (refcounted; the last release stops it); `port=0` always gets a server of its own.
    """

    host: str
    port: int
    ssl: ssl_module.SSLContext | None
    lingering_time: float
    key: tuple[str, int] | None
    refs: int = 0
    stopping: bool = False
    table: dict[str, dict[str, HTTPConsumer[Any]]] = field(default_factory=dict)
    _unread: set[StreamReader] = field(default_factory=set)
    _previous: _SharedServer | None = None
    _runner: _Runner | None = None
    _site: web.TCPSite | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)
    # Set by a ConsumerRunner: /healthz then reports its consumers' states.
    health_check: HealthCheck | None = None

    @classmethod
    def acquire(
        cls,
        host: str,
        port: int,
        ssl: ssl_module.SSLContext | None,
        lingering_time: float,
    ) -> _SharedServer:
        loop = asyncio.get_running_loop()
        if port == 0:
            server = cls(host, port, ssl, lingering_time, None)
        else:
            per_loop = _servers.setdefault(loop, {})
            found = per_loop.get((host, port))
            if found is not None and not found.stopping:
                if found.ssl is not ssl:
                    raise ConfigurationError(
                        f"{host}:{port} is already served with "
                        f"{'another TLS context' if found.ssl else 'plain HTTP'}; consumers "
                        "sharing a port must pass the same ssl= context"
                    )
                server = found
            else:
                server = per_loop[(host, port)] = cls(host, port, ssl, lingering_time, (host, port))
                server._previous = found
        server.refs += 1
        return server

    @property
    def bound_port(self) -> int:
        return self._site.port if self._site is not None else self.port

    async def start(self, shutdown_timeout: float) -> None:
        async with self._lock:
            if self._site is not None:
                return
            if self.stopping:
                raise ConfigurationError(f"the server on {self.host}:{self.port} is stopping")
            previous, self._previous = self._previous, None
            if previous is not None:
                # The last server on this port is still stopping: let it free the port.
                await previous._stopped.wait()
            server = web.Server(self._handle, access_log=None, lingering_time=self.lingering_time)
            runner = _Runner(server, self, shutdown_timeout)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise ConfigurationError(
                    f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                    "choose a free port (or port=0)"
                ) from exc
            self._runner, self._site = runner, site

    def bind(self, consumer: HTTPConsumer[Any], method: str) -> None:
        name = consumer.queue.name
        methods = self.table.setdefault(name, {})
        other = methods.get(method)
        if other is not None and other is not consumer:
            raise ConfigurationError(
                f"{method} /{name} on {self.host}:{self.port} is already served by {other!r}"
            )
        methods[method] = consumer

    def unbind(self, consumer: HTTPConsumer[Any]) -> None:
        for name in list(self.table):
            methods = self.table[name]
            for method in [m for m, c in methods.items() if c is consumer]:
                del methods[method]
            if not methods:
                del self.table[name]

    async def release(self) -> None:
        self.refs -= 1
        if self.refs > 0:
            return
        self.stopping = True
        try:
            async with self._lock:
                if self._runner is not None:
                    await self._runner.cleanup()
                self._runner = self._site = None
        finally:
            self._stopped.set()
            if self.key is not None:
                with contextlib.suppress(RuntimeError):
                    per_loop = _servers.get(asyncio.get_running_loop(), {})
                    if per_loop.get(self.key) is self:
                        del per_loop[self.key]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            found = self._route(request)
            response = (
                await found._serve(request, request.method)
                if isinstance(found, HTTPConsumer)
                else found
            )
        except Exception:
            # A bug of ours; never let aiohttp answer with its own text body.
            logger.exception(
                "internal error serving %s %s",
                request.method,
                request.rel_url.path,
                extra={"path": request.rel_url.path},
            )
            response = _error(500, "internal", "internal server error; see the server log")
        if not request.content.is_eof():
            self._unread = {p for p in self._unread if not p.is_eof() and p.exception() is None}
            self._unread.add(request.content)
        return response

    def _route(self, request: web.BaseRequest) -> HTTPConsumer[Any] | web.StreamResponse:
        """The consumer serving this request, or the answer when none does."""
        name = request.path[1:]
        method = request.method
        if name == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return _error(405, "method_not_allowed", "/healthz answers GET", {"Allow": "GET"})
            if self.health_check is not None:
                healthy, report = self.health_check()
                status = 200 if healthy and not self.stopping else 503
                return web.Response(
                    status=status, body=_json_encoder.encode(report), headers={"Content-Type": JSON}
                )
            queues = sorted(
                name
                for name, methods in self.table.items()
                if any(not c._draining for c in methods.values())
            )
            if self.stopping or not queues:
                return _error(503, "unavailable", "the server is shutting down")
            body = _json_encoder.encode({"status": "ok", "queues": queues})
            return web.Response(body=body, headers={"Content-Type": JSON})
        methods = self.table.get(name)
        if methods is None:
            if self.stopping:
                return _error(503, "unavailable", "the server is shutting down")
            return _error(404, "not_found", f"no queue named {name!r} is served here")
        consumer = methods.get(method)
        if consumer is None:
            allow = ", ".join(sorted(methods))
            return _error(
                405,
                "method_not_allowed",
                f"/{name} answers {allow}, not {method}",
                {"Allow": allow},
            )
        return consumer


HealthCheck = Callable[[], tuple[bool, Mapping[str, object]]]
"""Returns (healthy, report): /healthz answers 200 or 503 with the report as JSON."""


async def serve_health(
    check: HealthCheck,
    *,
    host: str | None = None,
    port: int | None = None,
    ssl: ssl_module.SSLContext | None = None,
) -> tuple[int, Callable[[], Awaitable[None]]]:
    """Serve `GET /healthz` from `check` on host:port, sharing the server of HTTP consumers.

    Returns the bound port (useful with port=0; HTTP consumers set to it share the server)
    and a coroutine function that stops serving it.
    """
    server = _SharedServer.acquire(
        _env_host(host), _env_port(port, allow_zero=True), _check_ssl(ssl), 2.0
    )
    server.health_check = check
    try:
        await server.start(shutdown_timeout=5.0)
    except BaseException:
        server.health_check = None
        await server.release()
        raise
    if server.key is None:  # port=0: let consumers given the bound port share this server
        server.key = (server.host, server.bound_port)
        _servers.setdefault(asyncio.get_running_loop(), {})[server.key] = server

    async def stop() -> None:
        server.health_check = None
        await server.release()

    return server.bound_port, stop


# -- consumer -----------------------------------------------------------------------------


class _Dedup:
    """Outcomes of recently handled message ids (bounded LRU) and the ids being handled.

    `running` maps an id being handled to None, or to a future once a duplicate of it
    arrives and waits for the outcome: most messages never have one, so none is made.
    """

    __slots__ = ("done", "running", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.done: OrderedDict[str, _Outcome] = OrderedDict()
        self.running: dict[str, asyncio.Future[_Outcome] | None] = {}

    def get(self, key: str) -> _Outcome | None:
        outcome = self.done.get(key)
        if outcome is not None:
            self.done.move_to_end(key)
        return outcome

    def remember(self, key: str, outcome: _Outcome) -> None:
        self.done[key] = outcome
        self.done.move_to_end(key)
        if len(self.done) > self.size:
            self.done.popitem(last=False)

    def waiter(self, key: str) -> asyncio.Future[_Outcome]:
        """A future for the outcome of `key`, which is being handled."""
        future = self.running[key]
        if future is None:
            future = self.running[key] = asyncio.get_running_loop().create_future()
        return future


_UNAVAILABLE: Final = _error_outcome(
    503, "unavailable", "the consumer is shutting down; retry on another instance"
)


class HTTPConsumer(Consumer[T]):
    """Serves a queue as the route `/{queue name}` of an aiohttp server.

    `host` and `port` default to `HTTP_HOST` / `HTTP_PORT`, else localhost:8080; `port=0`
    picks a free port, readable as `consumer.port` once started (with port=0 use an IP
    address as host: "localhost" may bind IPv4 and IPv6 on different ports). Consumers of
    one event loop on the same host and explicit port share one server, so many queues
    (and both GET and POST on a queue) are served on one port; `GET /healthz` lists them.

    `@consumer(method="POST"|"GET")` registers a handler (one per method). Request bodies
    over `max_body_size` bytes are refused with 413 before they are read; `token=` (else
    `STREAMTOOLS_HTTP_TOKEN`) requires `Authorization: Bearer <token>`; `ssl=` serves TLS.
    The outcomes of the last `dedup_window` message ids are kept, so a retried request is
    answered as before without running the handler again (0 turns this off).
    `lingering_time` bounds how long aiohttp reads and drops the rest of a refused upload
    so that the client sees the error; `close()` ends such reads at once. A shared server
    takes `ssl`, `lingering_time` and `shutdown_timeout` from the consumer that starts it.
    """

    transport = TRANSPORT
    capabilities = Capabilities(
        queued=False, persistent=False, redelivery=False, dead_letter=False, request_reply=True
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
        max_body_size: int = 1024 * 1024,
        dedup_window: int = 10_000,
        lingering_time: float = 2.0,
        shutdown_timeout: float = 30.0,
    ) -> None:
        super().__init__(queue, message_type=message_type, shutdown_timeout=shutdown_timeout)
        if self.queue.name == HEALTH_PATH:
            raise ConfigurationError(
                f"the queue name {HEALTH_PATH!r} is reserved for health checks"
            )
        self.host = _env_host(host)
        self._port = _env_port(port, allow_zero=True)
        self.ssl = _check_ssl(ssl)
        self.max_body_size = _count("max_body_size", max_body_size, 1)
        dedup_window = _count("dedup_window", dedup_window, 0)
        self.lingering_time = _positive("lingering_time", lingering_time)
        self._token = _env_token(token)
        self._token_bytes = self._token.encode() if self._token is not None else b""
        self._dedup = _Dedup(dedup_window) if dedup_window else None
        self._type_name = type_name(self.queue.message_type)
        self._by_method: dict[str, Route[T]] = {}
        self._server: _SharedServer | None = None
        self._draining = False
        self._aborting = False
        self._tasks: set[asyncio.Task[Any]] = set()

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
        self._port = _env_port(port, allow_zero=True)

    @property
    def url(self) -> str:
        """The URL of this queue's route (the bound port once started)."""
        scheme = "https" if self.ssl is not None else "http"
        return str(
            URL.build(scheme=scheme, host=self.host, port=self.port, path="/" + self.queue.name)
        )

    def _add_route(self, route: Route[T]) -> None:
        method = route.options.get("method", "POST")
        if not isinstance(method, str) or method.upper() not in _METHODS:
            raise ConfigurationError(f"method must be 'POST' or 'GET', got {method!r}")
        method = method.upper()
        if method in self._by_method:
            raise ConfigurationError(f"{self!r} already has a {method} handler")
        if self._server is not None and self._started:
            self._server.bind(self, method)
        self._by_method[method] = route
        self.routes.append(route)

    async def _open(self) -> None:
        self._server = _SharedServer.acquire(self.host, self._port, self.ssl, self.lingering_time)

    async def _start(self) -> None:
        assert self._server is not None  # set by _open
        await self._server.start(self.shutdown_timeout)
        for method in self._by_method:
            self._server.bind(self, method)

    async def _stop_intake(self) -> None:
        self._draining = True

    async def _abort_inflight(self) -> None:
        self._aborting = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_ABORT_GRACE)

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._port = server.bound_port
            server.unbind(self)
            await server.release()

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, request: web.BaseRequest, method: str) -> web.StreamResponse:
        """Answer one request routed to this consumer."""
        if self._draining:
            return _response(_UNAVAILABLE, {"Retry-After": "1"})
        headers = request.headers
        if self._token is not None and not self._authorized(headers.get("Authorization")):
            return _error(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                {"WWW-Authenticate": 'Bearer realm="streamtools"'},
            )
        if method == "GET":
            content_type = JSON
            reply_type = _accepted(headers.get("Accept"))
        else:
            raw_type = headers.get("Content-Type")
            found = (
                JSON
                if raw_type is None
                # The usual exact value skips aiohttp's parse of the header.
                else _CONTENT_TYPE_ALIASES.get(raw_type)
                or _CONTENT_TYPE_ALIASES.get(request.content_type)
            )
            if found is None:
                return _error(
                    415,
                    "unsupported_media_type",
                    f"content type {request.content_type!r} is not supported; "
                    f"use {' or '.join(CONTENT_TYPES)}",
                )
            content_type = reply_type = found
            length = request.content_length
            if length is not None and length > self.max_body_size:
                return self._too_large()
        explicit_id = headers.get("ce-id")
        if explicit_id is not None and not _CE_ID_RE.fullmatch(explicit_id):
            return _error(
                400, "malformed", "the ce-id header must be 1 to 256 visible ASCII characters"
            )
        meta = Metadata(
            id=explicit_id or str(uuid.uuid4()),
            type=headers.get("ce-type") or self._type_name,
            source=headers.get("ce-source") or f"//{request.remote or 'unknown'}",
            time=headers.get("ce-time") or _now(),
            content_type=content_type,
            specversion=headers.get("ce-specversion") or SPECVERSION,
        )
        dedup = self._dedup if explicit_id else None
        if dedup is not None:
            known = dedup.get(meta.id)
            if known is not None:
                return _response(known, _DUPLICATE)
        task = asyncio.current_task()
        assert task is not None  # aiohttp runs each request in a task
        self._tasks.add(task)
        self._delivery_started()
        try:
            if dedup is None:
                outcome, _ = await self._handle(request, method, meta, reply_type)
            elif meta.id in dedup.running:
                # The same message is being handled right now: answer with its outcome.
                outcome = await asyncio.shield(dedup.waiter(meta.id))
                return _response(outcome, _DUPLICATE)
            else:
                dedup.running[meta.id] = None
                outcome = _UNAVAILABLE
                try:
                    outcome, handled = await self._handle(request, method, meta, reply_type)
                    if handled:  # bad input is not remembered: it never reached the handler
                        dedup.remember(meta.id, outcome)
                finally:
                    waiter = dedup.running.pop(meta.id)
                    if waiter is not None:
                        waiter.set_result(outcome)
            return _response(outcome)
        except asyncio.CancelledError:
            # close() timed out on this request: answer 503 (not handled, retry elsewhere).
            if self._aborting and task.uncancel() == 0:
                return _response(_UNAVAILABLE)
            raise
        finally:
            self._tasks.discard(task)
            self._delivery_done()

    async def _handle(
        self, request: web.BaseRequest, method: str, meta: Metadata, reply_type: str
    ) -> tuple[_Outcome, bool]:
        """Decode and run the handler: (outcome, whether the handler ran)."""
        route = self._by_method[method]
        try:
            if method == "GET":
                body = _converter(self.queue.message_type).to_json(request.query)
            else:
                content = request.content
                # Usually the whole body came with the headers: take it without awaiting
                # (a client expecting 100-continue takes the path that answers it).
                read = (
                    self._buffered_body(content)
                    if content.is_eof() and "Expect" not in request.headers
                    else await self._read_body(request)
                )
                if read is None:
                    return self._too_large_outcome(), False
                body = read
            reply = await self._process(route, body, meta)
        except ValidationError as exc:
            return _error_outcome(422, "validation", str(exc), path=exc.path), False
        except DecodeError as exc:
            return _error_outcome(400, "malformed", str(exc)), False
        except HandlerError as exc:
            logger.error(
                "handler failed on message %s",
                meta.id,
                exc_info=exc.__cause__ or exc,
                extra={"queue": self.queue.name, "message_id": meta.id, "method": method},
            )
            detail = f"the handler failed on message {meta.id}; see the consumer's log"
            return _error_outcome(500, "handler_failed", detail), True
        if reply is None:
            return _NO_CONTENT, True
        try:
            encoded = encode_reply(reply, reply_type)
        except Exception:
            logger.exception(
                "cannot encode the reply to message %s",
                meta.id,
                extra={"queue": self.queue.name, "message_id": meta.id, "method": method},
            )
            detail = f"the handler's reply to message {meta.id} cannot be encoded; see the log"
            return _error_outcome(500, "handler_failed", detail), True
        return _Outcome(200, encoded, reply_type), True

    async def _read_body(self, request: web.BaseRequest) -> bytes | None:
        """The body, or None once it passes `max_body_size` (streamed bodies included)."""
        limit = self.max_body_size
        content = request.content
        chunks: list[bytes] = []
        size = 0
        try:
            if (
                request.version == aiohttp.HttpVersion11
                and request.headers.get("Expect", "").lower() == "100-continue"
            ):
                # The checks passed: let a client that waits for it (curl) send the body.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            while chunk := await content.readany():
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
        except Exception as exc:  # a cut upload, a broken Content-Encoding: aiohttp's many kinds
            raise DecodeError(f"cannot read the request body: {exc}") from exc
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _buffered_body(self, content: StreamReader) -> bytes | None:
        """The body of a request read to its end already, or None when over the limit."""
        try:
            body = content.read_nowait()
        except Exception as exc:  # a cut upload, a broken Content-Encoding
            raise DecodeError(f"cannot read the request body: {exc}") from exc
        return body if len(body) <= self.max_body_size else None

    def _too_large_outcome(self) -> _Outcome:
        return _error_outcome(
            413, "too_large", f"the request body is over the limit of {self.max_body_size} bytes"
        )

    def _too_large(self) -> web.Response:
        return _response(self._too_large_outcome())

    def _authorized(self, header: str | None) -> bool:
        if header is None or header[:7].lower() != "bearer ":
            return False
        given = header[7:].strip().encode("utf-8", "surrogateescape")
        return hmac.compare_digest(given, self._token_bytes)


def _accepted(accept: str | None) -> str:
    # GET has no body to take the format from: answer msgpack when the client prefers it.
    if accept:
        first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
        if _CONTENT_TYPE_ALIASES.get(first) == MSGPACK:
            return MSGPACK
    return JSON
