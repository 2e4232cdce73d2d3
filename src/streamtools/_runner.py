"""Service helpers: HandleMsgs, HandlerFactory, ConsumerFactory and ConsumerRunner.

`ConsumerFactory.route` only records, like aiohttp's RouteTableDef: consumers are built
when `.instances` is first read (by the runner), so importing a service module reads no
environment and opens nothing. `ConsumerRunner` starts them all, serves until SIGINT/SIGTERM
(or `stop()`), and stops them gracefully. The runner knows no transport: a consumer whose
transport serves on a port (`Capabilities.serves_port`) gets the runner's host and port and
carries its `/healthz`; otherwise the runner serves `/healthz` itself (`_health`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, NamedTuple

import msgspec

from streamtools import _telemetry
from streamtools._base import Capabilities, Consumer, Producer
from streamtools._contracts import resolve_queue
from streamtools._health import (
    HEALTH_PATH,
    Answer,
    ServesPort,
    health_endpoint,
    serve_endpoints,
)
from streamtools._registry import CONSUMER_LOOPS, PRODUCERS
from streamtools._types import Handler, Queue, T
from streamtools.errors import ConfigurationError, StreamtoolsError, UnknownQueueError

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
        settings: dict[str, Mapping[str, object]] = {}
        for k in _OPTIONAL_KEYS:
            v = entry.get(k) or {}
            if not isinstance(v, Mapping):
                raise ConfigurationError(f"messages queue {key!r}: {k} must be a dict, got {v!r}")
            settings[k] = v
        try:
            return HandleMsgs(
                str(values["name"]),
                consumer_loop=str(values["consumer_loop"]),
                producer=str(values["producer"]),
                consumer_settings=settings["consumer_settings"],
                producer_settings=settings["producer_settings"],
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
            raise UnknownQueueError(f"no messages queue {key!r}; configured: {known}") from None

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


class _Recorded(NamedTuple):
    queue: Queue[Any] | str
    message_type: type[Any] | None
    options: dict[str, object]
    handler: Handler[Any]


class ConsumerFactory:
    """Flask-style routes: `@consumers.route(ORDERS_CREATED)` registers a handler.

    Routes only record, like aiohttp's RouteTableDef: nothing is built, read from the
    environment or opened until `.instances` is read (a `ConsumerRunner` reads it), so a
    wrong setting is reported when the service runs, not when its module is imported.
    Settings (e.g. RabbitMQ `url=`, `prefetch=`) go to every consumer; `host`/`port` go to
    consumers whose transport serves on a port (HTTP).
    """

    def __init__(
        self,
        queue_type: str,
        port: int | None = None,
        host: str | None = None,
        **settings: object,
    ) -> None:
        self.queue_type = queue_type
        self._consumer_cls = CONSUMER_LOOPS[queue_type]  # an unknown name fails here
        self.port = port
        self.host = host
        self.settings = settings
        self.handlers: dict[str, Handler[Any]] = {}
        """Queue name -> its first routed handler (known without building anything)."""
        self._recorded: list[_Recorded] = []
        self._instances: dict[str, Consumer[Any]] = {}
        self._built = 0  # how many of _recorded are registered on _instances

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
        for recorded in self._recorded:
            other.route(recorded.queue, message_type=recorded.message_type, **recorded.options)(
                recorded.handler
            )
        return other

    def route(
        self, queue: Queue[T] | str, *, message_type: type[T] | None = None, **options: object
    ) -> Callable[[Handler[T]], Handler[T]]:
        """Record the decorated handler for `queue`; `options` go to `@consumer(...)`."""
        name = resolve_queue(queue, message_type).name  # a bad queue name fails here

        def register(handler: Handler[T]) -> Handler[T]:
            if not asyncio.iscoroutinefunction(handler):
                raise ConfigurationError(
                    f"handler {getattr(handler, '__qualname__', handler)!r} must be an async def"
                )
            self._recorded.append(_Recorded(queue, message_type, dict(options), handler))
            self.handlers.setdefault(name, handler)
            return handler

        return register

    @property
    def instances(self) -> dict[str, Consumer[Any]]:
        """Queue name -> its consumer, built on first read with the routed handlers.

        Builds what was routed since the last read; raises the transport's
        ConfigurationError when a setting (or its environment variable) is wrong.
        """
        settings = dict(self.settings)
        if _serves_port(self._consumer_cls):
            for key, value in (("host", self.host), ("port", self.port)):
                if value is not None:
                    settings[key] = value
        for recorded in self._recorded[self._built :]:
            contract = resolve_queue(recorded.queue, recorded.message_type)
            # A second route on the same queue (e.g. GET beside POST) adds to its consumer.
            consumer = self._instances.get(contract.name)
            if consumer is None:
                consumer = self._consumer_cls(contract, **settings)
            consumer(**recorded.options)(recorded.handler)
            self._instances[contract.name] = consumer
            self._built += 1
        return self._instances


def _serves_port(consumer_cls: object) -> bool:
    capabilities = getattr(consumer_cls, "capabilities", None)
    return isinstance(capabilities, Capabilities) and capabilities.serves_port


def _port_server(consumer: Consumer[Any]) -> ServesPort | None:
    """The consumer as a ServesPort when its transport serves on a port, else None."""
    if not consumer.capabilities.serves_port:
        return None
    if not isinstance(consumer, ServesPort):
        raise ConfigurationError(
            f"{consumer!r}: its capabilities say it serves a port, but it has no settable "
            "host and port and no mount(path, endpoint)"
        )
    return consumer


class ConsumerRunner:
    """Start consumers, serve until SIGINT/SIGTERM, stop them gracefully.

    `run()` blocks like Flask's `app.run()` and exits with status 1 when a consumer cannot
    start; `await serve()` is the async form (raises instead). `consumers` are the instances
    (`ConsumerFactory.instances`); `handlers` are registered on consumers that lack one.

    With `port`, `GET /healthz` reports every consumer: on the port of the consumers that
    serve one (HTTP), which the runner's `port` and `host` then apply to (with `port=0`
    they all share the port the first one binds), else on a small server of its own.

    `run()` serves on uvloop when it is installed (`streamtools[speed]`); `uvloop=False`, or
    `STREAMTOOLS_UVLOOP=0`, keeps asyncio's own loop, and `uvloop=True` requires it.
    """

    def __init__(
        self,
        consumers: Mapping[str, Consumer[Any]] | Iterable[Consumer[Any]],
        handlers: Mapping[str, Handler[Any]] | None = None,
        port: int | None = None,
        host: str | None = None,
        *,
        shutdown_timeout: float = 30.0,
        metrics: bool | None = None,
        metrics_registry: Any = None,
        uvloop: bool | None = None,
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
            served = _port_server(consumer)
            if served is not None and host is not None:
                # The runner's host wins (its port too, in serve()), so a service is
                # configured in one place.
                served.host = host
        self.port = port
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        # Metrics: on when prometheus-client is installed (metrics=None), or as asked.
        self.metrics = _prometheus_installed() if metrics is None else bool(metrics)
        self.metrics_registry = metrics_registry
        self.uvloop = _use_uvloop(uvloop)
        if self.metrics:
            _telemetry.enable_metrics(metrics_registry)  # a ConfigurationError if missing
        self.on_startup: list[Callable[[], Awaitable[None]]] = []
        """Called before the consumers start, e.g. an outbox relay's `start` (a background
        task of its own); one that raises stops the runner with its error."""
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
        stop_endpoints: Callable[[], Awaitable[None]] | None = None
        try:
            if self.port is not None:
                stop_endpoints = await self._serve_endpoints()
            for callback in self.on_startup:
                await callback()
            await self._start_all()
            await self._stop.wait()
            logger.info("stopping: finishing in-flight handlers")
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close_all()
            if stop_endpoints is not None:
                await stop_endpoints()

    def health(self) -> tuple[bool, dict[str, object]]:
        """(healthy, report): healthy while every consumer is connected and consuming."""
        states = [consumer.health() for consumer in self.consumers]
        healthy = all(state["connected"] and state["consuming"] for state in states)
        return healthy, {"status": "ok" if healthy else "unavailable", "consumers": states}

    async def _serve_endpoints(self) -> Callable[[], Awaitable[None]] | None:
        """Mount /healthz on the consumers that serve a port, or serve it here: the stop of
        the runner's own server, or None when the consumers carry it."""
        endpoints = {HEALTH_PATH: health_endpoint(self.health)}
        if self.metrics:
            endpoints[METRICS_PATH] = _metrics_endpoint
        served = [s for s in map(_port_server, self.consumers) if s is not None]
        for consumer in served:
            for path, endpoint in endpoints.items():
                consumer.mount(path, endpoint)
        if served:
            return None
        assert self.port is not None  # serve() checked
        self.health_port, stop = await serve_endpoints(
            endpoints, host=self.host or "localhost", port=self.port
        )
        return stop

    async def _start_all(self) -> None:
        shared_port = self.port
        for consumer in self.consumers:
            consumer.shutdown_timeout = min(consumer.shutdown_timeout, self.shutdown_timeout)
            served = _port_server(consumer) if self.port is not None else None
            if served is not None and shared_port is not None:
                served.port = shared_port
            try:
                await consumer.start()
            except StreamtoolsError as exc:
                # Re-raised as it is (rebuilding it would lose its own fields): a note names
                # the consumer, and run() prints it.
                exc.add_note(f"{consumer!r} cannot start")
                raise
            if served is not None:
                # With port=0 the first binds a port; the others then share its server.
                shared_port = self.health_port = served.port
            logger.info(
                "serving %s on %s: %r",
                consumer.queue.name,
                consumer.transport,
                consumer,  # its repr names the host and port, or the broker (redacted)
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
            if os.environ.get("STREAMTOOLS_LOG_FORMAT", "").lower() == "json":
                handler = logging.StreamHandler()
                handler.setFormatter(JsonFormatter())
                logging.basicConfig(level=logging.WARNING, handlers=[handler])
            else:
                logging.basicConfig(
                    level=logging.WARNING,
                    format="%(asctime)s %(name)s %(levelname)s %(message)s",
                )
            logging.getLogger("streamtools.runner").setLevel(logging.INFO)
        try:
            with asyncio.Runner(loop_factory=_uvloop_factory() if self.uvloop else None) as runner:
                runner.run(self.serve())
        except StreamtoolsError as exc:
            notes: list[str] = getattr(exc, "__notes__", [])
            print(f"error: {': '.join([*notes, str(exc)])}", file=sys.stderr)
            raise SystemExit(1) from None


METRICS_PATH = "/metrics"


def _use_uvloop(wanted: bool | None) -> bool:
    # Explicit keyword first, then STREAMTOOLS_UVLOOP (default on), then whether it is there.
    if wanted is None:
        setting = os.environ.get("STREAMTOOLS_UVLOOP", "1").strip().lower()
        if setting not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ConfigurationError(
                f"STREAMTOOLS_UVLOOP must be 1 or 0 (true/false), got {setting!r}"
            )
        if setting in ("0", "false", "no", "off"):
            return False
        return importlib.util.find_spec("uvloop") is not None
    if not isinstance(wanted, bool):
        raise ConfigurationError(
            f"ConsumerRunner: uvloop must be True, False or None, got {wanted!r}"
        )
    if wanted and importlib.util.find_spec("uvloop") is None:
        raise ConfigurationError(
            "ConsumerRunner(uvloop=True) needs uvloop: pip install 'streamtools[speed]'"
        )
    return wanted


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    # Imported by name: an optional dependency, type-checked whether installed or not.
    factory: Callable[[], asyncio.AbstractEventLoop] = importlib.import_module(
        "uvloop"
    ).new_event_loop
    return factory


def _prometheus_installed() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def _metrics_endpoint() -> Answer:
    body, content_type = _telemetry.metrics_answer()
    return Answer(200, body, content_type)


# The attributes every LogRecord has; the rest are a line's `extra=` fields.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the line's fields
    (queue, message_id, transport, trace_id, ...). `STREAMTOOLS_LOG_FORMAT=json` selects it
    in `ConsumerRunner.run()`'s own logging setup."""

    _encode = staticmethod(msgspec.json.Encoder().encode)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value if isinstance(value, str | int | float | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return self._encode(line).decode()
