"""The Producer[T] and Consumer[T] base classes: concrete public methods over private hooks.

A transport subclasses both and implements the hooks (`_open`, `_send`, `_close`, ...). The
base classes own the lifecycle (idempotent `a_init`/`close`, `async with`), encoding with
send-side validation, decoding into the handler's type, and draining in-flight handlers.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Self, overload

import msgspec

from streamtools import _telemetry
from streamtools._codec import (
    JSON,
    Codec,
    Metadata,
    _current,
    codec_for,
    default_source,
    new_metadata,
)
from streamtools._contracts import resolve_queue
from streamtools._middleware import ConsumeNext, Middleware, checked, consume_chain, publish_chain
from streamtools._settings import DEPRECATED
from streamtools._types import Handler, Queue, R, T
from streamtools.errors import (
    ConfigurationError,
    DecodeError,
    HandlerError,
    PublishError,
    StreamtoolsError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from streamtools._batching import Batch, BatchHandler

logger = logging.getLogger("streamtools")
logger.addHandler(logging.NullHandler())

# Bound on waiting for cancelled handlers that ignore their cancellation.
_ABORT_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a transport promises; the conformance suite runs the tests that apply.

    queued: a message sent while no consumer runs waits for one.
    persistent: accepted messages survive a broker or process restart.
    redelivery: a handler that raised gets the message again (HTTP: the producer retries).
    dead_letter: poison and invalid messages end in `<queue>.dlq`.
    request_reply: `Producer.request` returns the handler's reply.
    ordered: one consumer with `limits=Limits(max_in_flight=1)` handles one producer's
        awaited sends in the order sent (Kafka: those with one `key=`).
    consumer_groups: consumers with different `group=` each get every message; those with
        one group share them.
    serves_port: see below.
    """

    queued: bool
    persistent: bool
    redelivery: bool
    dead_letter: bool
    request_reply: bool
    ordered: bool = False
    consumer_groups: bool = False
    serves_port: bool = False
    """The consumer serves on a host and port of its own (HTTP): it has settable `host` and
    `port` attributes and `mount(path, answer)` for the runner's endpoints (health)."""


class _Endpoint(abc.ABC):
    """Shared lifecycle: `a_init()` opens once, `close()` closes once, both safe to race.

    A constructor keyword the class does not take is a ConfigurationError naming the class
    and the keywords it accepts (not Python's bare TypeError), so a service that switches
    the transport name learns at once which settings the new transport takes.
    """

    transport: ClassVar[str] = ""
    messaging_system: ClassVar[str] = "streamtools"
    """The OpenTelemetry `messaging.system` of the transport (rabbitmq, kafka, ...)."""
    settings: ClassVar[frozenset[str]] = frozenset()
    """The constructor's keyword settings, read from its signature."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        parameters = inspect.signature(cls.__init__).parameters.values()
        cls.settings = frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        unknown = kwargs.keys() - cls.settings
        if unknown:
            raise ConfigurationError(
                f"{cls.__name__} ({cls.transport or 'no transport'}) takes no setting "
                f"{', '.join(sorted(unknown))}; it accepts: "
                f"{', '.join(sorted(cls.settings - DEPRECATED))}"
            )
        return super().__new__(cls)

    def __init__(self) -> None:
        self._opened = False
        self._ready = False  # opened and not closing: the one check on the send path
        self._open_lock = asyncio.Lock()
        self._closing: asyncio.Future[None] | None = None

    @property
    def server_address(self) -> tuple[str, int] | None:
        """(host, port) of the broker or server, for traces; None where there is none."""
        return None

    @property
    def closed(self) -> bool:
        """True once `close()` has been called."""
        return self._closing is not None

    async def a_init(self) -> None:
        """Connect and prepare; idempotent. Called by `send`, `run` and `async with` if needed."""
        if self._closing is not None:
            raise ConfigurationError(f"{self!r} is closed; create a new one")
        if self._opened:
            return
        async with self._open_lock:
            if self._closing is not None:
                raise ConfigurationError(f"{self!r} is closed; create a new one")
            if not self._opened:
                await self._open()
                self._opened = True
                self._ready = True

    async def close(self) -> None:
        """Close gracefully; idempotent and safe to call concurrently."""
        if self._closing is None:
            self._ready = False
            self._closing = asyncio.get_running_loop().create_future()
            try:
                await self._shutdown()
            except BaseException as exc:
                self._closing.set_exception(exc)
                raise
            else:
                self._closing.set_result(None)
        else:
            await asyncio.shield(self._closing)

    async def _shutdown(self) -> None:
        if self._opened:
            await self._close()

    async def __aenter__(self) -> Self:
        await self.a_init()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect the transport."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release the transport's resources."""


