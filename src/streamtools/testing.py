"""A test client for handlers: run a service's handlers in-process in a pytest test.

    async with TestClient() as client:
        billing = client.import_service("examples.billing")
        await client.start(billing.consumers)
        await client.send(ORDERS_CREATED, order)
        [invoice] = client.published(BILLING_INVOICED)

While the client is open, every transport name of `PRODUCERS` and `CONSUMER_LOOPS` (HTTP,
RMQ, KAFKA, NATS, REDIS, MEMORY and their aliases) resolves to an in-process class on a memory
broker of the client's own, so a service that picks its transport by name (its `QUEUE_TYPE`
unchanged) reaches no broker and opens no port. The in-process classes take the settings the
named transport takes (and ignore them), and keep the delivery policy: the real codec
(encode, decode, schema validation), a handler that raises retried `retry=` times and then
dead-lettered, an invalid message dead-lettered at once. Retries wait `retry_delay` seconds
(0 by default) instead of the consumer's backoff; their number is the consumer's. In-process,
every transport has the memory transport's semantics (queued, retried, dead-lettered; one
handler per queue), HTTP included.

`send` returns once the message is settled: handled, or dead-lettered, and so is every
message its handlers sent, through producers built inside the client, to a queue a consumer
of the client handles. `published(queue)` is what those producers sent (decoded, typed),
`dead_letters(queue)` what went to `<queue>.dlq` with the reason, `attempts(id)` how often a
handler ran on a message.

What is substituted is what is built from the registries while the client is open:

- build producers and consumers inside the client (`PRODUCERS[name](...)` in the test, or
  `client.import_service(module)` for a module that builds them at import time: a fresh copy
  of the module, imported inside the client, which the client forgets on exit);
- `client.start(...)` takes consumers, a `ConsumerFactory` (built earlier: its routes are
  rebuilt in-process), a `ConsumerRunner` or `HandleMsgs`/`HandlerFactory` (consumers built
  earlier are rebuilt in-process with the same queue, handlers, middlewares, retry and
  limits; a producer built before the client opened stays the real one).

`TestClient(real=True)` substitutes nothing: the same test runs against the transport the
environment names (settings from the environment, e.g. `RMQ_URL`), with retries as
configured. Producers built inside the client are still recorded, consumers started by the
client (or built inside it) still tracked, and each handled queue's `.dlq` is consumed by
the client to see dead letters.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import Any, ClassVar, Self, TypeAlias, cast, overload

import msgspec

from streamtools._base import Consumer, Producer
from streamtools._codec import JSON, Metadata, codec_for, current_metadata, new_metadata
from streamtools._contracts import resolve_queue
from streamtools._delivery import QueuedConsumer, dead_letter_queue
from streamtools._factory import HandleMsgs, HandlerFactory
from streamtools._middleware import ConsumeNext, Middleware
from streamtools._registry import (
    CONSUMER_LOOPS,
    MEMORY,
    PRODUCERS,
    ConsumerClass,
    ProducerClass,
)
from streamtools._routing import ConsumerFactory
from streamtools._runner import ConsumerRunner
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy, seconds
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer

__all__ = ["DeadLetter", "Service", "TestClient"]

Service: TypeAlias = (
    Consumer[Any]
    | ConsumerFactory
    | ConsumerRunner
    | HandleMsgs[Any]
    | HandlerFactory
    | Mapping[str, Consumer[Any]]
    | Iterable[Consumer[Any]]
)
"""What `TestClient.start` takes."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message dead-lettered to `<queue>.dlq`: its body and metadata as they arrived there."""

    queue: str
    """The queue it was dead-lettered from."""
    body: bytes
    meta: Metadata

    @property
    def reason(self) -> str:
        """`invalid` (did not decode or broke the schema), `max-retries` or `internal`."""
        return self.meta.headers.get("x-death-reason", "")

    @property
    def error_type(self) -> str:
        """The exception's class name (the handler's own, or the codec's)."""
        return self.meta.headers.get("x-error-type", "")

    @property
    def error(self) -> str:
        """The exception's message."""
        return self.meta.headers.get("x-error-message", "")

    @property
    def attempts(self) -> int:
        """How many deliveries the message had before it was dead-lettered."""
        return int(self.meta.headers.get("x-attempts", "0"))


