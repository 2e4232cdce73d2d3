"""One suite over every registered transport, adapted from Watermill's universal pub/sub tests.

Each test asserts what a user would check: every message arrives with payload and metadata
intact, nothing is lost under concurrency, failures retry and then dead-letter, queues are
isolated, and closing is safe. Tests that need a capability skip on transports without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    ConfigurationError,
    Consumer,
    DeliveryError,
    Limits,
    Metadata,
    Producer,
    Queue,
    RetryPolicy,
    ValidationError,
    current_metadata,
)
from streamtools._binding import DEAD_LETTER_HEADERS
from tests.conformance.conftest import ConfMessage, ConfReply, Harness, LineItem
from tests.conftest import unique_name
from tests.transports.test_kafka import committed_offsets, read_records

WAIT = 30.0  # seconds: generous bound for any wait; never a pass/fail timing threshold


def make_message(seq: int, tag: str = "") -> ConfMessage:
    return ConfMessage(
        seq=seq,
        order_id=uuid4(),
        created_at=datetime.now(UTC),
        items=[LineItem(sku="ABC-123", quantity=1 + seq % 5)],
        tag=tag,
    )


def new_queue() -> Queue[ConfMessage]:
    return Queue(unique_name("st-conf"), ConfMessage)


class Collector:
    """Records what handlers received; `wait_for` blocks until a condition holds."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, Metadata]] = []
        self._changed = asyncio.Event()

    def add(self, msg: object) -> None:
        self.messages.append((msg, current_metadata()))
        self._changed.set()

    @property
    def seqs(self) -> set[int]:
        return {m.seq for m, _ in self.messages if isinstance(m, ConfMessage)}

    async def wait_for(
        self, condition: Callable[[], bool], what: str, consumers: Sequence[Consumer[Any]] = ()
    ) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            # What each consumer was doing, so a failure in CI says where the rest waited.
            states = "; ".join(f"{c!r}: {c.health()}{_assigned(c)}" for c in consumers)
            pytest.fail(
                f"timed out after {WAIT} s waiting for {what}; got {len(self.messages)}"
                + (f"; consumers: {states}" if states else "")
            )


def _assigned(consumer: Consumer[Any]) -> str:
    # Kafka: the partitions the group gave this member, the last offset it took of each, what
    # its window holds, and aiokafka's fetch position and the log end it last saw (private
    # attributes, read only here): a stalled fetch and a skipped record read differently.
    partitions = getattr(consumer, "_partitions", None)
    client = getattr(consumer, "_consumer", None)
    if not isinstance(partitions, dict):
        return ""

    def fetch(tp: Any) -> str:
        if client is None:
            return ""
        try:
            position = client._subscription.subscription.assignment.state_value(tp).position
            return f", position {position}, log end {client.highwater(tp)}"
        except Exception as exc:  # a diagnostic: never the reason a test fails
            return f", position unknown ({type(exc).__name__})"

    return " partitions " + ", ".join(
        f"{tp.partition}(last {p.last}, open {p.window.outstanding}{fetch(tp)})"
        for tp, p in sorted(partitions.items(), key=lambda item: item[0].partition)
    )


async def _where_records_are(harness: Harness, queue: Queue[ConfMessage], missing: set[int]) -> str:
    """Kafka: the partition and offset of each message no handler saw (read again from the
    topic's start, outside the group), and the offsets the group committed: a skipped range,
    a reset and a wrong commit read differently. A diagnostic: it never fails by itself."""
    servers = harness.consumer_settings.get("bootstrap_servers")
    if harness.name != "KafkaHandler" or not isinstance(servers, str) or not missing:
        return ""
    try:
        records = await read_records(servers, queue.name, 400)
        committed = await committed_offsets(servers, queue.name, queue.name)
    except (Exception, pytest.fail.Exception) as exc:  # a diagnostic: never why a test fails
        return f"; reading the topic again failed: {type(exc).__name__}: {exc}"
    where: dict[int, list[int]] = {}
    for record in records:
        if msgspec.json.decode(record.value).get("seq") in missing:
            where.setdefault(record.partition, []).append(record.offset)
    found = "; ".join(f"partition {p}: offsets {o}" for p, o in sorted(where.items()))
    return f"; the missing records: {found or 'none in the topic'}; committed {committed}"


def collecting_consumer(
    harness: Harness, queue: Queue[ConfMessage]
) -> tuple[Consumer[ConfMessage], Collector]:
    """A consumer (not started) whose handler records every message in the Collector."""
    return collecting_consumer_with(harness, queue)