class Producer(_Endpoint, Generic[T]):
    """Sends messages of type `T` to one queue.

    `queue` is a `Queue[T]` contract, or a name with `message_type=`, or a bare name (the
    registered contract of that name if there is one, else raw JSON).
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        super().__init__()
        self.queue: Queue[T] = resolve_queue(queue, message_type)
        self.source = source or default_source()
        self.validate = validate
        self._codec: Codec[T] = codec_for(self.queue.message_type)
        self.middlewares = checked(type(self).__name__, middlewares)
        # The publish chain, built once; None without a publish middleware (the direct path).
        self._publish = publish_chain(self.middlewares, self._publish_last)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.queue.name!r})"

    async def send(self, msg: T, **options: object) -> str:
        """Send `msg`; return its message id once the transport has accepted it.

        `options` are the transport's send options (see its docs); an unknown one is a
        ConfigurationError. Raises ValidationError if `msg` breaks its schema.
        """
        if not self._ready:
            await self.a_init()
        codec = self._codec_for_send(options)
        if self._publish is not None:
            meta = new_metadata(codec.type_name, self.source, codec.content_type)
            result: str = await self._publish(msg, meta, options)
            return result
        body = codec.encode(msg, validate=self.validate)
        meta = new_metadata(codec.type_name, self.source, codec.content_type)
        if _telemetry.active():
            with _telemetry.sending(self, (meta,)) as (meta,):
                await self._send(body, meta, options)
            return meta.id
        await self._send(body, meta, options)
        return meta.id

    async def _publish_last(self, msg: T, meta: Metadata, options: Mapping[str, object]) -> str:
        """The publish chain's last step: validate, encode and send; the message id."""
        body = self._codec_for_send(options).encode(msg, validate=self.validate)
        await self._deliver(body, meta, options)
        return meta.id

    async def _deliver(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        if _telemetry.active():
            with _telemetry.sending(self, (meta,)) as (traced,):
                await self._send(body, traced, options)
            return
        await self._send(body, meta, options)

    async def send_encoded(self, body: bytes, meta: Metadata, **options: object) -> str:
        """Send a message already encoded in `meta.content_type`, with the metadata given.

        For relays and forwarders (the outbox): the message id, type, source and time are
        `meta`'s, so a message sent again after a crash carries the id it was given when it
        was written. `body` is not validated here (encode it with the queue's codec, with
        `validate=True`); returns `meta.id` once the transport has accepted it.
        """
        if not self._ready:
            await self.a_init()
        await self._deliver(body, meta, options)
        return meta.id

    async def send_many(self, msgs: Iterable[T], **options: object) -> list[str]:
        """Send every message concurrently; return their ids in order once all are accepted.

        All messages are encoded and validated before any leaves. Raises PublishError naming
        the messages that were not accepted (the others were); `options` apply to each.
        """
        if not self._ready:
            await self.a_init()
        codec = self._codec_for_send(options)
        messages = list(msgs)
        prepared = [
            (
                codec.encode(msg, validate=self.validate),
                new_metadata(codec.type_name, self.source, codec.content_type),
            )
            for msg in messages
        ]
        publish = self._publish
        if publish is not None:
            # Every message validated above; each then goes through the middlewares.
            results: list[object] = await asyncio.gather(
                *(
                    publish(msg, meta, options)
                    for msg, (_, meta) in zip(messages, prepared, strict=True)
                ),
                return_exceptions=True,
            )
        elif _telemetry.active():
            with _telemetry.sending(self, [meta for _, meta in prepared]) as metas:
                prepared = [(body, meta) for (body, _), meta in zip(prepared, metas, strict=True)]
                results = await self._send_all(prepared, options)
        else:
            results = await self._send_all(prepared, options)
        failed: list[tuple[int, str, Exception]] = []
        for index, ((_, meta), result) in enumerate(zip(prepared, results, strict=True)):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception) or isinstance(result, ConfigurationError):
                    raise result  # a wrong option or a closed producer: not a delivery failure
                failed.append((index, meta.id, result))
        if failed:
            listed = "; ".join(f"#{i} {mid}: {exc}" for i, mid, exc in failed[:10])
            more = f"; and {len(failed) - 10} more" if len(failed) > 10 else ""
            raise PublishError(
                f"{len(failed)} of {len(prepared)} messages to {self.queue.name!r} were not "
                f"accepted (the others were): {listed}{more}"
            ) from failed[0][2]
        return [meta.id for _, meta in prepared]

    async def _send_all(
        self, prepared: list[tuple[bytes, Metadata]], options: Mapping[str, object]
    ) -> list[object]:
        # Concurrent; a transport may pipeline. Failures are returned, not raised.
        return await asyncio.gather(
            *(self._send(body, meta, options) for body, meta in prepared),
            return_exceptions=True,
        )

    async def request(
        self, msg: T, *, reply_type: type[R], timeout: float = 30.0, **options: object
    ) -> R:
        """Send `msg` and wait for the handler's reply, decoded and validated as `reply_type`."""
        if not self._ready:
            await self.a_init()
        codec = self._codec_for_send(options)

        async def last(msg: T, meta: Metadata, options: Mapping[str, object]) -> tuple[bytes, str]:
            body = self._codec_for_send(options).encode(msg, validate=self.validate)
            if _telemetry.active():
                with _telemetry.sending(self, (meta,), "request") as (traced,):
                    return await self._request(body, traced, timeout, options)
            return await self._request(body, meta, timeout, options)

        meta = new_metadata(codec.type_name, self.source, codec.content_type)
        # With publish middleware, the raw reply (body, content type) is what they pass back.
        chain = publish_chain(self.middlewares, last) if self._publish is not None else None
        reply, content_type = await (chain or last)(msg, meta, options)
        try:
            return codec_for(reply_type, content_type).decode(reply)
        except ValueError as exc:  # an unknown content type from the peer
            raise DecodeError(f"reply has unsupported content type {content_type!r}") from exc

    def _codec_for_send(self, options: Mapping[str, object]) -> Codec[T]:
        # Transports with several wire formats (HTTP's headers_tag) override this.
        return self._codec

    @abc.abstractmethod
    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        """Deliver one encoded message; return only once the transport has accepted it."""

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        """Deliver and return (reply body, reply content type)."""
        raise UnsupportedError(f"{type(self).__name__} does not support request/reply")


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    """A handler registered on a consumer with its options."""

    handler: Handler[T]
    options: Mapping[str, object]


