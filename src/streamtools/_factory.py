"""HandleMsgs and HandlerFactory: a consumer and a producer per queue, from arguments or a
"messages queues" config; each side's transport by its registered name."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from typing import Any, Generic

from streamtools._base import Consumer, Producer
from streamtools._registry import CONSUMER_LOOPS, PRODUCERS
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError, StreamtoolsError, UnknownQueueError


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
