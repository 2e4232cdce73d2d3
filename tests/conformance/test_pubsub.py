"""Watermill's universal pub/sub tests, the ones test_conformance.py does not already cover,
ported as our own and run on every registered transport; each test that needs a capability
(`Capabilities`) skips where the transport does not declare it.

Already in test_conformance.py: 50 messages intact with their metadata, a consumer that
subscribes after the sends gets them (queued), resend after handler failures, invalid input
and poison messages, queues isolated, close mid-stream then resume, concurrent close, run
until close. Reconnects after a broker restart are each transport's resilience tests (they
need private broker instances).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping
from typing import Any

import msgspec
import pytest

from streamtools import (
    ConsumeNext,
    Consumer,
    Limits,
    Metadata,
    Middleware,
    PublishError,
    PublishNext,
    StreamtoolsError,
)
from tests.conformance.conftest import ConfMessage, Harness
from tests.conformance.test_conformance import (
    WAIT,
    Collector,
    collecting_consumer,
    collecting_consumer_with,
    make_message,
    new_queue,
)
from tests.conftest import eventually


async def test_thousands_of_messages_to_many_concurrent_consumers(harness: Harness) -> None:
    """5,000 messages, sent 200 at a time, shared by five competing consumers (one serving
    consumer where the transport serves a port): every one handled, none lost."""
    queue = new_queue()
    got = Collector()
    count = 5_000
    consumers: list[Consumer[ConfMessage]] = []
    for _ in range(5 if harness.capabilities.queued else 1):
        consumer = harness.consumer(queue)

        @consumer()
        async def handle(msg: ConfMessage) -> None:
            got.add(msg)

        await consumer.start()
        consumers.append(consumer)
    try:
        async with harness.producer(queue, consumers[0], **harness.burst_settings) as producer:
            for first in range(0, count, 200):
                await asyncio.gather(
                    *(producer.send(make_message(i)) for i in range(first, first + 200))
                )
        await got.wait_for(lambda: len(got.seqs) == count, f"{count} messages")
    finally:
        await asyncio.gather(*(c.close() for c in consumers))
    assert got.seqs == set(range(count))
    duplicates = len(got.messages) - count
    assert duplicates <= count // 20, f"{duplicates} duplicates of {count}"


async def test_several_queues_at_once(harness: Harness) -> None:
    """Five queues sent to and consumed concurrently: each gets exactly its own messages."""
    queues = [new_queue() for _ in range(5)]
    collected: list[Collector] = []
    consumers: list[Consumer[ConfMessage]] = []
    for queue in queues:
        consumer, got = collecting_consumer(harness, queue)
        await consumer.start()
        consumers.append(consumer)
        collected.append(got)

    async def send_all(index: int) -> None:
        async with harness.producer(
            queues[index], consumers[index], **harness.burst_settings
        ) as producer:
            await asyncio.gather(
                *(producer.send(make_message(index * 1_000 + i)) for i in range(100))
            )

    try:
        await asyncio.gather(*(send_all(i) for i in range(5)))
        for index, got in enumerate(collected):
            expected = set(range(index * 1_000, index * 1_000 + 100))

            def arrived(got: Collector = got, expected: set[int] = expected) -> bool:
                return got.seqs == expected

            await got.wait_for(arrived, f"100 messages on queue {index}")
    finally:
        await asyncio.gather(*(c.close() for c in consumers))
    for index, got in enumerate(collected):
        assert got.seqs == set(range(index * 1_000, index * 1_000 + 100))


async def test_order_is_kept_where_the_transport_promises_it(harness: Harness) -> None:
    if not harness.capabilities.ordered:
        pytest.skip("the transport promises no order")
    queue = new_queue()
    consumer, got = collecting_consumer_with(harness, queue, limits=Limits(max_in_flight=1))
    await consumer.start()
    try:
        async with harness.producer(queue, consumer) as producer:
            for i in range(200):
                await producer.send(make_message(i), **harness.ordered_send)
        await got.wait_for(lambda: len(got.seqs) == 200, "200 messages")
    finally:
        await consumer.close()
    assert [m.seq for m, _ in got.messages] == list(range(200))


async def test_an_unsettled_message_holds_the_next_with_one_in_flight(harness: Harness) -> None:
    """With `max_in_flight=1`, the second message is not handed out while the handler of the
    first has not returned (Watermill's "no ack"): back-pressure reaches the broker."""
    if not harness.capabilities.queued:
        pytest.skip("only a queued transport holds messages back for its consumer")
    queue = new_queue()
    release = asyncio.Event()
    started: list[int] = []
    consumer = harness.consumer(queue, limits=Limits(max_in_flight=1))

    @consumer()
    async def handle(msg: ConfMessage) -> None:
        started.append(msg.seq)
        if msg.seq == 0:
            await release.wait()

    async with harness.producer(queue) as producer:
        await producer.send(make_message(0), **harness.ordered_send)
        await producer.send(make_message(1), **harness.ordered_send)
    await consumer.start()
    try:
        await eventually(lambda: bool(started), "message 0 handled", WAIT)
        # Half a second in which message 1 must not start (a slow machine only makes the
        # check easier to pass, never harder: no timing threshold decides a pass).
        await asyncio.sleep(0.5)
        assert started == [0], f"message 1 was handed out while message 0 was unsettled: {started}"
        release.set()
        await eventually(lambda: len(started) == 2, "message 1 after the release", WAIT)
    finally:
        release.set()
        await consumer.close()
    assert started == [0, 1]


async def test_consumer_groups_each_get_every_message(harness: Harness) -> None:
    if not harness.capabilities.consumer_groups:
        pytest.skip("the transport has no consumer groups")
    queue = new_queue()
    groups: dict[str, list[tuple[Consumer[ConfMessage], Collector]]] = {}
    for group in ("billing", "shipping"):
        # Two members in each group: they share the group's messages.
        members = [
            collecting_consumer_with(harness, queue, group=f"{queue.name}-{group}")
            for _ in range(2)
        ]
        groups[group] = members
    everyone = [consumer for members in groups.values() for consumer, _ in members]
    try:
        await asyncio.gather(*(c.start() for c in everyone))
        async with harness.producer(queue) as producer:
            await asyncio.gather(*(producer.send(make_message(i)) for i in range(100)))
        for group, members in groups.items():
            collectors = [got for _, got in members]

            def complete(collectors: list[Collector] = collectors) -> bool:
                return set().union(*(c.seqs for c in collectors)) == set(range(100))

            await eventually(complete, f"every message in group {group}", WAIT)
            seen = Counter(m.seq for got in collectors for m, _ in got.messages)
            assert set(seen) == set(range(100)), group
            assert sum(seen.values()) - 100 <= 10, f"{group}: shared, not each member all"
    finally:
        await asyncio.gather(*(c.close() for c in everyone))


async def test_a_producer_closed_mid_burst_loses_nothing_it_confirmed(harness: Harness) -> None:
    """Close a producer while 300 sends are in flight: every send that returned (confirmed)
    arrives; the others fail with a streamtools error, never silently."""
    queue = new_queue()
    consumer, got = collecting_consumer(harness, queue)
    await consumer.start()
    producer = harness.producer(queue, consumer)
    await producer.a_init()
    confirmed: set[int] = set()
    failed: list[BaseException] = []

    async def send(i: int) -> None:
        try:
            await producer.send(make_message(i))
        except StreamtoolsError as exc:
            failed.append(exc)
        else:
            confirmed.add(i)

    try:
        sends = [asyncio.ensure_future(send(i)) for i in range(300)]
        await eventually(lambda: len(confirmed) >= 50, "50 sends confirmed", WAIT)
        await producer.close()
        await asyncio.gather(*sends)
        await got.wait_for(lambda: confirmed <= got.seqs, "every confirmed message")
    finally:
        await producer.close()
        await consumer.close()
    assert len(confirmed) + len(failed) == 300
    assert all(isinstance(exc, PublishError | StreamtoolsError) for exc in failed)
    assert confirmed <= got.seqs


class _Stamp(Middleware):
    """Publish: tags every message; consume: records it, and settles `skip` unhandled."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    async def publish(
        self, msg: Any, meta: Metadata, options: Mapping[str, object], call_next: PublishNext
    ) -> Any:
        return await call_next(
            msgspec.structs.replace(msg, tag=msg.tag or "stamped"), meta, options
        )

    async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
        self.seen.append((msg.seq, msg.tag))
        if msg.tag == "skip":
            return None  # settled as handled, the handler not called
        return await call_next(msg, meta)


async def test_middleware_runs_around_send_and_handler(harness: Harness) -> None:
    """The same middleware on every transport: the publish side changes the message before
    it is validated and sent, the consume side sees the decoded message, and one that
    returns without calling the next step settles the message (never redelivered)."""
    queue = new_queue()
    stamp = _Stamp()
    consumer, got = collecting_consumer_with(harness, queue, middlewares=[stamp])
    await consumer.start()
    try:
        async with harness.producer(queue, consumer) as plain:
            await plain.send(make_message(99, tag="skip"))
        async with harness.producer(queue, consumer, middlewares=[stamp]) as producer:
            for i in range(20):
                await producer.send(make_message(i))
        await got.wait_for(lambda: len(got.seqs) == 20, "20 stamped messages")
    finally:
        await consumer.close()
    assert got.seqs == set(range(20))
    assert {m.tag for m, _ in got.messages} == {"stamped"}
    assert stamp.seen.count((99, "skip")) == 1
    assert {seq for seq, tag in stamp.seen if tag == "stamped"} == set(range(20))
