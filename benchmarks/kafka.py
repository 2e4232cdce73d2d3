"""Kafka cases: streamtools vs raw aiokafka on the same broker, at equal guarantees.

The broker is `KAFKA_BOOTSTRAP_SERVERS` when set, else the bundled Tansu (started here on a
free port, stopped at exit). Produce: acks=all everywhere, the same in-flight window, and the
idempotence streamtools settled on (Tansu refuses it, so off there; on where the broker
takes it). The raw producer sends the encoded Struct either with the same CloudEvents headers
streamtools writes (`ce_id`, `ce_type`, `ce_source`, `ce_specversion`, `ce_time`,
`content-type`: the fair comparison, whose ratio has issue #14's target, >= 1.0x) or with a
content-type header only (reported: it shows what the six headers cost). Each produce run
writes to a fresh topic (created and deleted untimed).

Consume+commit, two cases, each on its own topic of 3 partitions prefilled (untimed, in the
case's setup) with the same records (5,000 with `--quick`, 20,000 in the full run), written
by a streamtools producer without a key, so its partitioner spreads them over the partitions
(the setup reads the topic through and prints the count per partition: about a third each).
Every run of every contender joins a fresh consumer group (one member, so it gets all three
partitions) and reads the topic from the start, at equal guarantees: at-least-once (no
auto-commit; a record's offset is committed only after it was handled), every record decoded
into the `OrderCreated` Struct with msgspec, at most PREFETCH (128) records per poll where
the client has the setting, the same `fetch_max_wait_ms` (below). Committed offsets are
checked after each run (untimed): the group must have committed every record (streamtools
short of it fails the case; a contender, a warning).

The clock, for every contender alike, runs from the moment the group assigns the partitions
to the consumer (the rebalance listener's `on_partitions_assigned`: the raw consumers and
FastStream are given a listener that starts it, FastStream through its subscriber's
`listener=`; streamtools' is its own listener, which calls `KafkaConsumer._assign`, which the
benchmark's subclass overrides to start the clock first) to the moment the last record was
handled (the handler, or the raw loop after decoding it). So it covers the fetches, the
decoding, the handler calls and the commits made meanwhile, but not the group join before
(seconds of rebalance rounds, the same for everyone) nor the commit that may follow the last
record (each contender makes it untimed before the check).

Every consumer fetches with the `fetch_max_wait_ms` streamtools' consumer sets (50 ms;
aiokafka's default is 500), a client setting any aiokafka user can choose. aiokafka sends one
fetch per broker for all its partitions and none while one is out, so a partition read to the
end of its log makes the broker hold the fetch, and the others' next records, for that long:
with 500 ms the raw per-record loop committing every 100 stalled ~0.5 s twice per 20,000
records on Tansu (measured), which measured the setting, not the libraries.

- "kafka consume per record": streamtools' `@consumer()` handler of one `OrderCreated`
  (`Limits(max_in_flight=128)`: up to 128 handlers at once, in order per key; the settle
  window commits each partition's handled prefix). Against: raw aiokafka's per-record loop,
  `async for record in consumer`, decoding each and `await consumer.commit()` every 100
  records (issue #24's target, >= 1.0x); raw `getmany(max_records=128)` committing per batch
  (reported); FastStream's `KafkaBroker` subscriber with its msgspec serializer
  (`fast_depends.msgspec.MsgSpecSerializer`), `ack_policy=AckPolicy.ACK`: no auto-commit,
  one `consumer.commit()` after each handler returned (what FastStream does to commit only
  handled records; its default, ACK_FIRST, auto-commits before handling). It reads with
  `getone`, which `max_poll_records` does not bound (reported).
- "kafka consume batch": streamtools' `@consumer(batch=Batch(max_size=128, max_wait=0.05))`
  handler of `list[OrderCreated]` (batches per partition; one commit per partition per
  batch). Against: raw `getmany(max_records=128)` decoding every record of the poll and
  awaiting one `consumer.commit()` after it (issue #24's target, >= 1.0x); FastStream's
  `batch=True` subscriber (`max_records=128`, `list[OrderCreated]`, `AckPolicy.ACK`: a
  commit after each batch; reported).
"""

from __future__ import annotations

import asyncio
import atexit
import time
import uuid
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from benchmarks.common import PREFETCH, WINDOW, orders, windows
from benchmarks.harness import (
    KAFKA_CONSUME_BATCH,
    KAFKA_CONSUME_RECORD,
    KAFKA_PRODUCE_CONCURRENT,
    KAFKA_PRODUCE_MANY,
    Case,
    Contender,
    Target,
    Workload,
)
from examples.contracts import OrderCreated
from streamtools import Batch, Limits
from streamtools._codec import default_source, new_metadata
from streamtools.transports.kafka import KafkaConsumer, KafkaProducer
from streamtools.transports.kafka import _consumer as _st_consumer
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

