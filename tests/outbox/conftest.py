"""Fixtures of the outbox tests: a PostgreSQL that answers, a schema of the test's own.

PostgreSQL: `STREAMTOOLS_TEST_PG_DSN`, default postgresql://postgres@127.0.0.1:5432/test
(`.ci/run` starts the local cluster when it does not answer). The tests fail, never skip,
without it. Each test gets a unique schema with the outbox and inbox tables, dropped after.
The failure tests add a line to the figures table printed at the end of the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import psycopg
import pytest

from streamtools import KAFKA, RMQ, Limits, Queue
from streamtools.outbox import init_schema
from tests.conftest import unique_name
from tests.support.queues import delete_queues

PG_DSN = os.environ.get("STREAMTOOLS_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")

FIGURES: list[dict[str, object]] = []
"""One row per failure test: what it sent, committed, published, handled, ..."""


class Order(msgspec.Struct, kw_only=True):
    """The message of the outbox tests: a key, a sequence number within it, an amount."""

    key: str
    seq: int
    amount: int = 1


def record(case: str, **figures: object) -> None:
    """Add a row to the figures table (printed at the end of the run) and print it."""
    row: dict[str, object] = {"case": case, **figures}
    FIGURES.append(row)
    print("outbox figures:", row)


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """A PostgreSQL DSN that answers; fails the test (no skip) when none does."""
    try:
        with psycopg.connect(PG_DSN, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.fail(
            f"PostgreSQL does not answer at {PG_DSN}: {exc}; start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "(or set STREAMTOOLS_TEST_PG_DSN)",
            pytrace=False,
        )
    return PG_DSN


@pytest.fixture
async def schema(pg_dsn: str) -> AsyncIterator[str]:
    """A fresh schema with the outbox and inbox tables, dropped after the test."""
    name = f"st_test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        await init_schema(conn, name)
        await conn.commit()
    yield name
    async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE'.encode())


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection for the test's own queries (not autocommit: use transactions)."""
    async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
        yield conn


TRANSPORTS = [RMQ, KAFKA]


@pytest.fixture(params=TRANSPORTS)
async def broker(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[str, dict[str, object], dict[str, object]]]:
    """(transport, producer settings, consumer settings) on a real broker."""
    name: str = request.param
    if name == RMQ:
        url: str = request.getfixturevalue("rabbitmq_url")
        # one at a time: broker order
        yield name, {"url": url}, {"url": url, "limits": Limits(max_in_flight=1)}
    else:
        servers: str = request.getfixturevalue("kafka_bootstrap")
        yield (
            name,
            {"bootstrap_servers": servers},
            {
                "bootstrap_servers": servers,
                "session_timeout": 6,
                "shutdown_timeout": 10,
            },
        )


@pytest.fixture
async def queue(
    request: pytest.FixtureRequest, broker: tuple[str, dict[str, object], dict[str, object]]
) -> AsyncIterator[Queue[Order]]:
    q = Queue(unique_name("st-outbox"), Order)
    yield q
    transport, producer_settings, _ = broker
    if transport == RMQ:
        await delete_queues(str(producer_settings["url"]), [q.name])
    else:
        from tests.transports.test_kafka import delete_topics

        await delete_topics(str(producer_settings["bootstrap_servers"]), [q.name])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    columns: list[str] = []
    for row in FIGURES:
        columns += [k for k in row if k not in columns]
    terminalreporter.section("outbox failure figures")
    terminalreporter.write_line(" | ".join(columns))
    for row in FIGURES:
        terminalreporter.write_line(" | ".join(str(row.get(c, "")) for c in columns))
