"""ConsumerFactory: Flask-style routes of handlers to queues on one transport.

`ConsumerFactory.route` only records, like aiohttp's RouteTableDef: consumers are built
when `.instances` is first read (by the runner), so importing a service module reads no
environment and opens nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast, overload

from streamtools._base import Capabilities, Consumer
from streamtools._batching import Batch, BatchHandler
from streamtools._contracts import resolve_queue
from streamtools._middleware import Middleware, checked
from streamtools._registry import CONSUMER_LOOPS
from streamtools._types import Handler, Queue, T
from streamtools.errors import ConfigurationError


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
    Settings (e.g. RabbitMQ `url=`, `limits=`) go to every consumer; `host`/`port` go to
    consumers whose transport serves on a port (HTTP).
    """

    def __init__(
        self,
        queue_type: str,
        port: int | None = None,
        host: str | None = None,
        *,
        middlewares: Sequence[Middleware] = (),
        **settings: object,
    ) -> None:
        self.queue_type = queue_type
        self._consumer_cls = CONSUMER_LOOPS[queue_type]  # an unknown name fails here
        self.port = port
        self.host = host
        self.settings = settings
        if middlewares:  # every consumer of the factory gets them (a consumer setting)
            self.settings["middlewares"] = checked("ConsumerFactory", middlewares)
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
            **cast(dict[str, Any], self.settings),  # middlewares= among them, checked once
        )
        for recorded in self._recorded:
            other.route(recorded.queue, message_type=recorded.message_type, **recorded.options)(
                recorded.handler
            )
        return other

    @overload
    def route(  # type: ignore[overload-overlap]  # batch= picks the first
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        batch: Batch,
        **options: object,
    ) -> Callable[[BatchHandler[T]], BatchHandler[T]]: ...
    @overload
    def route(
        self, queue: Queue[T] | str, *, message_type: type[T] | None = None, **options: object
    ) -> Callable[[Handler[T]], Handler[T]]: ...
    def route(
        self, queue: Queue[T] | str, *, message_type: type[T] | None = None, **options: object
    ) -> Callable[[Any], Any]:
        """Record the decorated handler for `queue`; `options` go to `@consumer(...)`
        (`batch=Batch(...)`: the handler takes `list[T]`)."""
        name = resolve_queue(queue, message_type).name  # a bad queue name fails here

        def register(handler: Any) -> Any:
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