PARTITIONS = 3  # the consume topic's partitions (streamtools' default for the topics it makes)
RAW_COMMIT_EVERY = 100  # records between the raw per-record loop's commits
# The longest the broker may hold a fetch that finds nothing new: every consumer here gets the
# value streamtools' consumer sets (aiokafka's own default, 500 ms, if it sets none).
FETCH_MAX_WAIT_MS: int = getattr(_st_consumer, "_FETCH_MAX_WAIT_MS", 500)


class _Clock:
    """Counts handled records; the clock runs from `start` (the group assigned the partitions)
    to the last record (`event` at target)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.started: float | None = None
        self.last = 0.0
        self.event = asyncio.Event()

    def start(self) -> None:
        """The partitions are assigned: the first assignment starts the clock (a later one,
        after a rebalance, does not restart it)."""
        if self.started is None:
            self.started = time.perf_counter()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.last = time.perf_counter()
            self.event.set()

    def hit_many(self, n: int) -> None:
        """`n` records handled at once (a batch)."""
        self.count += n
        if self.count >= self.target:
            self.last = time.perf_counter()
            self.event.set()

    @property
    def done(self) -> bool:
        return self.count >= self.target

    async def wait(self, what: str) -> tuple[int, float]:
        try:
            async with asyncio.timeout(300):
                await self.event.wait()
        except TimeoutError:
            raise RuntimeError(f"{what}: only {self.count} of {self.target} handled") from None
        if self.count < self.target:  # the event set by a loop that stopped (see watch)
            raise RuntimeError(f"{what}: stopped after {self.count} of {self.target} handled")
        if self.started is None:
            raise RuntimeError(f"{what}: the clock never started (no partition assignment seen)")
        return self.target, self.last - self.started

    def watch(self, task: asyncio.Task[None]) -> None:
        """A loop task that ends (done or failed) wakes `wait`."""
        task.add_done_callback(lambda _: self.event.set())


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Starts the clock when the group assigns the partitions (raw aiokafka and FastStream)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self.clock.start()


class _ClockedConsumer(KafkaConsumer[OrderCreated]):
    """The streamtools consumer, unchanged but for starting the clock when its rebalance
    listener hands it the assigned partitions (as `_Assigned` does for the others)."""

    clock: _Clock

    def _assign(self, assigned: set[TopicPartition]) -> Any:
        if assigned:
            self.clock.start()
        return super()._assign(assigned)  # whatever it returns (sync or async)


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


async def _spread(topic: str, expected: int) -> dict[int, int]:
    """The records in each partition of `topic`, read through without a group (Tansu's
    end offsets lag behind what a fetch returns right after producing, so they are counted)."""
    probe = AIOKafkaConsumer(
        topic, bootstrap_servers=servers(), auto_offset_reset="earliest", enable_auto_commit=False
    )
    await probe.start()
    try:
        found: dict[int, int] = dict.fromkeys(sorted(probe.partitions_for_topic(topic) or ()), 0)
        while sum(found.values()) < expected:
            batches = await probe.getmany(timeout_ms=5000)
            if not batches:
                break
            for tp, records in batches.items():
                found[tp.partition] = found.get(tp.partition, 0) + len(records)
        return found
    finally:
        await probe.stop()


class _Prefilled:
    """A case's topic: PARTITIONS partitions prefilled (untimed, in setup) with the records."""

    def __init__(self, case: str, msgs: list[OrderCreated]) -> None:
        self.name = unique(case)
        self.msgs = msgs

    async def setup(self) -> None:
        async with KafkaProducer(
            self.name,
            message_type=OrderCreated,
            bootstrap_servers=servers(),
            partitions=PARTITIONS,
        ) as producer:
            # The same records for everyone, without a key: the partitioner spreads them.
            for start in range(0, len(self.msgs), 1024):
                await producer.send_many(self.msgs[start : start + 1024])
        spread = await _spread(self.name, len(self.msgs))
        if len(spread) != PARTITIONS or sum(spread.values()) != len(self.msgs):
            raise RuntimeError(f"prefill: {spread} (partition: records), not {len(self.msgs)}")
        print("  records per partition: " + ", ".join(f"{n:,}" for n in spread.values()))

    async def teardown(self) -> None:
        await delete_topics([self.name])

    async def check(self, group: str, who: str) -> None:
        """The group committed every record (streamtools: or the case fails)."""
        committed = await _committed(self.name, group)
        if committed != len(self.msgs):
            message = f"{who} committed {committed} of {len(self.msgs)} offsets"
            if who == "streamtools":
                raise RuntimeError(message)
            print(f"  warning: {message}")


