"""Kafka cases: streamtools vs raw aiokafka on the same broker, at equal guarantees.

The broker is `KAFKA_BOOTSTRAP_SERVERS` when set, else the bundled Tansu (started here on a
free port, stopped at exit). Produce: acks=all everywhere, the same in-flight window, and the
idempotence streamtools settled on (Tansu refuses it, so off there; on where the broker
takes it). The raw producer sends the encoded Struct either with the same CloudEvents headers
streamtools writes (`ce_id`, `ce_type`, `ce_source`, `ce_specversion`, `ce_time`,
`content-type`: the fair comparison, whose ratio has issue #14's target, >= 1.0x) or with a
content-type header only (reported: it shows what the six headers cost). Each produce run
writes to a fresh topic (created and deleted untimed).

Consume+commit: every contender reads the same prefilled topic from the start in a fresh
consumer group (a group join takes seconds, so the clock runs from the first record handled
to the last); streamtools commits through its settle window, the raw consumer decodes each
batch and awaits a commit after it (no task per record: the leanest loop aiokafka allows).
Issue #14's target is >= 1.0x against it. Committed offsets are checked after each run
(untimed).
"""

from __future__ import annotations

import asyncio
import atexit
import time
import uuid
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from benchmarks.common import PREFETCH, WINDOW, orders, windows
from benchmarks.harness import (
    KAFKA_CONSUME,
    KAFKA_PRODUCE_CONCURRENT,
    KAFKA_PRODUCE_MANY,
    Case,
    Contender,
    Target,
    Workload,
)
from examples.contracts import OrderCreated
from streamtools import Limits
from streamtools._codec import default_source, new_metadata
from streamtools.transports.kafka import KafkaConsumer, KafkaProducer
from streamtools.transports.kafka._client import NO_IDEMPOTENCE
from streamtools.transports.kafka._wire import record_headers
from tests.support.kafka_broker import TansuBroker, provided_bootstrap_servers

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderCreated)
_RAW_HEADERS = [("content-type", b"application/json")]
_started: list[TansuBroker] = []


def servers() -> str:
    """The broker's bootstrap servers; starts the bundled Tansu once per process if needed."""
    provided = provided_bootstrap_servers()
    if provided is not None:
        return provided
    if not _started:
        broker = TansuBroker()
        broker.start()
        atexit.register(broker.stop)
        _started.append(broker)
    return _started[0].bootstrap_servers


def unique(case: str) -> str:
    return f"st-bench-kafka-{case}-{uuid.uuid4().hex[:10]}"