class Consumer(_Endpoint, Generic[T]):
    """Handles messages of type `T` arriving on one queue.

    Decorate an async handler with `@consumer(**options)`, then `await consumer.run()`, which
    serves until `close()`; `close()` stops intake and lets in-flight handlers finish (up to
    `shutdown_timeout` seconds).
    """

    capabilities: ClassVar[Capabilities]
    route_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        super().__init__()
        self.queue: Queue[T] = resolve_queue(queue, message_type)
        self.shutdown_timeout = shutdown_timeout
        self.routes: list[Route[T]] = []
        self.middlewares = checked(type(self).__name__, middlewares)
        # Per route (by id), the handler behind the consume middlewares; built at start().
        self._chains: dict[int, ConsumeNext] = {}
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        self._stopped = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._json: Codec[T] = codec_for(self.queue.message_type)  # most bodies' codec

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.queue.name!r})"

    @property
    def serving(self) -> bool:
        """True while the consumer takes messages: started and not closed."""
        return self._started and self._closing is None

    @property
    def connected(self) -> bool:
        """True while the transport's connection is up (transports with one refine this)."""
        return self._opened and self._closing is None

    def health(self) -> dict[str, object]:
        """This consumer's state for health checks: queue, transport, connected, consuming."""
        return {
            "queue": self.queue.name,
            "transport": self.messaging_system,
            "connected": self.connected,
            "consuming": self.serving,
            "in_flight": self._inflight,
        }

    @overload
    def __call__(  # type: ignore[overload-overlap]  # batch= picks the first
        self, *, batch: Batch, **options: object
    ) -> Callable[[BatchHandler[T]], BatchHandler[T]]: ...
    @overload
    def __call__(self, **options: object) -> Callable[[Handler[T]], Handler[T]]: ...
    def __call__(self, **options: object) -> Callable[[Any], Any]:
        """Register the decorated handler for this queue; returns it unchanged.

        With `batch=Batch(...)` (queued transports) the handler takes `list[T]`."""
        unknown = set(options) - self.route_options
        if unknown:
            accepted = ", ".join(sorted(self.route_options)) or "none"
            raise ConfigurationError(
                f"{type(self).__name__} has no handler option {', '.join(sorted(unknown))}; "
                f"accepted: {accepted}"
            )

        def register(handler: Any) -> Any:
            if not asyncio.iscoroutinefunction(handler):
                raise ConfigurationError(
                    f"handler {getattr(handler, '__qualname__', handler)!r} must be an async def"
                )
            self._add_route(Route(handler, dict(options)))
            return handler

        return register

    def _add_route(self, route: Route[T]) -> None:
        # Queued transports take one handler per queue; HTTP overrides to allow one per method.
        if self.routes:
            raise ConfigurationError(
                f"{self!r} already has a handler; a queue is handled by one function"
            )
        self.routes.append(route)

    async def run(self) -> None:
        """Start consuming and serve until `close()` is called (or the task is cancelled)."""
        await self.start()
        try:
            await self._stopped.wait()
        finally:
            await self.close()

    async def start(self) -> None:
        """Start consuming in the background and return; `close()` stops."""
        if not self.routes:
            raise ConfigurationError(
                f"{self!r} has no handler; decorate an async function with @consumer()"
            )
        await self.a_init()
        if not self._started:
            self._chains = {}
            for route in self.routes:
                chain = consume_chain(self.middlewares, _handler_step(route.handler))
                if chain is not None:
                    self._chains[id(route)] = chain
            await self._start()
            self._started = True

    def _wrap(self, outer: Sequence[Middleware]) -> None:
        """Put `outer` around this consumer's own middlewares (a factory's, a runner's);
        before `start()`."""
        self.middlewares = (*checked(type(self).__name__, outer), *self.middlewares)

    async def _shutdown(self) -> None:
        self._stopped.set()
        if self._started:
            await self._stop_intake()
            self._flush_waiting()
            try:
                async with asyncio.timeout(self.shutdown_timeout):
                    await self._idle.wait()
            except TimeoutError:
                logger.warning(
                    "shutdown timeout: handlers still running",
                    extra={"queue": self.queue.name, "in_flight": self._inflight},
                )
                await self._abort_inflight()
        await super()._shutdown()

    async def _process(self, route: Route[T], body: bytes, meta: Metadata) -> msgspec.Struct | None:
        """Decode `body` into T and run the handler; the shared path of every transport.

        Raises DecodeError / ValidationError for bad input and HandlerError (with the handler's
        exception as `__cause__`) when the handler raised.
        """
        msg = self._decode(body, meta)
        token = _current.set(meta)
        try:
            if self._chains:
                chain = self._chains.get(id(route))
                if chain is not None:
                    reply: msgspec.Struct | None = await chain(msg, meta)
                    return reply
            return await route.handler(msg)
        except StreamtoolsError as exc:
            raise HandlerError(f"handler failed on message {meta.id}: {exc}") from exc
        except Exception as exc:
            raise HandlerError(
                f"handler failed on message {meta.id}: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            _current.reset(token)

    def _decode(self, body: bytes, meta: Metadata) -> T:
        """`body` as a T, read in its content type; DecodeError / ValidationError if not."""
        if meta.content_type == JSON:
            return self._json.decode(body)
        else:
            try:
                codec = codec_for(self.queue.message_type, meta.content_type)
            except ValueError as exc:
                raise DecodeError(f"unsupported content type {meta.content_type!r}") from exc
        return codec.decode(body)

    def _track(self, task: asyncio.Task[Any]) -> None:
        """Track a task handling a delivery: a shutdown timeout cancels it."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _delivery_started(self) -> None:
        # Transports bracket each delivery (decode, handler, ack) so close() can drain it.
        self._inflight += 1
        self._idle.clear()
        if _telemetry._metrics is not None:
            _telemetry.in_flight(self, 1)

    def _delivery_done(self) -> None:
        self._inflight -= 1
        if not self._inflight:
            self._idle.set()
        if _telemetry._metrics is not None:
            _telemetry.in_flight(self, -1)

    def _processing(
        self,
        meta: Metadata,
        attributes: Mapping[str, object] | None = None,
        carrier: Mapping[str, object] | None = None,
    ) -> contextlib.AbstractContextManager[_telemetry.Processing]:
        """The span and metrics around one delivery (see `streamtools._telemetry`)."""
        return _telemetry.processing(self, meta, attributes, carrier)

    @abc.abstractmethod
    async def _start(self) -> None:
        """Begin delivering messages to the routes."""

    @abc.abstractmethod
    async def _stop_intake(self) -> None:
        """Stop taking new messages; in-flight handlers go on."""

    def _flush_waiting(self) -> None:
        """Intake has stopped: hand on what waits for more (open batches), at once."""
        return

    async def _abort_inflight(self) -> None:
        """Shutdown timed out: cancel the tracked deliveries so their messages are redelivered.

        Waits at most `_ABORT_GRACE` seconds for handlers that ignore their cancellation.
        """
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_ABORT_GRACE)


def _handler_step(handler: Handler[Any]) -> ConsumeNext:
    """The consume chain's last step: the handler, given the message alone."""

    async def call(msg: Any, meta: Metadata) -> Any:
        return await handler(msg)

    return call


def encode_reply(reply: msgspec.Struct | None, content_type: str) -> bytes:
    """Encode a handler's returned Struct (or `null`) in the request's content type."""
    codec: Codec[Any] = codec_for(type(reply) if reply is not None else object, content_type)
    return codec.encode(reply, validate=False)