def consume_cases(count: int) -> list[Case]:
    msgs = orders(count)
    per_record = _Prefilled("consume-record", msgs)
    batched = _Prefilled("consume-batch", msgs)

    def streamtools(topic: _Prefilled, batch: bool) -> Workload:
        async def run() -> tuple[int, float]:
            group = unique("st-group")
            clock = _Clock(count)
            consumer = _ClockedConsumer(
                topic.name,
                message_type=OrderCreated,
                bootstrap_servers=servers(),
                group=group,
                limits=Limits(max_in_flight=PREFETCH),
            )
            consumer.clock = clock
            if batch:

                @consumer(batch=Batch(max_size=PREFETCH, max_wait=0.05))
                async def handle_batch(received: list[OrderCreated]) -> None:
                    clock.hit_many(len(received))

            else:

                @consumer()
                async def handle(msg: OrderCreated) -> None:
                    clock.hit()

            await consumer.start()
            try:
                result = await clock.wait("streamtools consumer")
            finally:
                await consumer.close()  # commits what the window has not yet
            await topic.check(group, "streamtools")
            return result

        return run

    def raw(topic: _Prefilled, per_record: bool) -> Workload:
        async def getmany(consumer: Any, clock: _Clock) -> None:
            while not clock.done:
                batches = await consumer.getmany(timeout_ms=500, max_records=PREFETCH)
                for records in batches.values():
                    # What a batch handler is given: the partition's records decoded, a list.
                    received = [_decoder.decode(record.value) for record in records]
                    clock.hit_many(len(received))
                if batches:
                    await consumer.commit()  # the offsets of the batch just handled

        async def each(consumer: Any, clock: _Clock) -> None:
            async for record in consumer:
                _decoder.decode(record.value)
                clock.hit()
                if clock.count % RAW_COMMIT_EVERY == 0 or clock.done:
                    await consumer.commit()  # everything handled so far
                if clock.done:
                    return

        async def run() -> tuple[int, float]:
            group = unique("raw-group")
            clock = _Clock(count)
            # streamtools' guarantees: no auto-commit, from the start, PREFETCH per poll.
            consumer = AIOKafkaConsumer(
                bootstrap_servers=servers(),
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=PREFETCH,
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            await consumer.start()
            consumer.subscribe([topic.name], listener=_Assigned(clock))
            task = asyncio.create_task((each if per_record else getmany)(consumer, clock))
            clock.watch(task)
            try:
                result = await clock.wait("aiokafka consumer")
                await task  # its last commit (or its error)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await consumer.stop()
            await topic.check(group, "aiokafka")
            return result

        return run

    def faststream(topic: _Prefilled, batch: bool) -> Workload:
        async def run() -> tuple[int, float]:
            from fast_depends.msgspec import MsgSpecSerializer
            from faststream import AckPolicy
            from faststream.kafka import KafkaBroker

            group = unique("fs-group")
            clock = _Clock(count)
            # logger=None: FastStream's default logs two lines per message.
            broker = KafkaBroker(servers(), logger=None, serializer=MsgSpecSerializer())
            listener = _Assigned(clock)
            # ack_policy=ACK: no auto-commit, a commit after each handler (each batch).
            if batch:

                @broker.subscriber(
                    topic.name,
                    batch=True,
                    max_records=PREFETCH,
                    batch_timeout_ms=500,
                    group_id=group,
                    auto_offset_reset="earliest",
                    max_poll_records=PREFETCH,
                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                    ack_policy=AckPolicy.ACK,
                    listener=listener,
                )
                async def handle_batch(received: list[OrderCreated]) -> None:
                    clock.hit_many(len(received))

            else:

                @broker.subscriber(
                    topic.name,
                    group_id=group,
                    auto_offset_reset="earliest",
                    max_poll_records=PREFETCH,
                    fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                    ack_policy=AckPolicy.ACK,
                    listener=listener,
                )
                async def handle(msg: OrderCreated) -> None:
                    clock.hit()

            await broker.start()
            try:
                result = await clock.wait("FastStream subscriber")
                await asyncio.sleep(0.1)  # the commit after the last handler (untimed)
            finally:
                await broker.stop()
            await topic.check(group, "FastStream")
            return result

        return run

    getmany = f"aiokafka getmany({PREFETCH}), commit per batch"
    return [
        Case(
            f"kafka consume per record: {count:,} queued in {PARTITIONS} partitions, "
            f"{PREFETCH} in flight",
            Contender("streamtools @consumer() (window commits)", streamtools(per_record, False)),
            [
                Contender(
                    f"aiokafka per-record loop, commit every {RAW_COMMIT_EVERY}",
                    raw(per_record, per_record=True),
                    target=KAFKA_CONSUME_RECORD,
                ),
                Contender(getmany, raw(per_record, per_record=False)),
                Contender(
                    "FastStream subscriber, commit after each (msgspec)",
                    faststream(per_record, batch=False),
                ),
            ],
            setup=per_record.setup,
            teardown=per_record.teardown,
        ),
        Case(
            f"kafka consume batch: {count:,} queued in {PARTITIONS} partitions, "
            f"batches of {PREFETCH}",
            Contender(
                f"streamtools @consumer(batch=Batch({PREFETCH}, 0.05))",
                streamtools(batched, True),
            ),
            [
                Contender(getmany, raw(batched, per_record=False), target=KAFKA_CONSUME_BATCH),
                Contender(
                    "FastStream batch=True, commit after each batch (msgspec)",
                    faststream(batched, batch=True),
                ),
            ],
            setup=batched.setup,
            teardown=batched.teardown,
        ),
    ]
