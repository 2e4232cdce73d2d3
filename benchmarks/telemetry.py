"""What tracing and metrics cost: a memory-transport round trip with each on, against off.

The memory transport makes the round trip pure CPU (no broker), so the overhead is not
hidden behind network time: on RabbitMQ, Kafka or HTTP its share is smaller. Ratio = on / off
(1.00x = free). Tracing runs the real OpenTelemetry SDK with a span processor whose exporter
drops everything; metrics count into a private prometheus-client registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec

from benchmarks.harness import Case, Contender, time_ops
from streamtools import Limits, Queue, _telemetry, configure_tracing, enable_metrics
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer


class Tick(msgspec.Struct):
    n: int
    name: str


@contextmanager
def _tracing() -> Iterator[None]:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import (
        SimpleSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    class Drop(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Drop()))
    configure_tracing(provider)
    try:
        yield
    finally:
        configure_tracing(None)
        provider.shutdown()


@contextmanager
def _metrics() -> Iterator[None]:
    from prometheus_client import CollectorRegistry

    previous = _telemetry._metrics
    enable_metrics(CollectorRegistry())
    try:
        yield
    finally:
        _telemetry._metrics = previous


@contextmanager
def _off() -> Iterator[None]:
    previous = _telemetry._metrics
    _telemetry._metrics = None
    try:
        yield
    finally:
        _telemetry._metrics = previous


async def _round_trip(count: int) -> tuple[int, float]:
    broker = MemoryBroker()
    queue = Queue("bench.telemetry", Tick)
    done = asyncio.Event()
    handled = 0
    consumer = MemoryConsumer(queue, broker=broker, limits=Limits(max_in_flight=64))

    @consumer()
    async def handle(msg: Tick) -> None:
        nonlocal handled
        handled += 1
        if handled == count:
            done.set()

    await consumer.start()
    producer = MemoryProducer(queue, broker=broker)
    await producer.a_init()

    async def body() -> None:
        for start in range(0, count, 64):
            await asyncio.gather(
                *(producer.send(Tick(n=n, name="tick")) for n in range(start, start + 64))
            )
        await done.wait()

    try:
        return await time_ops(count, body)
    finally:
        await producer.close()
        await consumer.close()


def _with(context: Any, count: int) -> Any:
    async def run() -> tuple[int, float]:
        with context():
            return await _round_trip(count)

    return run


def cases(count: int) -> list[Case]:
    off = Contender("tracing and metrics off", _with(_off, count))
    return [
        Case(
            "telemetry: memory send+handle, tracing on (SDK, exporter drops)",
            Contender("streamtools, tracing on", _with(_tracing, count)),
            [off],
            note="(reported: on / off)",
        ),
        Case(
            "telemetry: memory send+handle, metrics on (prometheus-client)",
            Contender("streamtools, metrics on", _with(_metrics, count)),
            [Contender("tracing and metrics off", _with(_off, count))],
            note="(reported: on / off)",
        ),
    ]