def collecting_consumer_with(
    harness: Harness, queue: Queue[ConfMessage], **settings: object
) -> tuple[Consumer[ConfMessage], Collector]:
    """`collecting_consumer` with settings of the transport's consumer."""
    got = Collector()
    consumer = harness.consumer(queue, **settings)

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        got.add(msg)

    return consumer, got


async def read_dead_letters(
    harness: Harness, queue: Queue[Any], message_type: type[Any], count: int
) -> list[tuple[Any, Metadata]]:
    """Consume `count` messages from `<queue>.dlq` with the transport's own consumer."""
    dead = Collector()
    dlq = harness.consumer(Queue(f"{queue.name}.dlq", message_type))

    @dlq()
    async def handle_dead(msg: Any) -> None:
        dead.add(msg)

    await dlq.start()
    try:
        await dead.wait_for(lambda: len(dead.messages) == count, f"{count} in {queue.name}.dlq")
    finally:
        await dlq.close()
    return dead.messages


def test_every_transport_has_a_harness() -> None:
    from tests.conformance.conftest import HARNESSES

    assert set(PRODUCERS) == set(CONSUMER_LOOPS)
    assert set(PRODUCERS) <= set(HARNESSES), "add a harness for each registered transport"


async def test_publish_then_subscribe_delivers_all_intact(harness: Harness) -> None:
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)

    sent: dict[str, ConfMessage] = {}
    if harness.capabilities.queued:
        # Sent before anyone listens: the queue keeps them.
        async with harness.producer(queue) as producer:
            for i in range(50):
                msg = make_message(i)
                sent[await producer.send(msg)] = msg
        await consumer.start()
    else:
        await consumer.start()
        async with harness.producer(queue, consumer) as producer:
            for i in range(50):
                msg = make_message(i)
                sent[await producer.send(msg)] = msg
    try:
        await got.wait_for(lambda: len(got.seqs) == 50, "50 messages")
    finally:
        await consumer.close()

    for msg, meta in got.messages:
        assert msg == sent[meta.id]
        assert isinstance(msg.order_id, UUID)
        assert msg.created_at.tzinfo is not None
        assert meta.type == "ConfMessage"
        assert meta.source == producer.source
        assert meta.specversion == "1.0"
        assert meta.content_type == "application/json"
        assert meta.attempt == 1
        assert datetime.fromisoformat(meta.time).tzinfo is not None
    assert len({meta.id for _, meta in got.messages}) == 50
    # Nothing failed, so nothing may come twice (a set-based check would miss duplicates).
    assert sorted(m.seq for m, _ in got.messages) == list(range(50))


async def test_many_producers_and_consumers_lose_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Kafka says at INFO which fetched records a rebalance left for a refetch, and aiokafka
    # its rebalances and offset resets: a failure shows them beside the members' state.
    caplog.set_level(logging.INFO, "streamtools.kafka")
    caplog.set_level(logging.INFO, "aiokafka")
    queue = new_queue()
    got = Collector()
    # Competing consumers on a queued transport; HTTP serves one queue from one route.
    consumers = [harness.consumer(queue) for _ in range(3 if harness.capabilities.queued else 1)]
    for consumer in consumers:

        @consumer()
        async def handle(msg: ConfMessage) -> None:
            await asyncio.sleep(0)
            got.add(msg)

        await consumer.start()

    async def produce(start: int) -> None:
        # 400 sends at once: above the in-flight limit, a serving transport sheds (503).
        async with harness.producer(queue, consumers[0], **harness.burst_settings) as producer:
            await asyncio.gather(*(producer.send(make_message(start + i)) for i in range(100)))

    try:
        await asyncio.gather(*(produce(p * 100) for p in range(4)))
        try:
            await got.wait_for(lambda: len(got.seqs) == 400, "400 messages", consumers)
        except pytest.fail.Exception as failed:
            where = await _where_records_are(harness, queue, set(range(400)) - got.seqs)
            pytest.fail(f"{failed}{where}")
    finally:
        await asyncio.gather(*(c.close() for c in consumers))
    assert got.seqs == set(range(400))
    # Competing consumers joining may move work between them (a Kafka rebalance), and
    # at-least-once allows a redelivery then; delivering everything twice it does not.
    duplicates = len(got.messages) - 400
    assert duplicates < 40, f"{duplicates} duplicates of 400"


