"""Service helpers: HandleMsgs, HandlerFactory, ConsumerFactory and ConsumerRunner.

`ConsumerFactory.route` records like aiohttp's RouteTableDef: it builds consumers and
registers handlers but connects nothing; `ConsumerRunner` starts them all, serves until
SIGINT/SIGTERM (or `stop()`), and stops them gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic

from streamtools._base import Consumer, Producer
from streamtools._contracts import resolve_queue
from streamtools._registry import CONSUMER_LOOPS, PRODUCERS
from streamtools._types import Handler, Queue, T
from streamtools.errors import ConfigurationError, StreamtoolsError

logger = logging.getLogger("streamtools.runner")


class HandleMsgs(Generic[T]):
    """A consumer and a producer on the same queue, possibly over different transports.

    `HandleMsgs(queue, MEMORY)` uses one transport for both; `HandleMsgs(queue,
    consumer_loop=RMQ, producer=HTTP)` mixes them. `queue` is a contract or a name (its
    registered contract, else raw JSON). Settings are passed to the constructors.
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        queue_type: str | None = None,
        *,
        consumer_loop: str | None = None,
        producer: str | None = None,
        message_type: type[T] | None = None,
        consumer_settings: Mapping[str, object] | None = None,
        producer_settings: Mapping[str, object] | None = None,
    ) -> None:
        consumer_name = consumer_loop or queue_type
        producer_name = producer or queue_type
        if consumer_name is None or producer_name is None:
            raise ConfigurationError(
                "HandleMsgs needs queue_type=, or both consumer_loop= and producer="
            )
        consumer_cls = CONSUMER_LOOPS[consumer_name]
        producer_cls = PRODUCERS[producer_name]
        self.consumer: Consumer[T] = consumer_cls(
            queue, message_type=message_type, **dict(consumer_settings or {})
        )
        self.producer: Producer[T] = producer_cls(
            self.consumer.queue, **dict(producer_settings or {})
        )
        self.queue: Queue[T] = self.consumer.queue

    def __repr__(self) -> str:
        return f"HandleMsgs({self.consumer!r}, {self.producer!r})"

    async def a_init(self) -> None:
        """Connect the consumer and the producer."""
        await asyncio.gather(self.consumer.a_init(), self.producer.a_init())

    async def close(self) -> None:
        """Close both; safe to call more than once."""
        await asyncio.gather(self.consumer.close(), self.producer.close())


_ENTRY_KEYS = frozenset({"name", "consumer_loop", "producer"})
_OPTIONAL_KEYS = frozenset({"consumer_settings", "producer_settings"})


