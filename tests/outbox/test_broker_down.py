"""Failure tests with figures: the broker down for a while (issue #23, item 5).

RabbitMQ: a relay publishes to a private RabbitMQ node (tests.support.rabbit_node; the shared
broker is never stopped). The node is stopped gracefully, messages are committed to the outbox
while it is down, then it is started again on the same data and port.

Kafka: the bundled Tansu keeps nothing across restarts, so a private TansuBroker (never the
shared session broker) is frozen with SIGSTOP instead: down for its clients, its data kept,
then resumed with SIGCONT.

Either way: every committed message is published, in commit order per key, marked `sent` only
after the broker acknowledged it (nothing new while it is down), none parked, none lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable

import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from streamtools import KAFKA, RMQ, Limits, Queue
from streamtools.outbox import Outbox, Relay
from tests.conftest import unique_name
from tests.outbox.conftest import Order, record
from tests.outbox.support import Sink, outbox_states, write_orders
from tests.outbox.test_relay import running, until
from tests.support import RabbitNode
from tests.support.kafka_broker import TansuBroker
from tests.support.queues import queue_depth

pytestmark = pytest.mark.slow

DOWN_FOR = 12.0  # seconds the node stays down while the writers commit (not a threshold)
FROZEN_FOR = 10.0  # seconds the Kafka broker stays frozen while the writers commit (idem)


async def test_broker_down_for_a_while_loses_nothing(pg_dsn: str, schema: str) -> None:
    node = await asyncio.to_thread(RabbitNode)
    try:
        await node.astart()
        queue = Queue(unique_name("st-outbox-down"), Order)
        settings: dict[str, object] = {"url": node.url, "connect_timeout": 2, "send_timeout": 5}
        relay = _relay(RMQ, pg_dsn, schema, settings)
        async with running(relay):
            # Before: the relay publishes while the broker is up (the queue is declared).
            before = await _first_batch_sent(pg_dsn, schema, queue)
            await node.astop()
            during = await _commit_while_down(pg_dsn, schema, queue, DOWN_FOR)
            retried_while_down = await _check_nothing_new_sent(pg_dsn, schema, relay, before)
            await node.astart()
            ids = before + during
            await until(lambda: _sent(pg_dsn, schema, len(ids)), "every row marked sent")
        sink = await Sink(RMQ, queue, url=node.url, limits=Limits(max_in_flight=1)).start()
        await _check_and_record(
            f"broker down {DOWN_FOR:g} s, restarted ({RMQ})",
            pg_dsn, schema, relay, sink, ids, during, retried_while_down,
            drained=lambda: _depth_zero(node.url, queue.name),
            # Nothing was in flight when the node went away: no duplicate either.
            duplicates_expected=False,
        )  # fmt: skip
    finally:
        await asyncio.to_thread(node.cleanup)


async def test_kafka_broker_frozen_for_a_while_loses_nothing(pg_dsn: str, schema: str) -> None:
    broker = TansuBroker()  # private, on a free port: the shared session broker is never touched
    await asyncio.to_thread(broker.start)
    pid = broker.pid
    assert pid is not None
    frozen = False
    try:
        servers = broker.bootstrap_servers
        queue = Queue(unique_name("st-outbox-frozen"), Order)
        settings: dict[str, object] = {
            "bootstrap_servers": servers,
            "connect_timeout": 2,
            "send_timeout": 5,
        }
        relay = _relay(KAFKA, pg_dsn, schema, settings)
        async with running(relay):
            before = await _first_batch_sent(pg_dsn, schema, queue)
            os.kill(pid, signal.SIGSTOP)
            frozen = True
            during = await _commit_while_down(pg_dsn, schema, queue, FROZEN_FOR)
            retried_while_down = await _check_nothing_new_sent(pg_dsn, schema, relay, before)
            os.kill(pid, signal.SIGCONT)
            frozen = False
            ids = before + during
            await until(lambda: _sent(pg_dsn, schema, len(ids)), "every row marked sent")
        sink = await Sink(
            KAFKA, queue, bootstrap_servers=servers, session_timeout=6, shutdown_timeout=10
        ).start()
        await _check_and_record(
            "Kafka broker frozen 10 s (SIGSTOP), resumed",
            pg_dsn, schema, relay, sink, ids, during, retried_while_down,
            drained=lambda: _all_read(servers, queue.name, sink),
            # A produce request that timed out while the broker was frozen may still be
            # written when it resumes, before the relay's retry: duplicates are counted.
            duplicates_expected=True,
        )  # fmt: skip
    finally:
        if frozen:
            os.kill(pid, signal.SIGCONT)
        await asyncio.to_thread(broker.stop)


# --- the scenario's steps and checks, shared by both brokers ----------------------------------


def _relay(transport: str, dsn: str, schema: str, settings: dict[str, object]) -> Relay:
    return Relay(
        transport,
        dsn=dsn,
        schema=schema,
        producer_settings=settings,
        poll_interval=0.5,
        retry_delay=0.2,
        max_retry_delay=2.0,
    )


async def _first_batch_sent(dsn: str, schema: str, queue: Queue[Order]) -> list[str]:
    """Commit 4 keys x 10 orders while the broker is up; return once all are marked sent."""
    before = await write_orders(dsn, schema, queue, keys=4, per_key=10)
    await until(lambda: _sent(dsn, schema, len(before)), "the first rows sent")
    return before


async def _commit_while_down(
    dsn: str, schema: str, queue: Queue[Order], down_for: float
) -> list[str]:
    """Commit in small transactions for `down_for` seconds; return the ids in commit order."""
    during: list[str] = []
    down_since = time.monotonic()
    rounds = 0
    while time.monotonic() - down_since < down_for:
        during += await _write_round(dsn, schema, queue, rounds)
        rounds += 1
        await asyncio.sleep(0.5)
    return during


async def _check_nothing_new_sent(dsn: str, schema: str, relay: Relay, before: list[str]) -> int:
    """While the broker is down: nothing it never acknowledged is marked sent, nothing is
    parked, and the relay kept trying. Returns the retries so far."""
    states = await outbox_states(dsn, schema)
    assert states.get("sent", 0) == len(before), states
    assert states.get("parked", 0) == 0, states
    assert relay.stats.retried > 0  # the relay kept trying while the broker was down
    return relay.stats.retried


async def _check_and_record(
    case: str,
    dsn: str,
    schema: str,
    relay: Relay,
    sink: Sink,
    ids: list[str],
    during: list[str],
    retried_while_down: int,
    *,
    drained: Callable[[], Awaitable[bool]],
    duplicates_expected: bool,
) -> None:
    """After the outage: every row sent once, all delivered in key order, none lost or parked;
    record the figures."""
    try:
        await sink.wait_for(set(ids))
        # Drain what else the broker holds (a duplicate would be there by now).
        await until(drained, "everything the broker holds received")
    finally:
        await sink.close()
    states = await outbox_states(dsn, schema)
    assert states == {"sent": len(ids)}, states  # none parked, none left pending
    sink.assert_key_order()
    lost = set(ids) - sink.unique
    assert not lost
    if not duplicates_expected:
        assert sink.duplicates == 0
    assert relay.stats.published == len(ids)
    assert relay.stats.parked == 0
    record(
        case,
        committed=len(ids), published=len(sink.unique), received=len(sink.received),
        lost=len(lost), duplicates=sink.duplicates, committed_while_down=len(during),
        retried=retried_while_down, parked=relay.stats.parked,
    )  # fmt: skip


async def _write_round(dsn: str, schema: str, queue: Queue[Order], round_: int) -> list[str]:
    # 4 keys, seq continuing after the 10 committed before the outage: one order per key.
    outbox = Outbox(schema=schema)
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.transaction():
        return [
            await outbox.send(conn, queue, Order(key=f"k{k}", seq=10 + round_), key=f"k{k}")
            for k in range(4)
        ]


async def _sent(dsn: str, schema: str, count: int) -> bool:
    return (await outbox_states(dsn, schema)).get("sent", 0) == count


async def _depth_zero(url: str, name: str) -> bool:
    return await queue_depth(url, name) == 0


async def _all_read(servers: str, topic: str, sink: Sink) -> bool:
    """The sink received as many records as the topic holds (its partitions' end offsets)."""
    probe = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    await probe.start()
    try:
        await probe.topics()  # fetches the metadata partitions_for_topic reads
        tps = [TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or ()]
        ends: dict[TopicPartition, int] = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    return len(sink.received) >= sum(ends.values())