class TestClient:
    """Runs handlers in-process, no broker and no port; see the module docstring.

    `real=True` runs against the real transport instead (`transport=` names the one `send`
    uses, else the transport of the queue's consumer, else `QUEUE_TYPE`). `retry_delay` is
    the wait before each retry in-process; `timeout` bounds how long `send` and `settled`
    wait.
    """

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        *,
        real: bool = False,
        transport: str | None = None,
        retry_delay: float = 0.0,
        timeout: float = 10.0,
    ) -> None:
        self.real = real
        self.transport = transport
        self.retry_delay = seconds("TestClient", "retry_delay", retry_delay)
        self.timeout = seconds("TestClient", "timeout", timeout, positive=True)
        self._open = False
        self._used = False
        self._broker: MemoryBroker | None = None
        self._classes: dict[tuple[str, str], type[Any]] = {}
        self._ours: set[type[Any]] = set()
        self._stack = contextlib.ExitStack()
        self._producers: list[Producer[Any]] = []
        self._senders: dict[str, Producer[Any]] = {}
        self._consumers: list[Consumer[Any]] = []  # built or adopted: tracked
        self._started: list[Consumer[Any]] = []
        self._watchers: dict[str, Consumer[Any]] = {}
        self._runners: list[ConsumerRunner] = []
        self._published: list[tuple[str, bytes, Metadata]] = []
        self._dead: list[DeadLetter] = []
        self._attempts: collections.Counter[str] = collections.Counter()
        self._pending: dict[str, str] = {}
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"TestClient(real={self.real})"

    async def __aenter__(self) -> Self:
        if self._used:
            raise ConfigurationError("a TestClient is opened once; use a new one")
        self._open = self._used = True
        self._changed = asyncio.Event()
        if not self.real:
            self._broker = MemoryBroker()
        self._stack.enter_context(PRODUCERS._override(self._producer_class))
        self._stack.enter_context(CONSUMER_LOOPS._override(self._consumer_class))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            consumers = [*self._started, *self._watchers.values(), *self._consumers]
            await asyncio.gather(*(c.close() for c in consumers), return_exceptions=True)
            for runner in self._runners:
                for callback in runner.on_shutdown:
                    with contextlib.suppress(Exception):
                        await callback()
            producers = [*self._senders.values(), *self._producers]
            await asyncio.gather(*(p.close() for p in producers), return_exceptions=True)
        finally:
            self._open = False
            self._stack.close()  # the registries and sys.modules as they were

    # -- what the test calls ------------------------------------------------------------

    async def start(self, *services: Service) -> list[Consumer[Any]]:
        """Start the consumers of `services` (without ports or signals); return them.

        Consumers built before the client opened are rebuilt in-process (not with
        `real=True`), as are a `ConsumerFactory`'s routes; a `ConsumerRunner`'s
        `on_startup` callbacks run now and its `on_shutdown` ones when the client closes.
        All stop when the client closes.
        """
        self._check_open()
        for service in services:
            if isinstance(service, ConsumerRunner):
                self._runners.append(service)
                for callback in service.on_startup:
                    await callback()
        started = []
        for consumer in self._consumers_of(services):
            adopted = self._adopt(consumer)
            await adopted.start()
            self._started.append(adopted)
            await self._watch(adopted)
            started.append(adopted)
        return started

    def import_service(self, module: str) -> ModuleType:
        """Import a fresh copy of `module` inside the client, for a service that builds its
        producers or consumers at import time; the client forgets it on exit (the module
        imported before, if any, is back in `sys.modules`)."""
        self._check_open()
        parent, _, child = module.rpartition(".")
        saved = sys.modules.pop(module, None)

        def restore() -> None:
            if saved is not None:
                sys.modules[module] = saved
            else:
                sys.modules.pop(module, None)
            package = sys.modules.get(parent) if parent else None
            if package is not None:
                if saved is not None:
                    setattr(package, child, saved)
                elif hasattr(package, child):
                    delattr(package, child)

        self._stack.callback(restore)
        return importlib.import_module(module)

    async def send(
        self, queue: Queue[T] | str, message: T | bytes, *, validate: bool = True
    ) -> str:
        """Send `message` to `queue` and wait until it is settled; return its message id.

        `message` goes through the queue's codec (validated unless `validate=False`, to send
        a message that breaks its schema); `bytes` are sent as the encoded JSON body as they
        are. Settled: handled or dead-lettered, with every message its handlers sent to
        queues the client's consumers handle (see `settled`). Without a consumer of `queue`
        in the client, returns once the message is sent.
        """
        self._check_open()
        contract = resolve_queue(queue, None)
        sender = await self._sender(contract)
        if isinstance(message, bytes):
            body = message
            meta = new_metadata(sender._codec.type_name, sender.source, JSON)
        else:
            codec = sender._codec
            body = codec.encode(cast(Any, message), validate=validate)
            meta = new_metadata(codec.type_name, sender.source, codec.content_type)
        await sender.send_encoded(body, meta)
        await self.settled()
        return meta.id

    async def settled(self) -> None:
        """Wait until every message sent to a queue one of the client's consumers handles is
        handled or dead-lettered; TimeoutError after `timeout` seconds, naming them."""
        self._check_open()
        assert self._changed is not None
        try:
            async with asyncio.timeout(self.timeout):
                while self._pending:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            waiting = ", ".join(f"{mid} on {q!r}" for mid, q in list(self._pending.items())[:10])
            raise TimeoutError(
                f"not settled within {self.timeout} s: {waiting} (is a handler stuck, or its "
                "dead-letter queue consumed elsewhere?)"
            ) from None

    @overload
    def published(self, queue: Queue[T]) -> list[T]: ...
    @overload
    def published(self, queue: str) -> list[Any]: ...
    def published(self, queue: Queue[Any] | str) -> list[Any]:
        """The messages producers built inside the client sent to `queue`, in order, decoded
        into its type (the client's own `send`s not among them)."""
        contract = resolve_queue(queue, None)
        return [
            codec_for(contract.message_type, meta.content_type).decode(body)
            for name, body, meta in self._published
            if name == contract.name
        ]

    def published_metadata(self, queue: Queue[Any] | str) -> list[Metadata]:
        """The metadata of `published(queue)`'s messages, in the same order."""
        name = resolve_queue(queue, None).name
        return [meta for sent_to, _, meta in self._published if sent_to == name]

    def dead_letters(self, queue: Queue[Any] | str) -> list[DeadLetter]:
        """The messages dead-lettered from `queue` (to `<queue>.dlq`), in order."""
        name = resolve_queue(queue, None).name
        return [dead for dead in self._dead if dead.queue == name]

    def attempts(self, message_id: str) -> int:
        """How many times a handler of the client's consumers ran on message `message_id`."""
        return self._attempts[message_id]

    # -- the substituted classes ----------------------------------------------------------

    def _producer_class(self, name: str, load: Callable[[], ProducerClass]) -> ProducerClass:
        cls = self._classes.get(("producer", name))
        if cls is None:
            real = _load_or_none(load)
            if self.real:
                if real is None:
                    load()  # raises the registry's error
                cls = _subclass(_RecordingProducer, cast(type[Any], real), self)
            else:
                cls = _in_process(_InProcessProducer, real, self, name)
            self._classes["producer", name] = cls
            self._ours.add(cls)
        return cast(ProducerClass, cls)

    def _consumer_class(self, name: str, load: Callable[[], ConsumerClass]) -> ConsumerClass:
        cls = self._classes.get(("consumer", name))
        if cls is None:
            real = _load_or_none(load)
            if self.real:
                if real is None:
                    load()
                cls = _subclass(_TrackedConsumer, cast(type[Any], real), self)
            else:
                cls = _in_process(_InProcessConsumer, real, self, name)
            self._classes["consumer", name] = cls
            self._ours.add(cls)
        return cast(ConsumerClass, cls)

    # -- bookkeeping ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._open:
            raise ConfigurationError("the TestClient is not open: use `async with TestClient()`")

    def _built_producer(self, producer: Producer[Any]) -> None:
        self._producers.append(producer)

    def _track(self, consumer: Consumer[Any]) -> None:
        """Track `consumer`'s deliveries: its outermost middleware counts and settles."""
        consumer._wrap([_Tracker(self, consumer)])
        self._consumers.append(consumer)
        self._fast_retries(consumer)

    def _fast_retries(self, consumer: Consumer[Any]) -> None:
        if not self.real and isinstance(consumer, QueuedConsumer):
            delay = self.retry_delay
            consumer.retry = dataclasses.replace(consumer.retry, delay=delay, max_delay=delay)
            consumer.retry_delay = consumer.max_retry_delay = delay

    def _handles(self, queue: str) -> Consumer[Any] | None:
        for consumer in self._consumers:
            if consumer.queue.name == queue and consumer.serving:
                return consumer
        return None

    async def _sending(self, producer: Producer[Any], meta: Metadata) -> None:
        """Before `producer` sends `meta`'s message: wait for it if a consumer of ours
        handles its queue."""
        consumer = self._handles(producer.queue.name)
        if consumer is not None:
            await self._watch(consumer)
            self._pending[meta.id] = producer.queue.name

    def _sent(self, producer: Producer[Any], body: bytes, meta: Metadata) -> None:
        if all(producer is not s for s in self._senders.values()):
            self._published.append((producer.queue.name, body, meta))

    def _not_sent(self, meta: Metadata) -> None:
        self._settle(meta.id)

    def _settle(self, message_id: str) -> None:
        if self._pending.pop(message_id, None) is not None and self._changed is not None:
            self._changed.set()

    def _ran(self, consumer: Consumer[Any], meta: Metadata, failed: bool) -> None:
        self._attempts[meta.id] += 1
        if not failed:
            self._settle(meta.id)
        elif not consumer.capabilities.dead_letter:
            self._settle(meta.id)  # no redelivery here: the sender saw the failure
        # else: retried, or dead-lettered (the dead-letter watcher settles it)

    async def _sender(self, contract: Queue[Any]) -> Producer[Any]:
        sender = self._senders.get(contract.name)
        if sender is None:
            if self.real:
                consumer = self._handles(contract.name)
                name = (
                    self.transport
                    or (consumer.transport if consumer is not None else None)
                    or os.environ.get("QUEUE_TYPE")
                )
                if not name:
                    raise ConfigurationError(
                        "TestClient(real=True) needs transport=, a consumer of the queue, "
                        "or QUEUE_TYPE to know where to send"
                    )
            else:
                name = MEMORY
            sender = self._senders[contract.name] = PRODUCERS[name](contract)
        return sender

    def _adopt(self, consumer: Consumer[Any]) -> Consumer[Any]:
        """`consumer`, or an in-process copy of it when it was built outside the client."""
        if type(consumer) in self._ours:
            return consumer
        if self.real:
            if consumer._started:
                raise ConfigurationError(
                    f"{consumer!r} is started already; let TestClient.start start it"
                )
            self._track(consumer)
            return consumer
        transport = consumer.transport if consumer.transport in CONSUMER_LOOPS else MEMORY
        copy = CONSUMER_LOOPS[transport](
            consumer.queue,
            retry=getattr(consumer, "retry", DEFAULT_RETRY),
            limits=getattr(consumer, "limits", DEFAULT_LIMITS),
            shutdown_timeout=consumer.shutdown_timeout,
            # Without the tracker of an earlier client that built it.
            middlewares=[m for m in consumer.middlewares if not isinstance(m, _Tracker)],
        )
        for route in consumer.routes:
            copy._add_route(route)
        return copy

    def _consumers_of(self, services: Sequence[Service]) -> list[Consumer[Any]]:
        found: list[Consumer[Any]] = []
        for service in services:
            if isinstance(service, Consumer):
                found.append(service)
            elif isinstance(service, ConsumerFactory):
                ours = cast(type[Any], service._consumer_cls) in self._ours
                factory = service if ours else service.using()
                found.extend(factory.instances.values())
            elif isinstance(service, ConsumerRunner):
                found.extend(service.consumers)
            elif isinstance(service, HandleMsgs):
                found.append(service.consumer)
            elif isinstance(service, HandlerFactory):
                found.extend(pair.consumer for pair in service.values())
            elif isinstance(service, Mapping):
                found.extend(cast(Mapping[str, Consumer[Any]], service).values())
            else:
                found.extend(service)
        return found

    async def _watch(self, consumer: Consumer[Any]) -> None:
        """Consume `consumer`'s dead-letter queue, to record and settle what arrives there."""
        queue = consumer.queue.name
        dlq = dead_letter_queue(queue)
        if dlq == queue or dlq in self._watchers or not consumer.capabilities.dead_letter:
            return
        if self.real and consumer.transport not in CONSUMER_LOOPS:
            return  # a transport of its own, not registered: its dead letters are not seen
        contract: Queue[msgspec.Raw] = Queue(dlq, msgspec.Raw)
        watcher: Consumer[msgspec.Raw]
        if self.real:
            watcher = CONSUMER_LOOPS._load(consumer.transport)(contract)
        else:
            watcher = MemoryConsumer(contract, broker=self._broker)

        @watcher()
        async def record(body: msgspec.Raw) -> None:
            meta = current_metadata()
            if meta.attempt == 1:  # not a DLQ consumer's own retry
                origin = meta.headers.get("x-original-queue", queue)
                self._dead.append(DeadLetter(origin, bytes(body), meta))
            self._settle(meta.id)

        self._watchers[dlq] = watcher
        await watcher.start()


