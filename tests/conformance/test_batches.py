"""Batch consume on every queued transport: what a batch handler gets, and what its failures
mean for the delivery policy (`streamtools._batching` states it; these tests pin it).

Each message of a batch is decoded alone (an invalid one is dead-lettered by itself), a
batch handler that returns settles the whole batch, a `BatchError` fails only the messages
it names, any other exception fails each message of the batch alone (retried, then
dead-lettered one by one), consume middlewares run per message, and closing the consumer
hands an open batch to the handler at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from streamtools import (
    PRODUCERS,
    Batch,
    BatchError,
    ConfigurationError,
    ConsumeNext,
    Consumer,
    Limits,
    Metadata,
    Middleware,
    Producer,
    RetryPolicy,
)
from tests.conformance.conftest import ConfMessage, Harness
from tests.conformance.test_conformance import WAIT, make_message, new_queue, read_dead_letters


@pytest.fixture
def queued(harness: Harness) -> Harness:
    if not harness.capabilities.queued:
        pytest.skip("batches are for queued transports (HTTP answers each request)")
    return harness


class Batches:
    """The batches a handler received, in order; `wait_for` blocks until a condition holds."""

    def __init__(self) -> None:
        self.batches: list[list[ConfMessage]] = []
        self._changed = asyncio.Event()

    def add(self, batch: list[ConfMessage]) -> None:
        self.batches.append(batch)
        self._changed.set()

    @property
    def seqs(self) -> list[int]:
        return [msg.seq for batch in self.batches for msg in batch]

    async def wait_for(self, condition: Any, what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"timed out after {WAIT} s waiting for {what}; got {self.seqs}")


async def send_all(harness: Harness, consumer: Consumer[Any], msgs: list[ConfMessage]) -> None:
    async with harness.producer(consumer.queue, consumer) as producer:
        await producer.send_many(msgs)


async def test_a_batch_handler_gets_lists_of_at_most_max_size(queued: Harness) -> None:
    queue = new_queue()
    consumer = queued.consumer(queue)
    got = Batches()

    @consumer(batch=Batch(max_size=10, max_wait=0.5))
    async def handle(batch: list[ConfMessage]) -> None:
        got.add(batch)

    await consumer.start()
    try:
        await send_all(queued, consumer, [make_message(i) for i in range(45)])
        await got.wait_for(lambda: len(set(got.seqs)) == 45, "45 messages")
    finally:
        await consumer.close()
    assert sorted(set(got.seqs)) == list(range(45))
    assert all(1 <= len(batch) <= 10 for batch in got.batches), [len(b) for b in got.batches]
    # Sent at once, they are gathered: fewer batches than messages.
    assert len(got.batches) < 45, [len(b) for b in got.batches]


async def test_an_invalid_message_is_dead_lettered_alone_and_the_batch_goes_on(
    queued: Harness,
) -> None:
    queue = new_queue()
    consumer = queued.consumer(queue)
    got = Batches()

    @consumer(batch=Batch(max_size=8, max_wait=0.2))
    async def handle(batch: list[ConfMessage]) -> None:
        got.add(batch)

    await consumer.start()
    raw: Producer[Any] = PRODUCERS[queued.name](queue.name, **queued.producer_settings(consumer))
    invalid = {"seq": 99, "order_id": "not-a-uuid", "created_at": "2026-01-01T00:00:00Z"}
    try:
        async with raw, queued.producer(queue, consumer) as producer:
            for i in range(3):
                await producer.send(make_message(i))
            bad_id = await raw.send(invalid)
            for i in range(3, 6):
                await producer.send(make_message(i))
        await got.wait_for(lambda: len(set(got.seqs)) == 6, "the 6 valid messages")
        [(body, meta)] = await read_dead_letters(queued, queue, dict[str, object], 1)
    finally:
        await consumer.close()
    assert sorted(got.seqs) == list(range(6))
    assert body == invalid
    assert meta.id == bad_id
    assert meta.headers["x-death-reason"] == "invalid"
    assert meta.headers["x-error-type"] == "ValidationError"


async def test_a_batch_error_fails_only_the_messages_it_names(queued: Harness) -> None:
    queue = new_queue()
    consumer = queued.consumer(queue)
    got = Batches()
    attempts: Counter[int] = Counter()

    @consumer(batch=Batch(max_size=10, max_wait=0.2))
    async def handle(batch: list[ConfMessage]) -> None:
        failed: dict[int, BaseException] = {}
        for index, msg in enumerate(batch):
            attempts[msg.seq] += 1
            if msg.seq % 4 == 0 and attempts[msg.seq] == 1:
                failed[index] = RuntimeError(f"transient failure of {msg.seq}")
        got.add([msg for index, msg in enumerate(batch) if index not in failed])
        if failed:
            raise BatchError(failed)

    await consumer.start()
    try:
        await send_all(queued, consumer, [make_message(i) for i in range(20)])
        await got.wait_for(lambda: len(set(got.seqs)) == 20, "20 messages")
        await asyncio.sleep(0.3)  # a wrongly retried message would come back by now
    finally:
        await consumer.close()
    # The named ones were tried twice, every other one once: the rest of the batch was
    # handled, not retried with them.
    assert {seq: n for seq, n in attempts.items() if n != 1} == {s: 2 for s in range(0, 20, 4)}
    assert sorted(got.seqs) == list(range(20))


async def test_a_raising_batch_handler_retries_and_dead_letters_each_message_alone(
    queued: Harness,
) -> None:
    if not queued.capabilities.dead_letter:
        pytest.skip("transport has no dead-letter queue")
    queue = new_queue()
    consumer = queued.consumer(queue, retry=RetryPolicy(attempts=1, delay=0.02))
    attempts: Counter[int] = Counter()
    handled = Batches()

    retry_batch_sizes: list[int] = []

    @consumer(batch=Batch(max_size=5, max_wait=0.2))
    async def handle(batch: list[ConfMessage]) -> None:
        for msg in batch:
            attempts[msg.seq] += 1
        if any(attempts[msg.seq] > 1 for msg in batch):
            retry_batch_sizes.append(len(batch))
        if any(msg.tag == "poison" for msg in batch):
            raise RuntimeError("a poison message in the batch")
        handled.add(batch)

    await consumer.start()
    try:
        msgs = [make_message(i, tag="poison" if i == 2 else "") for i in range(5)]
        await send_all(queued, consumer, msgs)
        # The batch failed as a whole; each message is retried in a batch of its own, so the
        # good ones are handled on their first retry and the poison one, after its 2 tries,
        # is dead-lettered alone.
        await handled.wait_for(lambda: set(handled.seqs) >= {0, 1, 3, 4}, "the 4 good ones")
        dead = await read_dead_letters(queued, queue, ConfMessage, 1)
    finally:
        await consumer.close()
    [(msg, meta)] = dead
    assert msg.seq == 2
    assert meta.headers["x-death-reason"] == "max-retries"
    assert meta.headers["x-attempts"] == "2"
    assert "a poison message in the batch" in meta.headers["x-error-message"]
    # Those that shared the poison's batch were tried twice (Kafka: the ones on its
    # partition), the others once; a retry is handed over alone.
    assert attempts[2] == 2
    assert set(attempts) == set(range(5))
    assert max(attempts.values()) == 2
    assert set(retry_batch_sizes) == {1}


async def test_consume_middleware_runs_per_message_of_a_batch(queued: Harness) -> None:
    seen: list[tuple[int, str]] = []

    class SkipOdd(Middleware):
        """Settles odd messages as handled without the batch (an idempotency check's shape)."""

        async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
            seen.append((msg.seq, meta.id))
            if msg.seq % 2:
                return None
            return await call_next(msg, meta)

    queue = new_queue()
    consumer = queued.consumer(queue, middlewares=[SkipOdd()])
    got = Batches()

    @consumer(batch=Batch(max_size=10, max_wait=0.2))
    async def handle(batch: list[ConfMessage]) -> None:
        got.add(batch)

    await consumer.start()
    try:
        await send_all(queued, consumer, [make_message(i) for i in range(12)])
        await got.wait_for(lambda: len(set(got.seqs)) == 6, "the 6 even messages")
        await asyncio.sleep(0.3)  # a skipped message that came back would show by now
    finally:
        await consumer.close()
    assert sorted(got.seqs) == list(range(0, 12, 2))
    assert sorted(seq for seq, _ in seen) == list(range(12))  # each once: all settled


async def test_close_hands_an_open_batch_to_the_handler_at_once(queued: Harness) -> None:
    arrived = asyncio.Event()

    class Arrived(Middleware):
        async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
            if msg.seq == 2:
                arrived.set()
            return await call_next(msg, meta)

    queue = new_queue()
    consumer = queued.consumer(queue, middlewares=[Arrived()])
    got = Batches()

    @consumer(batch=Batch(max_size=50, max_wait=60.0))
    async def handle(batch: list[ConfMessage]) -> None:
        got.add(batch)

    await consumer.start()
    try:
        await send_all(queued, consumer, [make_message(i) for i in range(3)])
        async with asyncio.timeout(WAIT):
            await arrived.wait()
    finally:
        async with asyncio.timeout(WAIT / 2):  # far below max_wait
            await consumer.close()
    assert sorted(got.seqs) == [0, 1, 2]


async def test_a_batch_larger_than_max_in_flight_is_refused(queued: Harness) -> None:
    consumer = queued.consumer(new_queue(), limits=Limits(max_in_flight=16))

    async def handle(batch: list[ConfMessage]) -> None:
        return None

    with pytest.raises(ConfigurationError, match=r"max_in_flight=100\) or more"):
        consumer(batch=Batch(max_size=100))(handle)
    with pytest.raises(ConfigurationError, match=r"must be a streamtools\.Batch"):
        consumer(batch=100)(handle)  # type: ignore[arg-type]


async def test_batches_keep_the_order_where_the_transport_promises_it(queued: Harness) -> None:
    if not queued.capabilities.ordered:
        pytest.skip("the transport promises no order")
    queue = new_queue()
    consumer = queued.consumer(queue)
    got = Batches()

    @consumer(batch=Batch(max_size=16, max_wait=0.05))
    async def handle(batch: list[ConfMessage]) -> None:
        await asyncio.sleep(0.01 if len(got.batches) % 2 else 0)  # a slow one now and then
        got.add(batch)

    await consumer.start()
    try:
        async with queued.producer(queue, consumer) as producer:
            for i in range(100):
                await producer.send(make_message(i), **queued.ordered_send)
        await got.wait_for(lambda: len(got.seqs) >= 100, "100 messages")
    finally:
        await consumer.close()
    assert got.seqs == list(range(100))