async def test_failing_handler_is_retried_and_message_arrives(harness: Harness) -> None:
    if not harness.capabilities.redelivery:
        pytest.skip("transport does not redeliver after a handler failure")
    queue = new_queue()
    got = Collector()
    attempts: Counter[int] = Counter()
    consumer = harness.consumer(queue)

    seen: dict[int, list[int]] = {}

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        attempts[msg.seq] += 1
        seen.setdefault(msg.seq, []).append(current_metadata().attempt)
        if attempts[msg.seq] < 3:
            raise RuntimeError(f"transient failure {attempts[msg.seq]}")
        got.add(msg)

    await consumer.start()
    try:
        async with harness.producer(queue) as producer:
            for i in range(5):
                await producer.send(make_message(i))
        await got.wait_for(lambda: len(got.seqs) == 5, "5 messages after retries")
    finally:
        await consumer.close()
    assert all(attempts[i] == 3 for i in range(5)), attempts
    # The handler sees the delivery count: 1 on the first, one more on each retry.
    assert seen == {i: [1, 2, 3] for i in range(5)}
    assert all(meta.attempt == 3 for _, meta in got.messages)


async def test_handler_failure_is_reported_to_a_synchronous_sender(harness: Harness) -> None:
    if harness.capabilities.queued:
        pytest.skip("queued transports retry on the consumer side")
    queue = new_queue()
    consumer = harness.consumer(queue)

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        raise RuntimeError("secret internal detail")

    await consumer.start()
    try:
        async with harness.producer(queue, consumer) as producer:
            with pytest.raises(DeliveryError) as info:
                await producer.send(make_message(1))
    finally:
        await consumer.close()
    assert info.value.status == 500
    assert "secret internal detail" not in str(info.value.body)


async def test_poison_message_is_dead_lettered_after_retry_limit(harness: Harness) -> None:
    if not harness.capabilities.dead_letter:
        pytest.skip("transport has no dead-letter queue")
    queue = new_queue()
    got = Collector()
    consumer = harness.consumer(queue)

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        if msg.tag == "poison":
            raise RuntimeError("cannot handle this one")
        got.add(msg)

    await consumer.start()
    try:
        async with harness.producer(queue) as producer:
            poison_id = await producer.send(make_message(0, tag="poison"))
            for i in range(1, 21):
                await producer.send(make_message(i))
        await got.wait_for(lambda: len(got.seqs) == 20, "the 20 good messages")
        [(msg, meta)] = await read_dead_letters(harness, queue, ConfMessage, 1)
    finally:
        await consumer.close()
    assert msg.tag == "poison"
    assert meta.id == poison_id
    assert meta.headers["x-death-reason"] == "max-retries"
    assert meta.headers["x-error-type"] == "RuntimeError"
    assert "cannot handle this one" in meta.headers["x-error-message"]
    assert meta.headers["x-attempts"] == "3"  # attempts=2 in the harness: 3 in all
    assert meta.headers["x-original-queue"] == queue.name
    # The same headers on every transport, and nothing of the delivery's own bookkeeping.
    assert set(meta.headers) == set(DEAD_LETTER_HEADERS)
    assert meta.attempt == 1  # it counts deliveries from the DLQ


async def test_invalid_message_is_rejected_while_the_consumer_goes_on(harness: Harness) -> None:
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)

    await consumer.start()
    # An untyped producer on the same queue sends what a foreign or buggy peer might.
    raw: Producer[Any] = PRODUCERS[harness.name](queue.name, **harness.producer_settings(consumer))
    bad_id = ""
    invalid = {"seq": 1, "order_id": "not-a-uuid", "created_at": "2026-01-01T00:00:00Z"}
    try:
        async with raw, harness.producer(queue, consumer) as producer:
            if harness.capabilities.dead_letter:
                bad_id = await raw.send(invalid)
            else:
                with pytest.raises(DeliveryError) as info:
                    await raw.send(invalid)
                assert info.value.status == 422
            await producer.send(make_message(2))
        await got.wait_for(lambda: got.seqs == {2}, "the valid message after the invalid one")
        if harness.capabilities.dead_letter:
            [(body, meta)] = await read_dead_letters(harness, queue, dict[str, object], 1)
            assert body == invalid
            assert meta.id == bad_id
            assert meta.headers["x-death-reason"] == "invalid"
            assert meta.headers["x-error-type"] == "ValidationError"
            assert "$.order_id" in meta.headers["x-error-message"]
            assert meta.headers["x-attempts"] == "1"
    finally:
        await consumer.close()


