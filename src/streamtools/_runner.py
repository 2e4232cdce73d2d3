"""ConsumerRunner: start consumers, serve until SIGINT/SIGTERM (or `stop()`), stop them
gracefully.

The runner knows no transport: a consumer whose transport serves on a port
(`Capabilities.serves_port`) gets the runner's host and port and carries its `/healthz` (and
`/metrics`, and with `docs=True` the AsyncAPI page); otherwise the runner serves them itself
(`_health`). `run()` serves on uvloop when it is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from streamtools import _docs_page, _telemetry, asyncapi
from streamtools._base import Consumer
from streamtools._health import (
    HEALTH_PATH,
    Answer,
    ServesPort,
    health_endpoint,
    serve_endpoints,
)
from streamtools._logging import default_logging
from streamtools._middleware import Middleware
from streamtools._types import Handler
from streamtools.errors import ConfigurationError, StreamtoolsError

logger = logging.getLogger("streamtools.runner")


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

    With `docs=True` (and `port`) the same server carries the AsyncAPI page of the consumers'
    queues: `/docs`, `/asyncapi.json` and `/asyncapi.yaml` (`streamtools docs serve`).

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
        middlewares: Sequence[Middleware] = (),
        docs: bool = False,
    ) -> None:
        self.consumers: list[Consumer[Any]] = list(
            consumers.values() if isinstance(consumers, Mapping) else consumers
        )
        if not self.consumers:
            raise ConfigurationError("ConsumerRunner needs at least one consumer")
        for consumer in self.consumers:
            if middlewares:  # outside each consumer's own
                consumer._wrap(middlewares)
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
        self.docs = docs
        if docs:
            if port is None:
                raise ConfigurationError(
                    "ConsumerRunner(docs=True) needs port=: the page is served next to /healthz"
                )
            self._document(bound=False)  # a transport or contract it cannot describe: now
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
        if self.docs:
            endpoints.update(_docs_page.docs_endpoints(lambda: self._document(bound=True)))
        served = [s for s in map(_port_server, self.consumers) if s is not None]
        for consumer in served:
            for path, endpoint in endpoints.items():
                consumer.mount(path, endpoint)
        if served:
            return None
        assert self.port is not None  # serve() checked
        self.health_port, stop = await serve_endpoints(
            endpoints,
            host=self.host or "localhost",
            port=self.port,
            headers=_docs_page.HEADERS if self.docs else None,
        )
        return stop

    def _document(self, *, bound: bool) -> dict[str, Any]:
        """The AsyncAPI document of the consumers' queues; its server is the address the
        HTTP consumers are `bound` to (before that, and on brokers, the default one)."""
        transports = sorted({consumer.transport for consumer in self.consumers})
        if len(transports) != 1:
            raise ConfigurationError(
                f"ConsumerRunner(docs=True) describes one transport; these consumers use "
                f"{', '.join(transports)} (serve each with 'streamtools docs serve')"
            )
        queues = {consumer.queue.name: consumer.queue for consumer in self.consumers}
        server = None
        served = [s for s in map(_port_server, self.consumers) if s is not None]
        if served and bound:
            scheme = "https" if getattr(served[0], "ssl", None) is not None else "http"
            host = served[0].host
            host = f"[{host}]" if ":" in host else host
            server = f"{scheme}://{host}:{served[0].port}"
        package = _docs_page.contracts_package(queues.values())
        return asyncapi.document(
            queues,
            title=package,
            version=_docs_page.distribution_version(package),
            transport=transports[0],
            server=server,
        )

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
                extra={"queue": consumer.queue.name, "transport": consumer.messaging_system},
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
        default_logging()
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
