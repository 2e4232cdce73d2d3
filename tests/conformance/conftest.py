"""The conformance harness: one entry per registry name, so every transport runs the suite.

A transport added to the registry without a harness here fails `test_every_transport_has_a_harness`
instead of being silently skipped.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import msgspec
import pytest

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    Capabilities,
    Consumer,
    Producer,
    Queue,
    RetryPolicy,
)
from streamtools._types import T


class LineItem(msgspec.Struct, kw_only=True):
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")]
    quantity: Annotated[int, msgspec.Meta(ge=1)]


class ConfMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The message every conformance test sends: nested, with uuid and tz-aware time."""

    seq: int
    order_id: UUID
    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
    items: Annotated[list[LineItem], msgspec.Meta(min_length=1)]
    tag: str = ""


class ConfReply(msgspec.Struct, kw_only=True):
    seq: int
    total_quantity: int


@dataclass
class Harness:
    """How to build a transport's producers and consumers against the test servers."""

    name: str
    consumer_settings: dict[str, object] = field(default_factory=dict)
    # Producer settings may depend on the started consumer (HTTP: the bound port).
    producer_settings: Callable[[Consumer[Any] | None], dict[str, object]] = lambda _: {}
    # Called with every queue name a test used, after the test: delete broker state.
    cleanup: Callable[[list[str]], Awaitable[None]] | None = None
    # Whether the broker has a queue of that name (queued transports only).
    queue_exists: Callable[[str], Awaitable[bool]] | None = None
    # Deliver (body, headers) to the consumer's queue as a peer without streamtools would.
    send_foreign: Callable[[Consumer[Any], bytes, dict[str, object]], Awaitable[None]] | None = None
    # Send options that keep a producer's messages in one ordered stream (Kafka: one key).
    ordered_send: dict[str, object] = field(default_factory=dict)
    # Producer settings for a burst above the consumer's in-flight limit: a transport that
    # sheds load (HTTP answers 503) needs its producer to send again until taken.
    burst_settings: dict[str, object] = field(default_factory=dict)
    used_queues: list[str] = field(default_factory=list)

    @property
    def capabilities(self) -> Capabilities:
        return CONSUMER_LOOPS[self.name].capabilities  # type: ignore[attr-defined, no-any-return]

    def consumer(self, queue: Queue[T], **overrides: object) -> Consumer[T]:
        self.used_queues.append(queue.name)
        return CONSUMER_LOOPS[self.name](queue, **{**self.consumer_settings, **overrides})

    def producer(
        self, queue: Queue[T], consumer: Consumer[Any] | None = None, **overrides: object
    ) -> Producer[T]:
        self.used_queues.append(queue.name)
        return PRODUCERS[self.name](queue, **{**self.producer_settings(consumer), **overrides})


# Fast retries so the failure tests finish quickly; attempts=2 means 3 attempts in all.
FAST_RETRY = RetryPolicy(attempts=2, delay=0.02)
QUEUED_SETTINGS: dict[str, object] = {"retry": FAST_RETRY, "shutdown_timeout": 10}


def _memory(request: pytest.FixtureRequest) -> Harness:
    from streamtools.transports.memory import memory_broker

    async def queue_exists(name: str) -> bool:
        return name in memory_broker()._queues

    # No send_foreign: nothing but streamtools puts messages on the in-process broker.
    return Harness(
        "MemoryHandler", consumer_settings=dict(QUEUED_SETTINGS), queue_exists=queue_exists
    )


HarnessFactory = Callable[[pytest.FixtureRequest], Harness]
HARNESSES: dict[str, HarnessFactory] = {"MemoryHandler": _memory}


def _discover() -> None:
    # Each transport keeps its harness in tests/conformance/harness_<name>.py, exporting
    # HARNESS_NAME (the registry name) and make_harness(request) -> Harness.
    for path in sorted(Path(__file__).parent.glob("harness_*.py")):
        module = importlib.import_module(f"tests.conformance.{path.stem}")
        HARNESSES[module.HARNESS_NAME] = module.make_harness


_discover()


@pytest.fixture(params=sorted(PRODUCERS))
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    name: str = request.param
    if name not in HARNESSES:
        pytest.fail(f"transport {name!r} is registered but has no conformance harness")
    h = HARNESSES[name](request)
    yield h
    if h.cleanup is not None:
        await h.cleanup(sorted(set(h.used_queues)))


@pytest.fixture
def traced() -> Iterator[Any]:
    """streamtools' spans recorded by the real OpenTelemetry SDK, in memory."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from streamtools import configure_tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_tracing(provider)
    try:
        yield exporter
    finally:
        configure_tracing(None)
        provider.shutdown()