async def test_sender_validates_before_anything_leaves(harness: Harness) -> None:
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)

    await consumer.start()
    try:
        async with harness.producer(queue, consumer) as producer:
            bad = make_message(1)
            bad.items[0].quantity = 0
            with pytest.raises(ValidationError) as info:
                await producer.send(bad)
            assert info.value.path == "$.items[0].quantity"
            await producer.send(make_message(2))
        await got.wait_for(lambda: got.seqs == {2}, "the valid message")
    finally:
        await consumer.close()
    assert got.seqs == {2}


async def test_queues_do_not_leak_into_each_other(harness: Harness) -> None:
    first, second = new_queue(), new_queue()
    got = {first.name: Collector(), second.name: Collector()}
    consumers = []
    for queue in (first, second):
        consumer = harness.consumer(queue)
        collector = got[queue.name]

        @consumer()
        async def handle(msg: ConfMessage, collector: Collector = collector) -> None:
            collector.add(msg)

        await consumer.start()
        consumers.append(consumer)
    try:
        for offset, (queue, consumer) in enumerate(zip((first, second), consumers, strict=True)):
            async with harness.producer(queue, consumer) as producer:
                for i in range(10):
                    await producer.send(make_message(offset * 100 + i))
        for offset, queue in enumerate((first, second)):
            collector = got[queue.name]
            expected = set(range(offset * 100, offset * 100 + 10))

            def arrived(c: Collector = collector, e: set[int] = expected) -> bool:
                return c.seqs == e

            await collector.wait_for(arrived, f"10 messages on {queue.name}")
    finally:
        await asyncio.gather(*(c.close() for c in consumers))
    assert got[first.name].seqs == set(range(10))
    assert got[second.name].seqs == set(range(100, 110))


async def test_close_mid_stream_then_resume_loses_nothing(harness: Harness) -> None:
    if not harness.capabilities.queued:
        pytest.skip("messages wait for a consumer only on queued transports")
    queue = new_queue()
    got = Collector()

    def make_consumer() -> Consumer[ConfMessage]:
        consumer = harness.consumer(queue)

        @consumer()
        async def handle(msg: ConfMessage) -> None:
            await asyncio.sleep(0.002)
            got.add(msg)

        return consumer

    async with harness.producer(queue) as producer:
        for i in range(200):
            await producer.send(make_message(i))
    first = make_consumer()
    await first.start()
    await got.wait_for(lambda: len(got.seqs) >= 30, "30 messages before the close")
    await first.close()
    handled_before_resume = set(got.seqs)
    second = make_consumer()
    await second.start()
    try:
        await got.wait_for(lambda: len(got.seqs) == 200, "all 200 after resuming")
    finally:
        await second.close()
    assert got.seqs == set(range(200))
    assert handled_before_resume < got.seqs


async def test_concurrent_close_is_safe_and_idempotent(harness: Harness) -> None:
    queue = new_queue()
    consumer = harness.consumer(queue)

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        pass

    await consumer.start()
    producer = harness.producer(queue, consumer)
    await producer.send(make_message(1))
    results = await asyncio.gather(
        *(consumer.close() for _ in range(5)),
        *(producer.close() for _ in range(5)),
        return_exceptions=True,
    )
    assert results == [None] * 10
    await consumer.close()
    await producer.close()
    assert not consumer.serving
    assert not consumer.connected
    # Closed for good: neither end takes work again, and both say why.
    with pytest.raises(ConfigurationError, match="is closed"):
        await producer.send(make_message(2))
    with pytest.raises(ConfigurationError, match="is closed"):
        await consumer.start()
    if harness.capabilities.queued:
        # The closed consumer takes nothing: a message sent now waits for the next one.
        follow, got = collecting_consumer(harness, queue)
        async with harness.producer(queue) as again:
            await again.send(make_message(3))
        await follow.start()
        try:
            # Message 1 too, if the close came before its handler finished (redelivered).
            await got.wait_for(lambda: 3 in got.seqs, "the message after the close")
        finally:
            await follow.close()
        assert got.seqs <= {1, 3}


async def test_run_serves_until_close(harness: Harness) -> None:
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)

    runner = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(WAIT):
            while not consumer.serving:  # noqa: ASYNC110 - run() exposes no event to await
                await asyncio.sleep(0.01)
        async with harness.producer(queue, consumer) as producer:
            await producer.send(make_message(7))
        await got.wait_for(lambda: got.seqs == {7}, "one message")
    finally:
        await consumer.close()
        async with asyncio.timeout(WAIT):
            await runner
    assert runner.done()
    assert runner.exception() is None


