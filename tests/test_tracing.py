"""Tracing end to end with the real OpenTelemetry SDK and the contrib instrumentations a
service may already run (aiohttp client and server, aio-pika, aiokafka): one trace id from
an HTTP request through a bridge service to a RabbitMQ or Kafka consumer, spans not doubled,
and `traceparent` on the wire for plain clients."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import msgspec
import pytest
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from opentelemetry import trace
from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
from opentelemetry.instrumentation.aiokafka import AIOKafkaInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streamtools import (
    HTTP,
    KAFKA,
    PRODUCERS,
    RMQ,
    Batch,
    BatchError,
    HandlerFactory,
    Queue,
    RetryPolicy,
    configure_tracing,
)
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.conftest import eventually, free_port, unique_name
from tests.support.queues import delete_queues

WAIT = 60.0


class Order(msgspec.Struct):
    n: int


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    configure_tracing(provider)
    instrumentors: list[Any] = [
        AioHttpClientInstrumentor(),
        AioHttpServerInstrumentor(),
        AioPikaInstrumentor(),
        AIOKafkaInstrumentor(),
    ]
    for instrumentor in instrumentors:
        with warnings.catch_warnings():
            # aiohttp-server's instrumentation subclasses web.Application, which aiohttp
            # deprecates (streamtools serves with the low-level web.Server: not affected)
            warnings.simplefilter("ignore", DeprecationWarning)
            instrumentor.instrument(tracer_provider=provider)
    try:
        yield exporter
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        configure_tracing(None)
        provider.shutdown()


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


@pytest.fixture(params=[RMQ, KAFKA])
async def downstream(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The transport the bridge produces to, with its settings."""
    if request.param == RMQ:
        url = request.getfixturevalue("rabbitmq_url")
        name = unique_name("st-trace")
        yield RMQ, {"url": url, "name": name}
        await delete_queues(url, [name])
    else:
        servers = request.getfixturevalue("kafka_bootstrap")
        yield KAFKA, {"bootstrap_servers": servers, "name": unique_name("st-trace")}


async def test_one_trace_through_the_handler_factory_bridge_to_a_broker(
    spans: InMemorySpanExporter, downstream: tuple[str, dict[str, Any]]
) -> None:
    transport, settings = downstream
    name = settings.pop("name")
    broker_queue: Queue[Any] = Queue(name, object)
    http_queue: Queue[Any] = Queue(unique_name("st-trace-in"), object)
    landed: list[tuple[int, int]] = []
    arrived = asyncio.Event()

    port = free_port()
    # The seed's HandlerFactory shape: HTTP in, the broker out.
    factory = HandlerFactory(
        {
            "in": {
                "name": http_queue.name,
                "consumer_loop": HTTP,
                "producer": HTTP,
                "consumer_settings": {"host": "127.0.0.1", "port": port},
                "producer_settings": {"host": "127.0.0.1", "port": port},
            },
            "out": {
                "name": broker_queue.name,
                "consumer_loop": transport,
                "producer": transport,
                "consumer_settings": settings,
                "producer_settings": settings,
            },
        }
    )
    entry, out = factory["in"], factory["out"]

    @out.consumer()
    async def land(msg: dict[str, int]) -> None:
        context = trace.get_current_span().get_span_context()
        landed.append((msg["n"], context.trace_id))
        arrived.set()

    @entry.consumer()
    async def forward(msg: dict[str, int]) -> None:
        await out.producer.send(msg)

    await factory.a_init()
    await out.consumer.start()
    await entry.consumer.start()
    try:
        sent_id = await entry.producer.send({"n": 7})
        async with asyncio.timeout(WAIT):
            await arrived.wait()
    finally:
        await factory.close()
    finished = list(spans.get_finished_spans())
    http_send = _named(finished, f"send {http_queue.name}")
    http_process = _named(finished, f"process {http_queue.name}")
    broker_send = _named(finished, f"send {broker_queue.name}")
    broker_process = _named(finished, f"process {broker_queue.name}")
    # One of each: the contrib instrumentations add their own spans, never a second one of ours.
    assert [len(x) for x in (http_send, http_process, broker_send, broker_process)] == [1] * 4
    trace_id = http_send[0].context.trace_id
    assert http_send[0].attributes is not None
    assert http_send[0].attributes["messaging.message.id"] == sent_id
    ours = (*http_send, *http_process, *broker_send, *broker_process)
    assert {s.context.trace_id for s in ours} == {trace_id}
    assert landed == [(7, trace_id)]  # the handler ran inside the same trace
    # The chain: each of our spans descends from the one before, directly or through one
    # span of a contrib instrumentation (aiohttp's client span, aiokafka's send span, which
    # injects its own traceparent into the record).
    by_id = {s.context.span_id: s for s in finished}

    def descends(child: ReadableSpan, ancestor: ReadableSpan) -> bool:
        parent, hops = child.parent, 0
        while parent is not None and parent.span_id != ancestor.context.span_id:
            hop = by_id.get(parent.span_id)
            if hop is None or hops == 1:
                return False
            parent, hops = hop.parent, hops + 1
        return parent is not None

    assert descends(http_process[0], http_send[0])
    assert broker_send[0].parent is not None
    assert broker_send[0].parent.span_id == http_process[0].context.span_id
    assert descends(broker_process[0], broker_send[0])
    assert broker_process[0].attributes is not None
    assert broker_process[0].attributes["messaging.system"] == out.consumer.messaging_system
    assert broker_process[0].attributes["streamtools.outcome"] == "ok"


