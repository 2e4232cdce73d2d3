"""The idempotent inbox: a handler's effect applied once per (ce-source, ce-id).

`@inbox.handler` wraps a handler taking `(msg, conn)` into the `(msg)` handler a consumer
takes. Per delivery it opens a transaction, inserts (`ce-source`, `ce-id`) into the inbox
table and, when that entry is new, runs the handler with the transaction's connection; the
entry and the handler's writes commit together. A redelivered message whose effect
committed finds its entry and is settled without running the handler again; one whose
transaction rolled back (the handler raised, the process died) has no entry and runs again.
Two deliveries of one message at once: the second insert waits for the first transaction
and then finds the entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import msgspec
import psycopg

from streamtools._codec import current_metadata
from streamtools._types import Handler, T
from streamtools.errors import ConfigurationError
from streamtools.outbox._relay import default_dsn
from streamtools.outbox._schema import DEFAULT_SCHEMA, quoted

__all__ = ["Inbox", "InboxHandler"]

logger = logging.getLogger("streamtools.outbox")

InboxHandler = Callable[[T, psycopg.AsyncConnection[Any]], Awaitable[msgspec.Struct | None]]
"""A handler with an inbox: the message and the connection of its transaction."""

Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]


class Inbox:
    """Applies each message's effect once, in the handler's own database transaction.

    `connection` is a DSN (default `STREAMTOOLS_OUTBOX_DSN`, else `DATABASE_URL`, else
    libpq's PG* variables: the inbox keeps up to `max_connections` connections of its own),
    or a callable returning an async context manager that yields a connection, such as
    `psycopg_pool.AsyncConnectionPool.connection`. Each entry records the message's `ce-type`
    beside its (`ce-source`, `ce-id`), for operators.
    """

    def __init__(
        self,
        connection: str | Connect | None = None,
        *,
        schema: str = DEFAULT_SCHEMA,
        max_connections: int = 10,
    ) -> None:
        try:
            table = f"{quoted(schema)}.inbox"
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.schema = schema
        self._claim = (
            f"INSERT INTO {table} (source, message_id, type) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING"
        )
        self.skipped = 0
        """Deliveries settled without running the handler: their effect had committed."""
        self.applied = 0
        """Deliveries whose handler ran and whose transaction committed."""
        if connection is None or isinstance(connection, str):
            self._pool: _Pool | None = _Pool(
                default_dsn() if connection is None else connection, max_connections
            )
            self._connect: Connect = self._pool.connection
        else:
            self._pool = None
            self._connect = connection

    def __repr__(self) -> str:
        return f"Inbox(schema={self.schema!r})"

    def handler(self, func: InboxHandler[T]) -> Handler[T]:
        """Wrap `func(msg, conn)` into a consumer handler `(msg)` with the inbox."""
        if not asyncio.iscoroutinefunction(func):
            raise ConfigurationError(
                f"handler {getattr(func, '__qualname__', func)!r} must be an async def"
            )

        @functools.wraps(func)
        async def handle(msg: T) -> msgspec.Struct | None:
            meta = current_metadata()
            async with self._connect() as conn, conn.transaction():
                cursor = await conn.execute(self._claim, (meta.source, meta.id, meta.type))
                if cursor.rowcount == 0:
                    self.skipped += 1
                    logger.info(
                        "message already handled (inbox); settled without the handler",
                        extra={"message_id": meta.id, "source": meta.source},
                    )
                    return None
                reply = await func(msg, conn)
            self.applied += 1
            return reply

        return handle

    async def close(self) -> None:
        """Close the inbox's own connections (none when it was given a pool)."""
        if self._pool is not None:
            await self._pool.close()


class _Pool:
    """The few connections an inbox with a DSN keeps: one per handler running at once."""

    def __init__(self, dsn: str, size: int) -> None:
        self.dsn = dsn
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        self.size = size

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        async with self._slots:
            conn = None
            while self._idle and conn is None:
                candidate = self._idle.pop()
                if not candidate.closed and not candidate.broken:
                    conn = candidate
            if conn is None:
                conn = await psycopg.AsyncConnection.connect(self.dsn)
            try:
                yield conn
            except BaseException:
                # A connection in doubt (cancelled mid-query, lost) is not reused.
                if conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(Exception):
                        await conn.close()
                    raise
                self._idle.append(conn)
                raise
            if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                self._idle.append(conn)
            else:
                await conn.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()
