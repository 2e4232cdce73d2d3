"""Failure tests with figures: the relay SIGKILLed mid-batch, and a consumer with an inbox
SIGKILLed after its effect committed but before the message was settled; on RabbitMQ and
Kafka. (The killed database connections and two relays at once are in test_relay.py.)"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from streamtools import RMQ, Limits, Queue
from streamtools.outbox import Inbox, Relay
from tests.outbox.children import apply_order
from tests.outbox.conftest import Order, record
from tests.outbox.support import WAIT, Sink, outbox_states, write_orders
from tests.outbox.test_relay import running, until

ROOT = Path(__file__).parents[2]


def journal_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def run_until_paused_then_kill(argv: list[str], journal: Path, log: Path) -> list[str]:
    """Start a child (tests.outbox.children), SIGKILL it once it journalled `paused`, reap
    it; return its journal. Polls the journal (another process writes it), bounded."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.outbox.children", *argv,
            cwd=ROOT, stdout=out, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
    paused = False
    try:
        async with asyncio.timeout(WAIT):
            while proc.returncode is None and not paused:
                paused = "paused" in await asyncio.to_thread(journal_lines, journal)
                if not paused:
                    await asyncio.sleep(0.02)
    except TimeoutError:
        pass
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            await proc.wait()
    if not paused:
        output = await asyncio.to_thread(log.read_text)
        pytest.fail(f"child (exit {proc.returncode}) never paused:\n{output}")
    return journal_lines(journal)


async def test_relay_sigkilled_mid_batch_loses_nothing(
    pg_dsn: str, schema: str, broker: Any, queue: Queue[Order], tmp_path: Path
) -> None:
    transport, producer_settings, consumer_settings = broker
    sink = await Sink(transport, queue, **consumer_settings).start()
    ids = await write_orders(pg_dsn, schema, queue, keys=6, per_key=50)
    journal = tmp_path / "relay.journal"
    lines = await run_until_paused_then_kill(
        ["relay", pg_dsn, schema, transport, msgspec.json.encode(producer_settings).decode(),
         str(journal), "--pause-after", "120"],
        journal, tmp_path / "relay.log",
    )  # fmt: skip
    confirmed = {line.split()[1] for line in lines if line.startswith("confirmed ")}
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cursor = await conn.execute(
            f"SELECT message_id FROM \"{schema}\".outbox WHERE state = 'pending'".encode()
        )
        pending = {r[0] for r in await cursor.fetchall()}
    confirmed_unmarked = confirmed & pending
    assert confirmed_unmarked  # killed mid-batch: confirmed by the broker, never marked
    # A new relay finishes the work; the confirmed-but-unmarked rows go out again, same ids.
    relay = Relay(transport, dsn=pg_dsn, schema=schema, producer_settings=producer_settings)
    async with running(relay):
        await sink.wait_for(set(ids))
        await until(lambda: _count_sent(pg_dsn, schema, len(ids)), "every row marked sent at last")
    await sink.close()
    sink.assert_key_order()
    lost = set(ids) - sink.unique
    assert not lost
    assert sink.duplicates == len(confirmed_unmarked)  # exactly the republished rows
    record(
        f"relay SIGKILLed mid-batch ({transport})",
        committed=len(ids), published=len(sink.unique), received=len(sink.received),
        lost=len(lost), duplicates=sink.duplicates, confirmed_unmarked=len(confirmed_unmarked),
    )  # fmt: skip


async def _count_sent(dsn: str, schema: str, count: int) -> bool:
    return (await outbox_states(dsn, schema)).get("sent", 0) == count


async def test_inbox_absorbs_the_redelivery_after_a_consumer_crash(
    pg_dsn: str, schema: str, broker: Any, queue: Queue[Order], tmp_path: Path
) -> None:
    transport, producer_settings, consumer_settings = broker
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(
            f'CREATE TABLE "{schema}".effects (message_id text, key text, seq int)'.encode()
        )
    child_settings = dict(consumer_settings)
    if transport == RMQ:
        child_settings["limits"] = Limits(
            max_in_flight=20
        )  # several handled, unsettled, at the kill
    ids = await write_orders(pg_dsn, schema, queue, keys=4, per_key=50)
    relay = Relay(transport, dsn=pg_dsn, schema=schema, producer_settings=producer_settings)
    journal = tmp_path / "inbox.journal"
    async with running(relay):
        lines = await run_until_paused_then_kill(
            ["inbox", pg_dsn, schema, transport, msgspec.json.encode(child_settings).decode(),
             str(journal), queue.name, "--pause-after", "60"],
            journal, tmp_path / "inbox.log",
        )  # fmt: skip
        handled_by_child = sum(1 for line in lines if line.startswith("done "))
        # A new consumer with the same inbox: the redelivered messages whose effect
        # committed are settled without the handler; the rest are applied.
        inbox = Inbox(pg_dsn, schema=schema)
        applied: list[str] = []

        async def effect(order: Order, conn: psycopg.AsyncConnection[Any]) -> None:
            await apply_order(schema, order, conn)

        handle = inbox.handler(effect)
        sink = Sink(transport, queue, **consumer_settings)
        collect = sink.consumer.routes[0].handler
        sink.consumer.routes.clear()

        @sink.consumer()
        async def on_order(order: Order) -> None:
            await handle(order)
            applied.append(order.key)
            await collect(order)

        await sink.start()
        try:
            await until(lambda: _effects(pg_dsn, schema, len(ids)), "every effect applied")
            await until(lambda: _true(inbox.skipped > 0), "the redelivery absorbed")
        finally:
            await sink.close()
            await inbox.close()
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cursor = await conn.execute(
            f'SELECT count(*), count(DISTINCT message_id) FROM "{schema}".effects'.encode()
        )
        row = await cursor.fetchone()
        assert row is not None
        effects, distinct = row
    assert (effects, distinct) == (len(ids), len(ids))  # each effect once, none lost
    assert inbox.skipped >= 1  # at least the message the child never settled
    record(
        f"inbox consumer SIGKILLed ({transport})",
        committed=len(ids), handled=handled_by_child + inbox.applied + inbox.skipped,
        effects_applied=effects, lost=len(ids) - distinct,
        duplicates=inbox.skipped, absorbed_by_inbox=inbox.skipped,
    )  # fmt: skip


async def _effects(dsn: str, schema: str, count: int) -> bool:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(f'SELECT count(*) FROM "{schema}".effects'.encode())
        row = await cursor.fetchone()
        return row is not None and row[0] >= count


async def _true(value: bool) -> bool:
    return value
