"""The outbox table and `Outbox.send`: schema management, the caller's transaction, validation;
`Producer.send_encoded`, the core hook the relay publishes with, on every transport."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import msgspec
import psycopg
import pytest

from streamtools import ConfigurationError, Metadata, Queue, ValidationError, current_metadata
from streamtools._codec import codec_for, new_metadata
from streamtools.outbox import Outbox, init_schema, schema_sql
from tests.conformance.conftest import ConfMessage, Harness, harness  # noqa: F401 - fixture
from tests.conformance.test_conformance import make_message
from tests.conftest import unique_name
from tests.outbox.conftest import Order

ROOT = Path(__file__).parents[2]


class Priced(msgspec.Struct, kw_only=True):
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")]
    cents: Annotated[int, msgspec.Meta(ge=0)]


async def rows(db: psycopg.AsyncConnection[Any], schema: str) -> list[tuple[Any, ...]]:
    async with db.transaction():
        cursor = await db.execute(
            "SELECT queue, key, message_id, type, content_type, body, state "
            f'FROM "{schema}".outbox ORDER BY position'.encode()
        )
        return await cursor.fetchall()


async def test_init_is_idempotent_and_shows_its_sql(pg_dsn: str) -> None:
    name = f"st_test_init_{unique_name('x')[-12:]}"
    try:
        for _ in range(2):  # the second run changes nothing and does not fail
            result = subprocess.run(  # noqa: ASYNC221 - the CLI as a user runs it
                [
                    sys.executable,
                    "-m",
                    "streamtools",
                    "outbox",
                    "init",
                    "--schema",
                    name,
                    "--dsn",
                    pg_dsn,
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert result.stdout == schema_sql(name)
            assert f'CREATE TABLE IF NOT EXISTS "{name}".outbox' in result.stdout
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            cursor = await conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY table_name",
                (name,),
            )
            assert [r[0] for r in await cursor.fetchall()] == ["inbox", "outbox"]
    finally:
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'.encode())


def test_init_print_only_touches_nothing() -> None:
    # --print with a DSN that cannot connect: it prints and never connects.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamtools",
            "outbox",
            "init",
            "--schema",
            "billing",
            "--print",
            "--dsn",
            "postgresql://nobody@127.0.0.1:1/none",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == schema_sql("billing")


def test_a_bad_schema_name_is_refused_with_the_rule() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamtools", "outbox", "init", "--schema", 'x"; drop', "--print"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "not an outbox schema name" in result.stderr
    with pytest.raises(ConfigurationError, match="schema name"):
        Outbox(schema="Bad-Name")


async def test_init_schema_twice_in_process(db: psycopg.AsyncConnection[Any], schema: str) -> None:
    await init_schema(db, schema)  # the fixture ran it once already
    assert await rows(db, schema) == []


async def test_send_commits_with_the_transaction(
    db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    outbox = Outbox(schema=schema)
    queue = Queue("shop.priced", Priced)
    async with db.transaction():
        ident = await outbox.send(db, queue, Priced(sku="ABC-123", cents=5), key="o-1")
    [(name, key, message_id, type_, content_type, body, state)] = await rows(db, schema)
    assert (name, key, message_id, type_, content_type, state) == (
        "shop.priced",
        "o-1",
        ident,
        "Priced",
        "application/json",
        "pending",
    )
    assert codec_for(Priced).decode(body) == Priced(sku="ABC-123", cents=5)


async def test_nothing_is_written_when_the_transaction_rolls_back(
    db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    outbox = Outbox(schema=schema)
    with pytest.raises(RuntimeError):  # noqa: PT012 - the transaction is what is tested
        async with db.transaction():
            await outbox.send(db, Queue("shop.priced", Priced), Priced(sku="ABC-123", cents=1))
            raise RuntimeError("the business write failed")
    assert await rows(db, schema) == []


async def test_an_invalid_message_fails_the_callers_transaction(
    db: psycopg.AsyncConnection[Any], schema: str
) -> None:
    outbox = Outbox(schema=schema)
    queue = Queue("shop.priced", Priced)
    with pytest.raises(ValidationError, match="cents"):  # noqa: PT012 - as above
        async with db.transaction():
            await outbox.send(db, queue, Priced(sku="ABC-123", cents=2))
            await outbox.send(db, queue, Priced(sku="ABC-123", cents=-1))  # breaks ge=0
    assert await rows(db, schema) == []  # the valid one went with the transaction


async def test_options_must_be_json(db: psycopg.AsyncConnection[Any], schema: str) -> None:
    outbox = Outbox(schema=schema)
    with pytest.raises(ConfigurationError, match="JSON"):
        async with db.transaction():
            await outbox.send(db, Queue("q.o", Order), Order(key="a", seq=1), headers=object())


async def test_writers_of_one_key_commit_in_position_order(pg_dsn: str, schema: str) -> None:
    # The second writer of a key waits for the first one's commit: positions = commit order.
    outbox = Outbox(schema=schema)
    queue = Queue("q.order", Order)
    first_wrote = asyncio.Event()
    release_first = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            async with conn.transaction():
                await outbox.send(conn, queue, Order(key="k", seq=0), key="k")
                first_wrote.set()
                await release_first.wait()
            order.append("first committed")

    async def second() -> None:
        await first_wrote.wait()
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            async with conn.transaction():
                sending = asyncio.ensure_future(
                    outbox.send(conn, queue, Order(key="k", seq=1), key="k")
                )
                await asyncio.sleep(0.2)  # gives the insert a chance to (wrongly) go through
                order.append("second inserting" if not sending.done() else "second inserted")
                release_first.set()
                await sending
            order.append("second committed")

    async with asyncio.timeout(30):
        await asyncio.gather(first(), second())
    assert order[0] == "second inserting"  # it waited for the first writer's commit
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        cursor = await conn.execute(
            f'SELECT body FROM "{schema}".outbox ORDER BY position'.encode()
        )
        seqs = [codec_for(Order).decode(r[0]).seq for r in await cursor.fetchall()]
    assert seqs == [0, 1]


# --- the core hook: Producer.send_encoded, on every registered transport ----------------


async def test_send_encoded_keeps_the_given_metadata(harness: Harness) -> None:  # noqa: F811
    queue = Queue(unique_name("st-enc"), ConfMessage)
    got: list[tuple[ConfMessage, Metadata]] = []
    arrived = asyncio.Event()
    consumer = harness.consumer(queue)

    @consumer()
    async def on_message(msg: ConfMessage) -> None:
        got.append((msg, current_metadata()))
        arrived.set()

    await consumer.start()
    msg = make_message(7)
    codec = codec_for(ConfMessage)
    meta = new_metadata(codec.type_name, "//writer/outbox", codec.content_type)
    try:
        async with harness.producer(queue, consumer) as producer:
            assert await producer.send_encoded(codec.encode(msg), meta) == meta.id
            async with asyncio.timeout(30):
                await arrived.wait()
    finally:
        await consumer.close()
    [(received, received_meta)] = got
    assert received == msg
    assert received_meta.id == meta.id
    assert received_meta.time == meta.time
    if harness.name != "HTTPHandler":  # HTTP sends the producer's own type and source
        assert (received_meta.type, received_meta.source) == (meta.type, meta.source)
