"""The transport registries `PRODUCERS` and `CONSUMER_LOOPS`, and the name constants.

Entries are imported on first use, so `import streamtools` does not pull in aiohttp or
aio-pika until a service picks that transport.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, Generic, Protocol, TypeVar, cast, overload

from streamtools._base import Consumer, Producer
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError, UnknownTransportError

HTTP: Final = "HTTPHandler"
RMQ: Final = "RMQIOHandler"
MEMORY: Final = "MemoryHandler"
KAFKA: Final = "KafkaHandler"
NATS: Final = "NATSHandler"
REDIS: Final = "RedisHandler"


class ProducerClass(Protocol):
    """A Producer class as the registry hands it out: `Queue[T]` in, `Producer[T]` out."""

    @overload
    def __call__(self, queue: Queue[T], /, **settings: object) -> Producer[T]: ...
    @overload
    def __call__(
        self, queue: str, /, *, message_type: type[T], **settings: object
    ) -> Producer[T]: ...
    @overload
    def __call__(self, queue: str, /, **settings: object) -> Producer[Any]: ...


class ConsumerClass(Protocol):
    """A Consumer class as the registry hands it out: `Queue[T]` in, `Consumer[T]` out."""

    @overload
    def __call__(self, queue: Queue[T], /, **settings: object) -> Consumer[T]: ...
    @overload
    def __call__(
        self, queue: str, /, *, message_type: type[T], **settings: object
    ) -> Consumer[T]: ...
    @overload
    def __call__(self, queue: str, /, **settings: object) -> Consumer[Any]: ...


C = TypeVar("C", ProducerClass, ConsumerClass)


class Registry(Mapping[str, C], Generic[C]):
    """Transport name -> class. Lowercase aliases resolve too; unknown names list the known."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._targets: dict[str, str | type[Any]] = {}
        self._aliases: dict[str, str] = {}
        # streamtools.testing's substitutions, innermost last (see `_override`).
        self._overrides: list[Callable[[str, Callable[[], C]], C]] = []

    def register(self, name: str, target: str | type[Any], *aliases: str) -> None:
        """Add a transport: `target` is the class, or `"module:Class"` to import on first use."""
        self._targets[name] = target
        for alias in (name.lower(), *aliases):
            self._aliases[alias] = name

    def _canonical(self, name: str) -> str:
        if name in self._targets:
            return name
        canonical = self._aliases.get(name.lower())
        if canonical is None:
            known = ", ".join(sorted(self._targets))
            aliases = ", ".join(
                sorted(a for a, n in self._aliases.items() if a not in (n, n.lower()))
            )
            raise UnknownTransportError(
                f"unknown {self._kind} transport {name!r}; known: {known} (aliases: {aliases})"
            )
        return canonical

    def __getitem__(self, name: str) -> C:
        canonical = self._canonical(name)
        if self._overrides:
            return self._overrides[-1](canonical, lambda: self._load(canonical))
        return self._load(canonical)

    @contextlib.contextmanager
    def _override(self, resolve: Callable[[str, Callable[[], C]], C]) -> Iterator[None]:
        """While open, `self[name]` is `resolve(canonical name, load)`, `load()` giving the
        registered class; the hook of `streamtools.testing`. Closing removes it (nested ones
        close in any order)."""
        self._overrides.append(resolve)
        try:
            yield
        finally:
            self._overrides.remove(resolve)

    def _load(self, canonical: str) -> C:
        target = self._targets[canonical]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            try:
                imported = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if exc.name is None or exc.name.partition(".")[0] == "streamtools":
                    raise
                # A built-in transport's client library is the extra named after its module.
                fix = (
                    f"pip install 'streamtools[{module.rpartition('.')[2]}]'"
                    if module.startswith("streamtools.transports.")
                    else f"install {exc.name}"
                )
                raise ConfigurationError(
                    f"the {canonical} transport needs {exc.name}, which is not installed: {fix}"
                ) from exc
            target = self._targets[canonical] = getattr(imported, attr)
        # The class's constructor is the Protocol's __call__; mypy cannot see through `type`.
        return cast(C, target)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._targets or name.lower() in self._aliases)

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __repr__(self) -> str:
        return f"Registry({self._kind}: {', '.join(self._targets)})"


PRODUCERS: Final[Registry[ProducerClass]] = Registry("producer")
CONSUMER_LOOPS: Final[Registry[ConsumerClass]] = Registry("consumer")
CONSUMERS: Final = CONSUMER_LOOPS

_BUILTIN: Final[Mapping[str, tuple[str, str, str]]] = {
    HTTP: ("streamtools.transports.http", "HTTPProducer", "HTTPConsumer"),
    MEMORY: ("streamtools.transports.memory", "MemoryProducer", "MemoryConsumer"),
    RMQ: ("streamtools.transports.rabbitmq", "RabbitMQProducer", "RabbitMQConsumer"),
    KAFKA: ("streamtools.transports.kafka", "KafkaProducer", "KafkaConsumer"),
    NATS: ("streamtools.transports.nats", "NATSProducer", "NATSConsumer"),
    REDIS: ("streamtools.transports.redis", "RedisProducer", "RedisConsumer"),
}
_ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    MEMORY: ("memory",),
    HTTP: ("http",),
    RMQ: ("rabbitmq", "rmq", "amqp"),
    KAFKA: ("kafka",),
    NATS: ("nats", "jetstream"),
    REDIS: ("redis",),
}


def _register_builtin() -> None:
    for name, (module, producer, consumer) in _BUILTIN.items():
        PRODUCERS.register(name, f"{module}:{producer}", *_ALIASES[name])
        CONSUMER_LOOPS.register(name, f"{module}:{consumer}", *_ALIASES[name])


_register_builtin()