async def test_plain_clients_see_traceparent_on_the_message(
    spans: InMemorySpanExporter, rabbitmq_url: str, kafka_bootstrap: str
) -> None:
    rabbit_queue = unique_name("st-trace-raw")
    topic = unique_name("st-trace-raw")
    try:
        async with PRODUCERS[RMQ](Queue(rabbit_queue, Order), url=rabbitmq_url) as rabbit:
            await rabbit.send(Order(n=1))
        async with PRODUCERS[KAFKA](
            Queue(topic, Order), bootstrap_servers=kafka_bootstrap
        ) as kafka:
            await kafka.send(Order(n=2))
        connection = await aio_pika.connect(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(rabbit_queue, passive=True)
            message = await queue.get(timeout=10)
            assert message is not None
            await message.ack()
            amqp_parent = message.headers["traceparent"]
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            record = await asyncio.wait_for(consumer.getone(), WAIT)
        finally:
            await consumer.stop()
        # aiokafka's instrumentation adds a traceparent of its own (its send span, a child
        # of ours) after ours: a plain client sees both.
        kafka_parents = [v.decode() for k, v in record.headers if k == "traceparent"]
    finally:
        with contextlib.suppress(Exception):
            await delete_queues(rabbitmq_url, [rabbit_queue])
    sends = {
        s.name: s for s in spans.get_finished_spans() if s.name.startswith("send st-trace-raw")
    }
    rabbit_send, kafka_send = sends[f"send {rabbit_queue}"], sends[f"send {topic}"]
    # W3C: 00-<trace id>-<span id of the send>-<flags>
    assert str(amqp_parent).split("-")[1:3] == [
        f"{rabbit_send.context.trace_id:032x}",
        f"{rabbit_send.context.span_id:016x}",
    ]
    assert kafka_parents[0].split("-")[1:3] == [
        f"{kafka_send.context.trace_id:032x}",
        f"{kafka_send.context.span_id:016x}",
    ]
    assert all(p.split("-")[1] == f"{kafka_send.context.trace_id:032x}" for p in kafka_parents)


async def test_a_batch_gives_each_message_its_own_span_with_its_outcome(
    spans: InMemorySpanExporter,
) -> None:
    broker, queue = MemoryBroker(), Queue(unique_name("st-trace-batch"), Order)
    consumer = MemoryConsumer(queue, broker=broker, retry=RetryPolicy(attempts=0))
    seen: list[list[int]] = []

    @consumer(batch=Batch(max_size=3, max_wait=5.0))
    async def handle(batch: list[Order]) -> None:
        seen.append([msg.n for msg in batch])
        raise BatchError({1: ValueError("the second is wrong")})

    await consumer.start()
    try:
        producer = MemoryProducer(queue, broker=broker)
        sent = [await producer.send(Order(n)) for n in range(3)]
        name = f"process {queue.name}"
        await eventually(lambda: len(_named(list(spans.get_finished_spans()), name)) == 3, "spans")
    finally:
        await consumer.close()
    assert seen == [[0, 1, 2]]
    processed = {
        span.attributes["messaging.message.id"]: span
        for span in _named(list(spans.get_finished_spans()), name)
        if span.attributes is not None
    }
    assert set(processed) == set(sent)  # (send returns the message id)
    outcomes = [dict(processed[id].attributes or {})["streamtools.outcome"] for id in sent]
    assert outcomes[0] == outcomes[2] == "ok"
    assert outcomes[1] == "dead_lettered"
    assert processed[sent[1]].status.status_code == trace.StatusCode.ERROR