class _Tracker(Middleware):
    """The outermost consume middleware of a tracked consumer: counts handler runs and
    settles what was handled (a failure's fate is the delivery policy's)."""

    def __init__(self, client: TestClient, consumer: Consumer[Any]) -> None:
        self.client = client
        self.consumer = consumer

    async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
        try:
            result = await call_next(msg, meta)
        except Exception:
            self.client._ran(self.consumer, meta, failed=True)
            raise
        self.client._ran(self.consumer, meta, failed=False)
        return result


class _RecordingProducer(Producer[Any]):
    """Mixed into a producer class: tells its client about every message sent."""

    _client: ClassVar[TestClient]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client._built_producer(self)

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        await self._client._sending(self, meta)
        try:
            await super()._send(body, meta, options)  # type: ignore[safe-super]  # a mixin
        except BaseException:
            self._client._not_sent(meta)
            raise
        self._client._sent(self, body, meta)

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        self._client._sent(self, body, meta)
        return await super()._request(body, meta, timeout, options)


class _TrackedConsumer(Consumer[Any]):
    """Mixed into a consumer class: its client tracks every one built."""

    _client: ClassVar[TestClient]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._client._track(self)

    async def start(self) -> None:
        # Middlewares added since (a runner's) go inside the tracker: it sees every outcome.
        trackers = [m for m in self.middlewares if isinstance(m, _Tracker)]
        others = [m for m in self.middlewares if not isinstance(m, _Tracker)]
        self.middlewares = (*trackers, *others)
        await super().start()