class HandlerFactory(Mapping[str, HandleMsgs[Any]]):
    """HandleMsgs pairs built from a "messages queues" config; `factory["queue_1"]` is one.

    Each entry is `{"name": queue name, "consumer_loop": transport, "producer": transport}`,
    optionally with `consumer_settings` / `producer_settings` dicts. Transports may differ
    per entry and within one. A malformed entry fails here, naming the entry.
    """

    def __init__(self, messages_queues: Mapping[str, Mapping[str, object]]) -> None:
        self._pairs: dict[str, HandleMsgs[Any]] = {}
        for key, entry in messages_queues.items():
            self._pairs[key] = self._build(key, entry)

    @staticmethod
    def _build(key: str, entry: Mapping[str, object]) -> HandleMsgs[Any]:
        if not isinstance(entry, Mapping):
            raise ConfigurationError(f"messages queue {key!r}: expected a dict, got {entry!r}")
        missing = _ENTRY_KEYS - set(entry)
        unknown = set(entry) - _ENTRY_KEYS - _OPTIONAL_KEYS
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(sorted(missing))}")
            if unknown:
                problems.append(f"unknown key {', '.join(sorted(unknown))}")
            raise ConfigurationError(
                f"messages queue {key!r}: {'; '.join(problems)}; "
                f"an entry has name, consumer_loop and producer"
            )
        values = {k: entry[k] for k in _ENTRY_KEYS}
        for k, v in values.items():
            if not isinstance(v, str) or not v:
                raise ConfigurationError(f"messages queue {key!r}: {k} must be a string, got {v!r}")
        settings = {k: entry.get(k) or {} for k in _OPTIONAL_KEYS}
        for k, v in settings.items():
            if not isinstance(v, Mapping):
                raise ConfigurationError(f"messages queue {key!r}: {k} must be a dict, got {v!r}")
        try:
            return HandleMsgs(
                str(values["name"]),
                consumer_loop=str(values["consumer_loop"]),
                producer=str(values["producer"]),
                consumer_settings=settings["consumer_settings"],  # type: ignore[arg-type]
                producer_settings=settings["producer_settings"],  # type: ignore[arg-type]
            )
        except StreamtoolsError as exc:
            raise ConfigurationError(f"messages queue {key!r}: {exc}") from exc
        except TypeError as exc:  # a setting the transport's constructor does not take
            raise ConfigurationError(f"messages queue {key!r}: {exc}") from exc

    def __getitem__(self, key: str) -> HandleMsgs[Any]:
        try:
            return self._pairs[key]
        except KeyError:
            known = ", ".join(sorted(self._pairs)) or "none"
            raise KeyError(f"no messages queue {key!r}; configured: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    async def a_init(self) -> None:
        """Connect every pair."""
        await asyncio.gather(*(pair.a_init() for pair in self._pairs.values()))

    async def close(self) -> None:
        """Close every pair."""
        await asyncio.gather(*(pair.close() for pair in self._pairs.values()))


class ConsumerFactory:
    """Flask-style routes: `@consumers.route(ORDERS_CREATED)` registers a handler.

    Routes only record: consumers are built (no connection is made) and handed to a
    `ConsumerRunner` through `.instances` and `.handlers`. Settings (e.g. RabbitMQ `url=`,
    `prefetch=`) go to every consumer; `host`/`port` are where HTTP consumers serve.
    """

    def __init__(
        self,
        queue_type: str,
        port: int | None = None,
        host: str | None = None,
        **settings: object,
    ) -> None:
        self.queue_type = queue_type
        self._consumer_cls = CONSUMER_LOOPS[queue_type]
        self.port = port
        self.host = host
        self.settings = settings
        self.instances: dict[str, Consumer[Any]] = {}
        self.handlers: dict[str, Handler[Any]] = {}
        self._recorded: list[tuple[Queue[Any] | str, type[Any] | None, dict[str, object], Any]] = []

    def using(
        self, queue_type: str | None = None, *, port: int | None = None, host: str | None = None
    ) -> ConsumerFactory:
        """The same routes on another transport, host or port (what `streamtools run` does)."""
        other = ConsumerFactory(
            queue_type or self.queue_type,
            port=port if port is not None else self.port,
            host=host if host is not None else self.host,
            **self.settings,
        )
        for queue, message_type, options, handler in self._recorded:
            other.route(queue, message_type=message_type, **options)(handler)
        return other

    def route(
        self, queue: Queue[T] | str, *, message_type: type[T] | None = None, **options: object
    ) -> Callable[[Handler[T]], Handler[T]]:
        """Register the decorated handler for `queue`; `options` go to `@consumer(...)`."""
        settings = dict(self.settings)
        if _serves_http(self._consumer_cls):
            for key, value in (("host", self.host), ("port", self.port)):
                if value is not None:
                    settings[key] = value
        contract = resolve_queue(queue, message_type)
        name = contract.name
        # A second route on the same queue (e.g. GET beside POST) adds to its consumer.
        consumer: Consumer[T] = self.instances.get(name) or self._consumer_cls(contract, **settings)
        decorate = consumer(**options)

        def register(handler: Handler[T]) -> Handler[T]:
            decorate(handler)
            self._recorded.append((queue, message_type, dict(options), handler))
            self.instances[name] = consumer
            self.handlers.setdefault(name, handler)
            return handler

        return register


def _serves_http(consumer_cls: object) -> bool:
    return getattr(consumer_cls, "transport", "") == "HTTPHandler"


class ConsumerRunner:
    """Start consumers, serve until SIGINT/SIGTERM, stop them gracefully.

    `run()` blocks like Flask's `app.run()` and exits with status 1 when a consumer cannot
    start; `await serve()` is the async form (raises instead). `consumers` are the instances
    (`ConsumerFactory.instances`); `handlers` are registered on consumers that lack one.
    """

    def __init__(
        self,
        consumers: Mapping[str, Consumer[Any]] | Iterable[Consumer[Any]],
        handlers: Mapping[str, Handler[Any]] | None = None,
        port: int | None = None,
        host: str | None = None,
        *,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.consumers: list[Consumer[Any]] = list(
            consumers.values() if isinstance(consumers, Mapping) else consumers
        )
        if not self.consumers:
            raise ConfigurationError("ConsumerRunner needs at least one consumer")
        for consumer in self.consumers:
            handler = (handlers or {}).get(consumer.queue.name)
            if not consumer.routes:
                if handler is None:
                    raise ConfigurationError(
                        f"{consumer!r} has no handler; route one or pass it in handlers="
                    )
                consumer()(handler)
            if _serves_http(type(consumer)) and host is not None:
                # The runner's host wins (its port too: serve() moves HTTP consumers onto the
                # port it serves /healthz on), so a service is configured in one place.
                consumer.host = host  # type: ignore[attr-defined]
        self.port = port
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        self.on_shutdown: list[Callable[[], Awaitable[None]]] = []
        """Called after the consumers stopped, e.g. a producer's `close`, like aiohttp's
        `on_cleanup`: handlers may still send until then."""
        self._stop: asyncio.Event | None = None
        self.health_port: int | None = None
        """The port `GET /healthz` is served on once serving (None without `port`)."""

    def stop(self) -> None:
        """Ask a running `serve()` to stop gracefully (what SIGINT and SIGTERM do)."""
        if self._stop is not None:
            self._stop.set()

    async def serve(self) -> None:
        """Start every consumer and serve until `stop()`; then stop them gracefully."""
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        stop_health: Callable[[], Awaitable[None]] | None = None
        try:
            if self.port is not None:
                stop_health = await self._serve_health()
            await self._start_all()
            await self._stop.wait()
            logger.info("stopping: finishing in-flight handlers")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close_all()
            if stop_health is not None:
                await stop_health()

    def health(self) -> tuple[bool, dict[str, object]]:
        """(healthy, report): healthy while every consumer is connected and consuming."""
        states = [consumer.health() for consumer in self.consumers]
        healthy = all(state["connected"] and state["consuming"] for state in states)
        return healthy, {"status": "ok" if healthy else "unavailable", "consumers": states}

    async def _serve_health(self) -> Callable[[], Awaitable[None]]:
        # On the HTTP consumers' server when there are any; its own otherwise. Started first
        # so that with port=0 every HTTP consumer shares the port it bound.
        from streamtools.transports.http import serve_health

        http = [c for c in self.consumers if _serves_http(type(c))]
        ssl = getattr(http[0], "ssl", None) if http else None
        self.health_port, stop = await serve_health(
            self.health, host=self.host, port=self.port, ssl=ssl
        )
        for consumer in http:
            consumer.port = self.health_port  # type: ignore[attr-defined]
        return stop

    async def _start_all(self) -> None:
        for consumer in self.consumers:
            consumer.shutdown_timeout = min(consumer.shutdown_timeout, self.shutdown_timeout)
            try:
                await consumer.start()
            except StreamtoolsError as exc:
                raise type(exc)(f"{consumer!r} cannot start: {exc}") from exc
            logger.info(
                "serving %s on %s",
                consumer.queue.name,
                consumer.transport,
                extra={"queue": consumer.queue.name, "transport": consumer.transport},
            )

    async def _close_all(self) -> None:
        results = await asyncio.gather(*(c.close() for c in self.consumers), return_exceptions=True)
        for consumer, result in zip(self.consumers, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("closing %r failed: %s", consumer, result)
        for callback in self.on_shutdown:
            try:
                await callback()
            except Exception:
                logger.exception("on_shutdown callback %r failed", callback)

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM; exit with status 1 if a consumer cannot start.

        Like Flask's `app.run()`, it logs to stderr at INFO when the application has not
        configured logging itself.
        """
        if not logging.getLogger().handlers:
            logging.basicConfig(
                level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
            )
            logging.getLogger("streamtools.runner").setLevel(logging.INFO)
        try:
            asyncio.run(self.serve())
        except StreamtoolsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
