"""The outbox cases (issue #23, item 6): PostgreSQL (psycopg 3) and RabbitMQ.

- `outbox send in a transaction`: per message, a transaction that writes the message to
  the outbox (`Outbox.send`) and commits, against the same transaction without the row
  committed, then a plain confirmed RabbitMQ `send`: what a caller pays for its message,
  in its own request (ratio > 1: the outbox write is cheaper than the send it replaces);
- `outbox relay throughput`: committed rows (written untimed before each round) to
  confirmed by the broker and marked `sent`, through `Relay.relay_once` batches;
- `outbox commit-to-confirm latency p50` (and p99, same runs): one message at a time,
  committed, then picked up by a running relay (woken by NOTIFY) and confirmed; the
  relay's own figure (`record_latency=True`: from the row's insert to the broker's confirm).

Each case creates its own PostgreSQL schema and RabbitMQ queue and drops them after.
PostgreSQL: `STREAMTOOLS_BENCH_PG_DSN`, default postgresql://postgres@127.0.0.1:5432/test.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import aio_pika
import psycopg

from benchmarks.common import RMQ_URL, delete_queues, orders, percentile, unique
from benchmarks.harness import Case, Contender
from examples.contracts import OrderCreated
from streamtools import RMQ, Queue
from streamtools.outbox import Outbox, Relay, init_schema
from streamtools.transports.rabbitmq import RabbitMQProducer

PG_DSN = os.environ.get("STREAMTOOLS_BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
KEYS = 16  # the relay publishes one key in order, keys at once
WAIT = 120.0  # a bound on any wait of a round


class _Space:
    """A schema with the outbox tables and a RabbitMQ queue of one case; dropped after."""

    def __init__(self, case: str) -> None:
        self.schema = f"st_bench_{case}_{uuid.uuid4().hex[:8]}"
        self.queue = Queue(unique(f"outbox-{case}"), OrderCreated)
        self.conn: psycopg.AsyncConnection[Any] | None = None

    async def setup(self) -> None:
        self.conn = await psycopg.AsyncConnection.connect(PG_DSN)
        await init_schema(self.conn, self.schema)
        await self.conn.commit()

    async def teardown(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        try:
            async with await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'.encode())
        finally:
            await delete_queues([self.queue.name])

    @property
    def db(self) -> psycopg.AsyncConnection[Any]:
        assert self.conn is not None
        return self.conn

    async def purge(self) -> None:
        """Untimed: empty the queue and the outbox table between rounds."""
        connection = await aio_pika.connect(RMQ_URL, timeout=10)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(self.queue.name, passive=True)
            await queue.purge()
        finally:
            await connection.close()
        async with self.db.transaction():
            await self.db.execute(f'DELETE FROM "{self.schema}".outbox'.encode())

    def relay(self, **settings: Any) -> Relay:
        return Relay(
            RMQ,
            dsn=PG_DSN,
            schema=self.schema,
            producer_settings={"url": RMQ_URL},
            contracts=[self.queue],
            **settings,
        )


def send_cases(count: int) -> list[Case]:
    msgs = orders(count)
    space = _Space("send")
    outbox = Outbox(schema=space.schema)
    producer: list[RabbitMQProducer[OrderCreated]] = []

    async def outbox_send() -> tuple[int, float]:
        conn = space.db
        started = time.perf_counter()
        for seq, order in enumerate(msgs):
            async with conn.transaction():
                await outbox.send(conn, space.queue, order, key=f"k{seq % KEYS}")
        elapsed = time.perf_counter() - started
        await space.purge()
        return count, elapsed

    async def commit_then_send() -> tuple[int, float]:
        conn, send = space.db, producer[0].send
        started = time.perf_counter()
        for order in msgs:
            async with conn.transaction():
                pass  # the same transaction, without the outbox row
            await send(order)
        elapsed = time.perf_counter() - started
        await space.purge()
        return count, elapsed

    async def setup() -> None:
        await space.setup()
        producer.append(RabbitMQProducer(space.queue, url=RMQ_URL))
        await producer[0].a_init()

    async def teardown() -> None:
        try:
            for each in producer:
                await each.close()
        finally:
            await space.teardown()

    return [
        Case(
            f"outbox send in a transaction (insert + commit, {count} msgs)",
            Contender("Outbox.send + commit", outbox_send),
            [Contender("commit, then RabbitMQ send (confirmed)", commit_then_send)],
            setup=setup,
            teardown=teardown,
        )
    ]


def relay_cases(count: int) -> list[Case]:
    msgs = orders(count)
    space = _Space("relay")
    outbox = Outbox(schema=space.schema)
    relays: list[Relay] = []

    async def relay_throughput() -> tuple[int, float]:
        conn, relay = space.db, relays[0]
        async with conn.transaction():  # untimed: the committed rows the relay starts from
            for seq, order in enumerate(msgs):
                await outbox.send(conn, space.queue, order, key=f"k{seq % KEYS}")
        target = relay.stats.published + count
        started = time.perf_counter()
        async with asyncio.timeout(WAIT):
            while relay.stats.published < target:
                if not await relay.relay_once():
                    raise RuntimeError(f"rows left unsent: {relay.stats}")
        elapsed = time.perf_counter() - started
        await space.purge()
        return count, elapsed

    async def setup() -> None:
        await space.setup()
        relays.append(space.relay())
        # untimed: one row through, so the producer's connection and queue are there
        async with space.db.transaction():
            await outbox.send(space.db, space.queue, msgs[0])
        await relays[0].relay_once()
        await space.purge()

    async def teardown() -> None:
        try:
            for relay in relays:
                await relay.close()
        finally:
            await space.teardown()

    return [
        Case(
            f"outbox relay throughput, committed -> confirmed + marked ({count} rows, {KEYS} keys)",
            Contender("Relay.relay_once batches", relay_throughput),
            [],
            setup=setup,
            teardown=teardown,
        )
    ]


def latency_cases(count: int) -> list[Case]:
    msgs = orders(count)
    space = _Space("latency")
    outbox = Outbox(schema=space.schema)
    relays: list[Relay] = []
    p99: list[float] = []

    async def commit_to_confirm() -> tuple[int, float]:
        conn, relay = space.db, relays[0]
        latencies = relay.stats.confirm_latencies
        first = len(latencies)
        async with asyncio.timeout(WAIT):
            for order in msgs:
                target = relay.stats.published + 1
                async with conn.transaction():
                    await outbox.send(conn, space.queue, order, key="k0")
                while relay.stats.published < target:  # noqa: ASYNC110 - the relay's counter
                    await asyncio.sleep(0.0005)
        samples = latencies[first:]
        await space.purge()
        p99.append(percentile(samples, 99))
        return 1, percentile(samples, 50)

    async def setup() -> None:
        await space.setup()
        # Only the NOTIFY of a commit wakes it in time (the poll is a fallback).
        relays.append(space.relay(poll_interval=5.0, record_latency=True))
        await relays[0].start()
        async with space.db.transaction():
            await outbox.send(space.db, space.queue, msgs[0])
        async with asyncio.timeout(WAIT):
            while relays[0].stats.published < 1:  # noqa: ASYNC110 - untimed warm-up
                await asyncio.sleep(0.01)

    async def teardown() -> None:
        try:
            for relay in relays:
                await relay.close()
        finally:
            await space.teardown()

    ours = Contender("insert -> commit -> NOTIFY -> relay -> confirm", commit_to_confirm)
    return [
        Case(
            f"outbox commit-to-confirm latency p50, 1 in flight ({count} msgs)",
            ours,
            [],
            unit="s",
            lower_is_better=True,
            setup=setup,
            teardown=teardown,
        ),
        Case(
            "outbox commit-to-confirm latency p99 (same runs)",
            Contender(ours.name, commit_to_confirm, rates=p99),
            [],
            unit="s",
            lower_is_better=True,
            rounds=0,
        ),
    ]


def cases(scale: int) -> list[Case]:
    """Every outbox case, `scale` 1 for --quick, 4 for a full run."""
    return [
        *send_cases(300 * scale),
        *relay_cases(2_000 * scale),
        *latency_cases(200 * scale),
    ]