async def test_request_reply_returns_the_typed_reply(harness: Harness) -> None:
    if not harness.capabilities.request_reply:
        pytest.skip("transport has no replies")
    queue = new_queue()
    consumer = harness.consumer(queue)

    @consumer()
    async def handle(msg: ConfMessage) -> ConfReply:
        return ConfReply(seq=msg.seq, total_quantity=sum(i.quantity for i in msg.items))

    await consumer.start()
    try:
        async with harness.producer(queue, consumer) as producer:
            replies = await asyncio.gather(
                *(producer.request(make_message(i), reply_type=ConfReply) for i in range(10))
            )
    finally:
        await consumer.close()
    assert [r.seq for r in replies] == list(range(10))
    assert all(isinstance(r, ConfReply) for r in replies)
    assert [r.total_quantity for r in replies] == [1 + i % 5 for i in range(10)]


async def test_untyped_queue_carries_raw_json(harness: Harness) -> None:
    name = unique_name("st-conf-raw")
    got: list[object] = []
    done = asyncio.Event()
    consumer = harness.consumer(Queue(name, object))

    @consumer()
    async def handle(msg: object) -> None:
        got.append(msg)
        done.set()

    await consumer.start()
    try:
        async with harness.producer(Queue(name, object), consumer) as producer:
            await producer.send({"any": ["json", 1, None]})
        async with asyncio.timeout(WAIT):
            await done.wait()
    finally:
        await consumer.close()
    assert got == [{"any": ["json", 1, None]}]


async def test_encoded_body_is_the_message_alone(harness: Harness) -> None:
    # The body is the message alone (metadata travels in headers), so non-streamtools peers
    # read it as plain JSON: a raw-JSON consumer on the queue gets exactly the message's fields.
    queue = new_queue()
    raw = Collector()
    consumer = harness.consumer(Queue(queue.name, dict[str, object]))

    @consumer()
    async def handle(msg: dict[str, object]) -> None:
        raw.add(msg)

    await consumer.start()
    msg = make_message(3, tag="plain")
    try:
        async with harness.producer(queue, consumer) as producer:
            await producer.send(msg)
        await raw.wait_for(lambda: len(raw.messages) == 1, "the raw message")
    finally:
        await consumer.close()
    [(body, meta)] = raw.messages
    assert body == msgspec.to_builtins(msg)
    assert meta.type == "ConfMessage"  # the type travels beside the body, not in it


async def test_failing_dead_letter_consumer_keeps_the_message_in_its_queue(
    harness: Harness,
) -> None:
    """One rule on every transport: a `.dlq` consumer's failures go back to the same DLQ.

    Its dead-letter headers stay (they say why it came), the attempt counts up, and no
    `.dlq.dlq` or `.dlq.retry.N` queue appears.
    """
    if not harness.capabilities.dead_letter:
        pytest.skip("transport has no dead-letter queue")
    queue = new_queue()
    consumer = harness.consumer(queue, retry=RetryPolicy(attempts=0, delay=0.02))

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        raise RuntimeError("always fails")

    dlq = harness.consumer(Queue(f"{queue.name}.dlq", ConfMessage))
    got = Collector()
    calls: list[int] = []

    @dlq()
    async def handle_dead(msg: ConfMessage) -> None:
        calls.append(current_metadata().attempt)
        if len(calls) < 3:
            raise ValueError(f"dead-letter handler fails ({len(calls)})")
        got.add(msg)

    await consumer.start()
    await dlq.start()
    try:
        async with harness.producer(queue) as producer:
            sent_id = await producer.send(make_message(1, tag="poison"))
        await got.wait_for(lambda: len(got.messages) == 1, "the message on the third try")
    finally:
        await asyncio.gather(consumer.close(), dlq.close())
    assert calls == [1, 2, 3]
    [(msg, meta)] = got.messages
    assert msg.tag == "poison"
    assert meta.id == sent_id
    assert meta.headers["x-death-reason"] == "max-retries"
    assert meta.headers["x-error-type"] == "RuntimeError"
    assert meta.headers["x-original-queue"] == queue.name
    assert set(meta.headers) == set(DEAD_LETTER_HEADERS)
    assert harness.queue_exists is not None
    assert await harness.queue_exists(f"{queue.name}.dlq")
    assert not await harness.queue_exists(f"{queue.name}.dlq.dlq")
    assert not await harness.queue_exists(f"{queue.name}.dlq.retry.1")


