"""The relay against real brokers: commit order per key, ids kept, NOTIFY wake-up, parking,
retention, two relays at once, a killed database connection, inside ConsumerRunner."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg

from streamtools import KAFKA, MEMORY, ConsumerRunner, Queue
from streamtools.outbox import Outbox, Relay
from tests.conftest import unique_name
from tests.outbox.conftest import Order, record
from tests.outbox.support import WAIT, Sink, outbox_states, write_orders


def relay_for(
    broker: tuple[str, dict[str, object], dict[str, object]], dsn: str, schema: str, **kw: Any
) -> Relay:
    transport, producer_settings, _ = broker
    return Relay(transport, dsn=dsn, schema=schema, producer_settings=producer_settings, **kw)


@contextlib.asynccontextmanager
async def running(relay: Relay) -> AsyncIterator[Relay]:
    await relay.start()
    try:
        yield relay
    finally:
        async with asyncio.timeout(WAIT):
            await relay.close()


async def until(condition: Callable[[], Any], what: str) -> None:
    async with asyncio.timeout(WAIT):
        while not await condition():  # noqa: ASYNC110 - database state: no event to await
            await asyncio.sleep(0.05)
    assert await condition(), what


async def test_committed_rows_arrive_in_key_order_with_their_ids(
    pg_dsn: str, schema: str, broker: Any, queue: Queue[Order]
) -> None:
    transport, _, consumer_settings = broker
    sink = await Sink(transport, queue, **consumer_settings).start()
    ids = await write_orders(pg_dsn, schema, queue, keys=5, per_key=40)
    # poll_interval of an hour: only the NOTIFY of the commits can wake the relay in time.
    async with running(
        relay_for(broker, pg_dsn, schema, batch_size=37, poll_interval=3600)
    ) as relay:
        await sink.wait_for(set(ids))
        await until(lambda: _all_sent(pg_dsn, schema, len(ids)), "every row marked sent")
    await sink.close()
    sink.assert_key_order()
    assert sink.unique == set(ids)
    assert sink.sources == {Outbox(schema=schema).source}
    assert relay.stats.published == len(ids)
    record(
        f"steady state ({transport})",
        committed=len(ids),
        published=relay.stats.published,
        received=len(sink.received),
        lost=len(set(ids) - sink.unique),
        duplicates=sink.duplicates,
    )


async def _all_sent(dsn: str, schema: str, count: int) -> bool:
    return (await outbox_states(dsn, schema)).get("sent", 0) == count


async def test_two_relays_share_the_work_without_doing_it_twice(
    pg_dsn: str, schema: str, broker: Any, queue: Queue[Order]
) -> None:
    transport, _, consumer_settings = broker
    sink = await Sink(transport, queue, **consumer_settings).start()
    ids = await write_orders(pg_dsn, schema, queue, keys=8, per_key=50)
    one = relay_for(broker, pg_dsn, schema, batch_size=20, poll_interval=0.2)
    two = relay_for(broker, pg_dsn, schema, batch_size=20, poll_interval=0.2)
    async with running(one), running(two):
        await sink.wait_for(set(ids))
        await until(lambda: _all_sent(pg_dsn, schema, len(ids)), "every row marked sent")
    await sink.close()
    sink.assert_key_order()
    assert one.stats.published + two.stats.published == len(ids)
    assert sink.duplicates == 0  # no row was published by both
    record(
        f"two relays at once ({transport})",
        committed=len(ids),
        published=len(sink.unique),
        split=f"{one.stats.published}/{two.stats.published}",
        received=len(sink.received),
        lost=len(set(ids) - sink.unique),
        duplicates=sink.duplicates,
    )


async def test_a_killed_database_connection_loses_nothing(
    pg_dsn: str, schema: str, broker: Any, queue: Queue[Order]
) -> None:
    transport, _, consumer_settings = broker
    sink = await Sink(transport, queue, **consumer_settings).start()
    ids = await write_orders(pg_dsn, schema, queue, keys=4, per_key=150)
    relay = relay_for(broker, pg_dsn, schema, batch_size=25, poll_interval=0.2, reconnect_delay=0.1)
    kills = 0
    async with running(relay):
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as admin:
            while len(sink.unique) < len(ids) and kills < 5:
                # every backend of this relay (its batch connection and its listener)
                cursor = await admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                    "AND (query LIKE %s OR query LIKE 'LISTEN%%')",
                    (f'%"{schema}".outbox%',),
                )
                row = await cursor.fetchone()
                kills += 1 if row and row[0] else 0
                await asyncio.sleep(0.05)
        await sink.wait_for(set(ids))
        await until(lambda: _all_sent(pg_dsn, schema, len(ids)), "every row marked sent")
    await sink.close()
    assert kills > 0
    assert relay.stats.db_errors > 0
    sink.assert_key_order()
    assert sink.unique == set(ids)
    record(
        f"pg_terminate_backend x{kills} ({transport})",
        committed=len(ids),
        published=len(sink.unique),
        received=len(sink.received),
        lost=len(set(ids) - sink.unique),
        duplicates=sink.duplicates,
        confirmed_unmarked=relay.stats.lost_marks,
    )


async def test_a_refused_message_is_parked_and_its_key_goes_on(
    pg_dsn: str, schema: str, kafka_bootstrap: str
) -> None:
    # Kafka refuses a record over its size limit (1 MiB): no retry can change that.
    queue = Queue(unique_name("st-outbox-park"), Order)
    settings: dict[str, object] = {"bootstrap_servers": kafka_bootstrap}
    broker = (KAFKA, settings, settings)
    sink = await Sink(KAFKA, queue, **broker[2]).start()
    outbox = Outbox(schema=schema)
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn, conn.transaction():
        before = await outbox.send(conn, queue, Order(key="k", seq=0), key="k")
        huge = await outbox.send(conn, queue, Order(key="k" * 2_000_000, seq=1), key="k")
        after = await outbox.send(conn, queue, Order(key="k", seq=2), key="k")
    try:
        async with running(relay_for(broker, pg_dsn, schema, poll_interval=0.2)) as relay:
            await sink.wait_for({before, after})
            await until(lambda: _all_sent(pg_dsn, schema, 2), "the others marked sent")
    finally:
        await sink.close()
        from tests.transports.test_kafka import delete_topics

        await delete_topics(kafka_bootstrap, [queue.name])
    assert huge not in sink.unique
    assert relay.stats.parked == 1
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cursor = await conn.execute(
            f'SELECT message_id, parked_reason FROM "{schema}".outbox WHERE state = %s'.encode(),
            ("parked",),
        )
        [(parked_id, reason)] = await cursor.fetchall()
    assert parked_id == huge
    assert "MessageSizeTooLarge" in reason


async def test_sent_rows_are_cleaned_up_after_the_retention(pg_dsn: str, schema: str) -> None:
    queue = Queue(unique_name("st-outbox-ret"), Order)
    sink = await Sink(MEMORY, queue).start()
    ids = await write_orders(pg_dsn, schema, queue, keys=2, per_key=5)
    kept = Relay(MEMORY, dsn=pg_dsn, schema=schema, retention=3600, poll_interval=0.2)
    async with running(kept):
        await sink.wait_for(set(ids))
        await until(lambda: _all_sent(pg_dsn, schema, len(ids)), "every row marked sent")
        assert await kept.cleanup() == (0, 0)  # within the retention: kept
    gone = Relay(MEMORY, dsn=pg_dsn, schema=schema, retention=0, inbox_retention=0)
    try:
        assert (await gone.cleanup())[0] == len(ids)
    finally:
        await gone.close()
    await sink.close()
    assert await outbox_states(pg_dsn, schema) == {}


async def test_cleanup_called_while_a_batch_is_in_progress_waits_for_it(
    pg_dsn: str, schema: str
) -> None:
    # The relay has one database connection: a cleanup() called from outside while the
    # relay's own batch holds a transaction on it must wait for that batch, not nest a
    # transaction in it (psycopg: "transaction commit at the wrong nesting level").
    queue = Queue(unique_name("st-outbox-cc"), Order)
    sink = await Sink(MEMORY, queue).start()
    ids = await write_orders(pg_dsn, schema, queue, keys=4, per_key=5)
    relay = Relay(MEMORY, dsn=pg_dsn, schema=schema, retention=3600, batch_size=5)
    try:
        for _ in range(4):
            taken, removed = await asyncio.gather(relay.relay_once(), relay.cleanup())
            assert taken == 5
            assert removed == (0, 0)
        await sink.wait_for(set(ids))
        assert relay.stats.db_errors == 0
        assert await outbox_states(pg_dsn, schema) == {"sent": len(ids)}
    finally:
        await relay.close()
        await sink.close()


async def test_the_relay_runs_inside_consumer_runner(pg_dsn: str, schema: str) -> None:
    queue = Queue(unique_name("st-outbox-runner"), Order)
    sink = Sink(MEMORY, queue)
    runner = ConsumerRunner([sink.consumer], metrics=False, uvloop=False)
    relay = Relay(MEMORY, dsn=pg_dsn, schema=schema, poll_interval=3600)
    relay.attach(runner)
    serving = asyncio.ensure_future(runner.serve())
    try:
        ids = await write_orders(pg_dsn, schema, queue, keys=3, per_key=4)
        await sink.wait_for(set(ids))
    finally:
        runner.stop()
        async with asyncio.timeout(WAIT):
            await serving
    assert relay._task is None  # closed by the runner's shutdown
    assert relay.stats.published == len(ids)
