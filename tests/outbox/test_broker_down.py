"""Failure test with figures: the broker down for a while (issue #23, item 5).

A relay publishes to a private RabbitMQ node (tests.support.rabbit_node; the shared broker
is never stopped). The node is stopped gracefully, messages are committed to the outbox
while it is down, then it is started again on the same data and port: every committed
message is published once, in commit order per key, marked `sent` only after its confirm,
none parked, none lost.
"""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest

from streamtools import RMQ, Queue
from streamtools.outbox import Outbox, Relay
from tests.conftest import unique_name
from tests.outbox.conftest import Order, record
from tests.outbox.support import Sink, outbox_states, write_orders
from tests.outbox.test_relay import running, until
from tests.support import RabbitNode
from tests.support.queues import queue_depth

pytestmark = pytest.mark.slow

DOWN_FOR = 12.0  # seconds the node stays down while the writers commit (not a threshold)


async def test_broker_down_for_a_while_loses_nothing(pg_dsn: str, schema: str) -> None:
    node = await asyncio.to_thread(RabbitNode)
    try:
        await node.astart()
        queue = Queue(unique_name("st-outbox-down"), Order)
        settings: dict[str, object] = {"url": node.url, "connect_timeout": 2, "send_timeout": 5}
        relay = Relay(
            RMQ,
            dsn=pg_dsn,
            schema=schema,
            producer_settings=settings,
            poll_interval=0.5,
            retry_delay=0.2,
            max_retry_delay=2.0,
        )
        async with running(relay):
            # Before: the relay publishes while the broker is up (the queue is declared).
            before = await write_orders(pg_dsn, schema, queue, keys=4, per_key=10)
            await until(lambda: _sent(pg_dsn, schema, len(before)), "the first rows sent")
            await node.astop()
            # While down: commit in small transactions for DOWN_FOR seconds.
            during: list[str] = []
            down_since = time.monotonic()
            rounds = 0
            while time.monotonic() - down_since < DOWN_FOR:
                during += await _write_round(pg_dsn, schema, queue, rounds)
                rounds += 1
                await asyncio.sleep(0.5)
            states = await outbox_states(pg_dsn, schema)
            # Nothing the broker never confirmed is marked sent, nothing is parked.
            assert states.get("sent", 0) == len(before), states
            assert states.get("parked", 0) == 0, states
            assert relay.stats.retried > 0  # the relay kept trying while the node was down
            retried_while_down = relay.stats.retried
            await node.astart()
            ids = before + during
            await until(lambda: _sent(pg_dsn, schema, len(ids)), "every row marked sent")
        sink = await Sink(RMQ, queue, url=node.url, prefetch=1).start()
        try:
            await sink.wait_for(set(ids))
            # Drain what else the queue holds (a duplicate would be there by now).
            await until(lambda: _depth_zero(node.url, queue.name), "the queue drained")
        finally:
            await sink.close()
        states = await outbox_states(pg_dsn, schema)
        assert states == {"sent": len(ids)}, states  # none parked, none left pending
        sink.assert_key_order()
        lost = set(ids) - sink.unique
        assert not lost
        assert sink.duplicates == 0  # nothing was in flight when the node went away
        assert relay.stats.published == len(ids)
        assert relay.stats.parked == 0
        record(
            f"broker down {DOWN_FOR:g} s, restarted ({RMQ})",
            committed=len(ids), published=len(sink.unique), received=len(sink.received),
            lost=len(lost), duplicates=sink.duplicates, committed_while_down=len(during),
            retried=retried_while_down, parked=relay.stats.parked,
        )  # fmt: skip
    finally:
        await asyncio.to_thread(node.cleanup)


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