async def test_invalid_message_on_a_dead_letter_consumer_stays_there(harness: Harness) -> None:
    if not harness.capabilities.dead_letter:
        pytest.skip("transport has no dead-letter queue")
    queue = new_queue()
    dlq = harness.consumer(Queue(f"{queue.name}.dlq", ConfMessage))
    raw = harness.producer(Queue(f"{queue.name}.dlq", dict[str, object]))
    seen: list[int] = []

    @dlq()
    async def handle_dead(msg: ConfMessage) -> None:
        seen.append(msg.seq)

    await dlq.start()
    try:
        async with raw:
            await raw.send({"not": "a ConfMessage"})
        # Its own queue keeps it: a typed consumer of it never gets it, another reader does.
        readback = Collector()
        reader = harness.consumer(Queue(f"{queue.name}.dlq", dict[str, object]))

        @reader()
        async def read(msg: dict[str, object]) -> None:
            readback.add(msg)

        await dlq.close()
        await reader.start()
        try:
            await readback.wait_for(lambda: len(readback.messages) >= 1, "the invalid message")
        finally:
            await reader.close()
    finally:
        await dlq.close()
    assert seen == []
    assert readback.messages[0][0] == {"not": "a ConfMessage"}
    assert harness.queue_exists is not None
    assert not await harness.queue_exists(f"{queue.name}.dlq.dlq")


async def test_foreign_message_with_missing_or_odd_headers_is_handled(harness: Harness) -> None:
    """A peer without streamtools: no CloudEvents headers, or ones of odd types."""
    if harness.send_foreign is None:
        pytest.skip("nothing but streamtools sends on this transport")
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)
    await consumer.start()
    body = msgspec.json.encode(make_message(1))
    odd: dict[str, object] = {
        "ce-id": 12345,
        "ce-type": "Foreign",
        "ce-specversion": 1,
        "x-streamtools-attempt": "not a number",
        "x-custom": "kept",
    }
    try:
        await harness.send_foreign(consumer, body, {})
        await got.wait_for(lambda: len(got.messages) == 1, "the bare message")
        await harness.send_foreign(consumer, body, odd)
        await got.wait_for(lambda: len(got.messages) == 2, "the message with odd headers")
    finally:
        await consumer.close()
    (_, bare), (_, strange) = got.messages
    assert bare.id  # made up on arrival, never empty
    assert bare.type == "ConfMessage"  # the consumer's type
    assert bare.specversion == "1.0"
    assert bare.attempt == 1
    assert datetime.fromisoformat(bare.time).tzinfo is not None
    assert strange.id == "12345"
    assert strange.type == "Foreign"
    assert strange.attempt == 1


async def test_deeply_nested_json_is_rejected_and_the_consumer_goes_on(harness: Harness) -> None:
    """JSON nested past the recursion limit is malformed input, not an internal failure to
    requeue forever (nor a 500)."""
    if harness.send_foreign is None:
        pytest.skip("nothing but streamtools sends on this transport")
    name = unique_name("st-conf-deep")
    got = Collector()
    consumer = harness.consumer(Queue(name, object))

    @consumer()
    async def handle(msg: object) -> None:
        got.add(msg)

    await consumer.start()
    try:
        await harness.send_foreign(consumer, b"[" * 3000 + b"]" * 3000, {})
        await harness.send_foreign(consumer, b'{"after": true}', {})
        await got.wait_for(lambda: len(got.messages) == 1, "the message after the deep one")
    finally:
        await consumer.close()
    # The deep one never reached the handler (a dead-letter on queued transports, 400 over
    # HTTP); no JSON type decodes it, so it is not read back here.
    assert [m for m, _ in got.messages] == [{"after": True}]


async def test_a_foreign_attempt_header_cannot_skip_the_retries(harness: Harness) -> None:
    if harness.send_foreign is None or not harness.capabilities.dead_letter:
        pytest.skip("needs foreign senders and a dead-letter queue")
    queue = new_queue()
    seen: list[int] = []
    consumer = harness.consumer(queue)

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        seen.append(current_metadata().attempt)
        raise RuntimeError("always fails")

    await consumer.start()
    try:
        body = msgspec.json.encode(make_message(1))
        await harness.send_foreign(consumer, body, {"x-streamtools-attempt": str(10**12)})
        [(_, meta)] = await read_dead_letters(harness, queue, ConfMessage, 1)
    finally:
        await consumer.close()
    # Clamped to attempts + 1 (3 in the harness): the handler saw 3, not 10**12.
    assert seen == [3]
    assert meta.headers["x-attempts"] == "3"
    assert meta.headers["x-death-reason"] == "max-retries"