class _Accepting:
    """The settings check of the named transport (any setting when it cannot be loaded)."""

    _accepts: ClassVar[frozenset[str] | None] = None
    transport: ClassVar[str]

    def __new__(cls, *args: object, **kwargs: object) -> Self:
        accepts = cls._accepts
        unknown = kwargs.keys() - accepts if accepts is not None else ()
        if unknown:
            raise ConfigurationError(
                f"{cls.transport} takes no setting {', '.join(sorted(unknown))}; it accepts: "
                f"{', '.join(sorted(accepts or ()))}"
            )
        return object.__new__(cls)


class _InProcessProducer(_Accepting, _RecordingProducer, MemoryProducer[Any]):
    """A producer of the named transport, sending to its client's memory broker."""

    def __init__(
        self,
        queue: Queue[Any] | str,
        *,
        message_type: type[Any] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        **settings: object,  # the named transport's: not used in-process
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            source=source,
            validate=validate,
            middlewares=middlewares,
            broker=self._client._broker,
        )

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        await super()._send(body, meta, {})  # the named transport's send options: not here

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        return await super()._request(body, meta, timeout, {})


class _InProcessConsumer(_Accepting, _TrackedConsumer, MemoryConsumer[Any]):
    """A consumer of the named transport, on its client's memory broker."""

    def __init__(
        self,
        queue: Queue[Any] | str,
        *,
        message_type: type[Any] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        **settings: object,  # the named transport's: not used in-process
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            retry=retry,
            limits=limits,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
            broker=self._client._broker,
        )


def _load_or_none(load: Callable[[], Any]) -> type[Any] | None:
    try:
        loaded: type[Any] = load()
    except ConfigurationError:  # its client library is not installed
        return None
    return loaded


def _subclass(mixin: type[Any], real: type[Any], client: TestClient) -> type[Any]:
    """`real` with `mixin` in front, for `client`; the settings `real` takes."""
    cls: type[Any] = type(
        real.__name__, (mixin, real), {"_client": client, "__module__": real.__module__}
    )
    cls.settings = real.settings
    return cls


def _in_process(
    base: type[Any], real: type[Any] | None, client: TestClient, name: str
) -> type[Any]:
    """`base` (an in-process class) for transport `name`, taking `real`'s settings."""
    namespace: dict[str, Any] = {
        "_client": client,
        "transport": name,
        "_accepts": None if real is None else real.settings | base.settings,
    }
    if real is not None and issubclass(real, Consumer):
        namespace["route_options"] = real.route_options  # taken; one handler per queue
    cls: type[Any] = type(f"InProcess{real.__name__ if real else name}", (base,), namespace)
    if real is not None:
        cls.settings = real.settings | base.settings
    return cls