async def delete_topics(names: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        gone = [t for name in names for t in (name, f"{name}.dlq") if t in existing]
        if gone:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


# --- produce ---------------------------------------------------------------------------------


class _Raw:
    """A raw aiokafka producer with streamtools' acks and idempotence, shared by the runs."""

    def __init__(self) -> None:
        self.producer: Any = None

    async def setup(self) -> None:
        where = servers()
        # A first streamtools producer finds out whether the broker takes idempotence.
        async with KafkaProducer(
            unique("probe"), message_type=OrderCreated, bootstrap_servers=where
        ):
            pass
        idempotent = where not in NO_IDEMPOTENCE  # what streamtools settled on
        self.producer = AIOKafkaProducer(
            bootstrap_servers=where, acks="all", enable_idempotence=idempotent
        )
        await self.producer.start()

    async def teardown(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


async def _fresh_topic() -> KafkaProducer[OrderCreated]:
    """A streamtools producer on a new topic it created (untimed): each run starts empty,
    so the broker's growing storage does not favour whoever runs first."""
    producer = KafkaProducer(
        unique("produce"), message_type=OrderCreated, bootstrap_servers=servers()
    )
    await producer.a_init()
    return producer


def produce_cases(count: int) -> list[Case]:
    msgs = orders(count)
    raw = _Raw()

    async def st_concurrent() -> tuple[int, float]:
        producer = await _fresh_topic()
        try:
            started = time.perf_counter()
            await windows(count, WINDOW, lambda i: producer.send(msgs[i]))
            elapsed = time.perf_counter() - started
        finally:
            await producer.close()
            await delete_topics([producer.queue.name])
        return count, elapsed

    async def st_send_many() -> tuple[int, float]:
        producer = await _fresh_topic()
        try:
            started = time.perf_counter()
            for start in range(0, count, WINDOW):
                await producer.send_many(msgs[start : start + WINDOW])
            elapsed = time.perf_counter() - started
        finally:
            await producer.close()
            await delete_topics([producer.queue.name])
        return count, elapsed

    def raw_gathered(same_headers: bool) -> Workload:
        source = default_source()

        def headers() -> list[tuple[str, bytes]]:
            if not same_headers:
                return _RAW_HEADERS
            return record_headers(new_metadata("OrderCreated", source))

        async def run() -> tuple[int, float]:
            made = await _fresh_topic()  # only for the topic
            await made.close()
            topic = made.queue.name

            async def send(i: int) -> None:
                # What a careful aiokafka user writes: the encoded Struct and its headers.
                await raw.producer.send_and_wait(topic, _encoder.encode(msgs[i]), headers=headers())

            started = time.perf_counter()
            await windows(count, WINDOW, send)
            elapsed = time.perf_counter() - started
            await delete_topics([topic])
            return count, elapsed

        return run

    def contenders(target: Target) -> list[Contender]:
        # The target is against the raw producer writing the same headers (equal work);
        # the content-type-only line is reported (what the CloudEvents headers cost).
        return [
            Contender(
                f"aiokafka gather({WINDOW}), same ce_ headers", raw_gathered(True), target=target
            ),
            Contender(f"aiokafka gather({WINDOW}), content-type only", raw_gathered(False)),
        ]

    return [
        Case(
            f"kafka produce acks=all: concurrent send, {WINDOW} in flight",
            Contender("streamtools gather(send)", st_concurrent),
            contenders(KAFKA_PRODUCE_CONCURRENT),
            setup=raw.setup,
            teardown=raw.teardown,
        ),
        Case(
            f"kafka produce acks=all: send_many({WINDOW})",
            Contender("streamtools send_many", st_send_many),
            contenders(KAFKA_PRODUCE_MANY),
            setup=raw.setup,
            teardown=raw.teardown,
        ),
    ]


# --- consume + commit ------------------------------------------------------------------------


class _Clock:
    """Counts handled records; the clock runs from the first to the last (`event` at target)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.first = self.last = 0.0
        self.event = asyncio.Event()

    def hit(self) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += 1
        if self.count >= self.target:
            self.last = now
            self.event.set()

    async def wait(self, what: str) -> tuple[int, float]:
        try:
            async with asyncio.timeout(300):
                await self.event.wait()
        except TimeoutError:
            raise RuntimeError(f"{what}: only {self.count} of {self.target} handled") from None
        return self.target - 1, self.last - self.first  # intervals between first and last


async def _committed(topic: str, group: str) -> int:
    """The sum of the group's committed offsets over the topic's partitions."""
    probe = AIOKafkaConsumer(bootstrap_servers=servers(), group_id=group)
    await probe.start()
    try:
        await probe.topics()
        total = 0
        for partition in probe.partitions_for_topic(topic) or ():
            total += await probe.committed(TopicPartition(topic, partition)) or 0
        return total
    finally:
        await probe.stop()


def consume_cases(count: int) -> list[Case]:
    topic = unique("consume")
    msgs = orders(count)

    async def setup() -> None:
        async with KafkaProducer(
            topic, message_type=OrderCreated, bootstrap_servers=servers()
        ) as producer:
            for start in range(0, count, 1024):  # untimed: the same records for everyone
                await producer.send_many(msgs[start : start + 1024])

    async def teardown() -> None:
        await delete_topics([topic])

    async def check(group: str, who: str) -> None:
        committed = await _committed(topic, group)
        if committed != count:
            message = f"{who} committed {committed} of {count} offsets"
            if who == "streamtools":
                raise RuntimeError(message)
            print(f"  warning: {message}")

    async def st_consume() -> tuple[int, float]:
        group = unique("st-group")
        clock = _Clock(count)
        consumer = KafkaConsumer(
            topic,
            message_type=OrderCreated,
            bootstrap_servers=servers(),
            group=group,
            limits=Limits(max_in_flight=PREFETCH),
        )

        @consumer()
        async def handle(msg: OrderCreated) -> None:
            clock.hit()

        await consumer.start()
        try:
            result = await clock.wait("streamtools consumer")
        finally:
            await consumer.close()  # commits what the window has not yet
        await check(group, "streamtools")
        return result

    async def raw_consume() -> tuple[int, float]:
        group = unique("raw-group")
        clock = _Clock(count)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=servers(),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=PREFETCH,
        )
        await consumer.start()

        async def loop() -> None:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=PREFETCH)
                for records in batches.values():
                    for record in records:
                        _decoder.decode(record.value)
                        clock.hit()
                if batches:
                    await consumer.commit()  # the offsets of the batch just handled

        task = asyncio.create_task(loop())
        try:
            result = await clock.wait("aiokafka consumer")
            await asyncio.sleep(0.05)  # let the last batch's commit go out
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await consumer.stop()
        await check(group, "aiokafka")
        return result

    return [
        Case(
            f"kafka consume+commit: {count:,} queued, {PREFETCH} in flight",
            Contender("streamtools consumer (window commits)", st_consume),
            [Contender("aiokafka getmany, commit per batch", raw_consume, target=KAFKA_CONSUME)],
            setup=setup,
            teardown=teardown,
        )
    ]