async def test_a_message_over_max_message_size_is_dead_lettered_unread(harness: Harness) -> None:
    if not harness.capabilities.dead_letter:
        pytest.skip("transport has no dead-letter queue (HTTP: limits.max_message_size, 413)")
    queue = new_queue()
    consumer, got = collecting_consumer_with(harness, queue, limits=Limits(max_message_size=300))
    await consumer.start()
    try:
        async with harness.producer(queue) as producer:
            big = await producer.send(make_message(1, tag="x" * 400))
            await producer.send(make_message(2))
        await got.wait_for(lambda: got.seqs == {2}, "the small message")
        [(msg, meta)] = await read_dead_letters(harness, queue, ConfMessage, 1)
    finally:
        await consumer.close()
    assert meta.id == big
    assert msg.seq == 1
    assert meta.headers["x-death-reason"] == "invalid"
    assert "over max_message_size (300)" in meta.headers["x-error-message"]


async def test_one_trace_runs_from_send_to_process(harness: Harness, traced: Any) -> None:
    """A PRODUCER span around send, a CONSUMER span around processing whose parent is the
    send (the context travelled with the message), the handler inside it; a retry joins the
    same trace as another child of the same send."""
    from opentelemetry import trace

    queue = new_queue()
    seen: list[tuple[int, int]] = []
    attempts: Counter[int] = Counter()
    consumer = harness.consumer(queue)
    fails_once = harness.capabilities.redelivery

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        context = trace.get_current_span().get_span_context()
        seen.append((context.trace_id, context.span_id))
        attempts[msg.seq] += 1
        if fails_once and msg.seq == 2 and attempts[2] == 1:
            raise RuntimeError("fails once")

    await consumer.start()
    try:
        async with harness.producer(queue, consumer) as producer:
            first = await producer.send(make_message(1))
            second = await producer.send(make_message(2))
        async with asyncio.timeout(WAIT):
            while len(seen) < (3 if fails_once else 2):  # noqa: ASYNC110 - a plain list
                await asyncio.sleep(0.01)
    finally:
        await consumer.close()
    spans = traced.get_finished_spans()
    sends = {
        s.attributes["messaging.message.id"]: s for s in spans if s.name == f"send {queue.name}"
    }
    processes = [s for s in spans if s.name == f"process {queue.name}"]
    assert set(sends) == {first, second}
    assert all(s.kind is trace.SpanKind.PRODUCER for s in sends.values())
    for process in processes:
        assert process.kind is trace.SpanKind.CONSUMER
        send = sends[process.attributes["messaging.message.id"]]
        assert process.parent is not None
        assert process.parent.span_id == send.context.span_id
        assert process.context.trace_id == send.context.trace_id
        assert process.attributes["messaging.system"] == consumer.messaging_system
        assert process.attributes["messaging.destination.name"] == queue.name
    # The handler ran inside its process span.
    assert {(p.context.trace_id, p.context.span_id) for p in processes} >= set(seen)
    outcomes = sorted(
        (p.attributes["messaging.message.id"], p.attributes["streamtools.outcome"])
        for p in processes
    )
    expected = [(first, "ok"), (second, "ok")]
    if fails_once:
        expected.append((second, "retried"))
    assert outcomes == sorted(expected)
    for process in processes:
        failed = process.attributes["streamtools.outcome"] == "retried"
        assert (process.attributes.get("error.type") == "RuntimeError") is failed
        assert (process.status.status_code is trace.StatusCode.ERROR) is failed


async def test_metrics_on_the_runner_count_sends_and_outcomes(harness: Harness) -> None:
    """`GET /metrics` on a running ConsumerRunner, parsed with prometheus_client: after N
    sends with k poison messages the counters read exactly what happened."""
    import aiohttp
    from prometheus_client import CollectorRegistry
    from prometheus_client.parser import text_string_to_metric_families

    from streamtools import ConsumerRunner, DeliveryError

    queue = new_queue()
    consumer = harness.consumer(queue)

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        if msg.tag == "poison":
            raise RuntimeError("poison")

    registry = CollectorRegistry()
    runner = ConsumerRunner([consumer], port=0, host="127.0.0.1", metrics_registry=registry)
    serving = asyncio.create_task(runner.serve())
    sent, poison = 6, 2
    try:
        async with asyncio.timeout(WAIT):
            while not consumer.serving or runner.health_port is None:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        async with harness.producer(queue, consumer) as producer:
            for n in range(sent):
                msg = make_message(n, tag="poison" if n < poison else "")
                try:
                    await producer.send(msg)
                except DeliveryError:
                    assert not harness.capabilities.queued  # HTTP: the handler's 500
        if harness.capabilities.dead_letter:
            await read_dead_letters(harness, queue, ConfMessage, poison)

        def value(families: dict[str, Any], name: str, **labels: str) -> float:
            for sample in families[name].samples:
                if sample.name.endswith("_total") and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
            return 0.0

        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(WAIT):
                while True:  # the last settle may trail the dead-letter read by a moment
                    url = f"http://127.0.0.1:{runner.health_port}/metrics"
                    async with session.get(url) as response:
                        assert response.status == 200
                        text = await response.text()
                    families = {f.name: f for f in text_string_to_metric_families(text)}
                    ok = value(
                        families, "streamtools_messages_processed", queue=queue.name, outcome="ok"
                    )
                    if ok == sent - poison:
                        break
                    await asyncio.sleep(0.05)
    finally:
        runner.stop()
        await serving
    labels = {"queue": queue.name, "transport": consumer.messaging_system}
    processed = "streamtools_messages_processed"
    accepted = sent if harness.capabilities.queued else sent - poison
    assert value(families, "streamtools_messages_sent", **labels) == accepted
    assert value(families, processed, outcome="ok", **labels) == sent - poison
    if harness.capabilities.dead_letter:
        assert value(families, processed, outcome="dead_lettered", **labels) == poison
        # attempts=2 in the harness: two retries of each poison message
        assert value(families, processed, outcome="retried", **labels) == 2 * poison
    else:
        assert value(families, processed, outcome="failed", **labels) == poison


HOSTILE_BODIES = {
    "1e400": b'{"seq": 1e400, "order_id": "%s", "created_at": "2026-01-01T00:00:00Z", '
    b'"items": [{"sku": "ABC-123", "quantity": 1}]}',
    "10**5000": b'{"seq": ' + b"9" * 5000 + b"}",
    "invalid UTF-8": b'{"seq": 1, "tag": "\xff\xfe"}',
    "BOM": b'\xef\xbb\xbf{"seq": 1}',
    "duplicate keys": b'{"seq": 1, "seq": "two"}',
    "not JSON": b"\x00\x01\x02 definitely not json",
    "empty": b"",
}


async def test_hostile_bodies_are_refused_and_the_consumer_goes_on(harness: Harness) -> None:
    """Each hostile body is refused (400/422, or dead-lettered `invalid`), never reaches the
    handler, and the consumer serves the next normal message; counted by the metrics."""
    if harness.send_foreign is None:
        pytest.skip("nothing but streamtools sends on this transport")
    from prometheus_client import CollectorRegistry

    from streamtools import _telemetry, enable_metrics

    previous = _telemetry._metrics
    registry = CollectorRegistry()
    enable_metrics(registry)
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)
    await consumer.start()
    try:
        for n, body in enumerate(HOSTILE_BODIES.values()):
            await harness.send_foreign(consumer, body.replace(b"%s", str(uuid4()).encode()), {})
            good = msgspec.json.encode(make_message(n))
            await harness.send_foreign(consumer, good, {})

            def arrived(n: int = n) -> bool:
                return n in got.seqs

            await got.wait_for(arrived, f"the normal message after attack {n}")
    finally:
        await consumer.close()
        _telemetry._metrics = previous
    assert got.seqs == set(range(len(HOSTILE_BODIES)))
    invalid = registry.get_sample_value(
        "streamtools_messages_processed_total",
        {"transport": consumer.messaging_system, "queue": queue.name, "outcome": "invalid"},
    )
    assert invalid == len(HOSTILE_BODIES)


async def test_a_poison_storm_ends_in_the_dead_letter_queue(harness: Harness) -> None:
    if not harness.capabilities.dead_letter:
        pytest.skip("transport has no dead-letter queue")
    queue = new_queue()
    consumer = harness.consumer(queue, retry=RetryPolicy(attempts=0, delay=0.02))

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        raise RuntimeError("poison")

    storm = 300
    await consumer.start()
    try:
        async with harness.producer(queue) as producer:
            ids = await producer.send_many([make_message(n, tag="poison") for n in range(storm)])
        dead = await read_dead_letters(harness, queue, ConfMessage, storm)
    finally:
        await consumer.close()
    assert sorted(meta.id for _, meta in dead) == sorted(ids)
    assert {meta.headers["x-death-reason"] for _, meta in dead} == {"max-retries"}
