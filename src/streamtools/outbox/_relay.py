"""The relay: publishes committed outbox rows through a registered producer, then marks them.

One batch is one PostgreSQL transaction:

1. select up to `batch_size` pending, due rows in `position` order, `FOR UPDATE SKIP LOCKED`,
   taking a transaction-scoped advisory lock per key (`pg_try_advisory_xact_lock`): a key
   another relay is working on is skipped whole, so several relays share the work, never a
   row and never a key at once; a key whose earlier row waits for a retry is held back;
2. publish: the rows of one key one after the other (each confirmed before the next), the
   keys concurrently, each with the message id, type, source and time it was written with
   (`Producer.send_encoded`);
3. mark what the broker confirmed `sent`, what it refused for good `parked` (with the
   reason), what failed otherwise for a retry after a backoff (`not_before`); commit.

A crash or a lost database connection anywhere before the commit leaves the rows pending
(the transaction rolls back, the locks go with it): they are published again, with the same
ids, by whichever relay comes next. That is at-least-once; an inbox (`Inbox.handler`)
absorbs the duplicates on the consumer side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import psycopg

from streamtools._base import Producer
from streamtools._codec import Metadata
from streamtools._delivery import backoff_delay
from streamtools._registry import KAFKA, PRODUCERS
from streamtools._settings import integer
from streamtools._types import Queue
from streamtools.errors import (
    CodecError,
    ConfigurationError,
    DeliveryError,
    UnsupportedError,
)
from streamtools.outbox._schema import DEFAULT_SCHEMA, channel, quoted

__all__ = ["Relay", "RelayStats", "default_dsn", "refused_for_good"]

logger = logging.getLogger("streamtools.outbox")
logger.addHandler(logging.NullHandler())

_MAX_ERROR: Final = 1000
# Broker answers that no retry can change (aiokafka's names; the transport chains them).
_REFUSALS: Final = frozenset(
    {
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "RecordListTooLargeError",
        "InvalidTopicError",
        "TopicAuthorizationFailedError",
        "PolicyViolationError",
        "CorruptRecordException",
        "InvalidMessageError",
        "UnsupportedForMessageFormatError",
    }
)


def default_dsn() -> str:
    """`STREAMTOOLS_OUTBOX_DSN`, else `DATABASE_URL`, else "" (libpq's PG* variables)."""
    return os.environ.get("STREAMTOOLS_OUTBOX_DSN") or os.environ.get("DATABASE_URL") or ""


def refused_for_good(error: BaseException) -> bool:
    """Whether a failed publish can never succeed as it is (the relay parks it).

    A wrong setting or send option, a body the codec refuses, an operation the transport
    lacks, an HTTP 4xx answer (but 408 and 429), or a broker refusal such as Kafka's
    MessageSizeTooLarge. Anything else (a lost connection, a timeout, a nack) is retried.
    """
    if isinstance(error, ConfigurationError | CodecError | UnsupportedError):
        return True
    if isinstance(error, DeliveryError):
        return 400 <= error.status < 500 and error.status not in (408, 429)
    cause = error.__cause__
    while cause is not None:
        if type(cause).__name__ in _REFUSALS:
            return True
        cause = cause.__cause__
    return False


@dataclass
class RelayStats:
    """What a relay did since it started (counted after each batch's commit)."""

    batches: int = 0
    published: int = 0
    """Rows the broker confirmed and that are marked `sent`."""
    parked: int = 0
    retried: int = 0
    """Failed publishes put back for a retry."""
    lost_marks: int = 0
    """Rows the broker confirmed whose `sent` mark was lost (the database went away): they
    are published again, with the same id."""
    db_errors: int = 0
    confirm_latencies: list[float] = field(default_factory=list)
    """Seconds from each row's insert to its confirm (kept only with `record_latency`)."""


class _Row(msgspec.Struct, frozen=True):
    position: int
    queue: str
    key: str | None
    message_id: str
    type: str
    source: str
    time: str
    content_type: str
    options: dict[str, Any]
    body: bytes
    attempts: int
    age: float


class Relay:
    """Publishes the committed rows of `schema`'s outbox through transport `transport`.

    Runs alone (`await relay.run()`, or `streamtools outbox relay`) or beside consumers
    (`relay.attach(runner)` on a ConsumerRunner). It wakes on the outbox trigger's NOTIFY
    and polls every `poll_interval` seconds besides (a lost notification or listener costs
    at most that delay). Several relays may run on one outbox at once.

    `producer_settings` go to each producer (`url=`, `bootstrap_servers=`, ...);
    `contracts` are the queues' contracts (else each queue's registered contract, else raw
    JSON); the body was encoded at write time and is not re-encoded. On Kafka a row's key is
    the record key (`pass_key`: None means on Kafka only).

    A row the broker refuses for good (`refused_for_good`) is parked with its reason, as is
    a row that failed `max_attempts` times (None: transient failures are retried without
    end, with backoff from `retry_delay` up to `max_retry_delay`). Sent rows are deleted
    `retention` seconds after their confirm, inbox entries `inbox_retention` seconds after
    they were handled (None keeps them), every `cleanup_interval` seconds.
    """

    def __init__(
        self,
        transport: str,
        *,
        dsn: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        producer_settings: Mapping[str, object] | None = None,
        contracts: Iterable[Queue[Any]] = (),
        batch_size: int = 200,
        poll_interval: float = 1.0,
        max_attempts: int | None = None,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        retention: float | None = 86_400.0,
        inbox_retention: float | None = 7 * 86_400.0,
        cleanup_interval: float = 60.0,
        pass_key: bool | None = None,
        reconnect_delay: float = 1.0,
        refused: Callable[[BaseException], bool] = refused_for_good,
        record_latency: bool = False,
    ) -> None:
        self.producer_class = PRODUCERS[transport]  # an unknown transport fails here
        self.transport = transport
        self.dsn = default_dsn() if dsn is None else dsn
        try:
            self._table = f"{quoted(schema)}.outbox"
            self._inbox = f"{quoted(schema)}.inbox"
            self._channel = channel(schema)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.schema = schema
        self.producer_settings = dict(producer_settings or {})
        self.contracts = {c.name: c for c in contracts}
        self.batch_size = integer("Relay", "batch_size", batch_size, minimum=1)
        if max_attempts is not None:
            integer("Relay", "max_attempts", max_attempts, minimum=1)
        self.max_attempts = max_attempts
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.retention = retention
        self.inbox_retention = inbox_retention
        self.cleanup_interval = cleanup_interval
        self.reconnect_delay = reconnect_delay
        self.refused = refused
        self.record_latency = record_latency
        if pass_key is None:
            pass_key = getattr(self.producer_class, "transport", "") == KAFKA
        self.pass_key = pass_key
        self.stats = RelayStats()
        self._producers: dict[tuple[str, str], Producer[Any]] = {}
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # One transaction at a time on that connection: a cleanup() called from outside
        # waits for the batch in progress instead of nesting in its transaction.
        self._conn_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_cleanup = 0.0
        # Relays of one schema lock keys in a space of their own (writers use another).
        self._lock_class = _lock_class(schema)
        # Keys first, each tried once, in the order of their first pending row, until the
        # keys taken cover a batch: a key another relay holds is skipped for the whole batch
        # (trying it again row by row could take it halfway, once that relay is done), and
        # a second relay takes the next keys.
        self._head_keys = (
            "SELECT key, count(*) FROM (SELECT key, position FROM "
            f"{self._table} WHERE state = 'pending' AND not_before <= now() "
            "ORDER BY position LIMIT %s) head GROUP BY key ORDER BY min(position)"
        )
        self._try_keys = (
            "SELECT k FROM unnest(%s::text[]) k WHERE pg_try_advisory_xact_lock(%s, hashtext(k))"
        )
        # Then the rows, in a snapshot taken after the locks: what a relay that held one of
        # these keys committed is seen. A key whose earlier row waits for a retry waits.
        self._select = (
            "SELECT o.position, o.queue, o.key, o.message_id, o.type, o.source, o.time, "
            "o.content_type, o.options, o.body, o.attempts, "
            "extract(epoch FROM clock_timestamp() - o.created_at)::float8 "
            f"FROM {self._table} o "
            "WHERE o.state = 'pending' AND o.not_before <= now() "
            "AND (o.key IS NULL OR (o.key = ANY(%s) AND NOT EXISTS ("
            f"SELECT 1 FROM {self._table} e WHERE e.state = 'pending' AND e.key = o.key "
            "AND e.position < o.position AND e.not_before > now()))) "
            "ORDER BY o.position LIMIT %s FOR UPDATE OF o SKIP LOCKED"
        )

    def __repr__(self) -> str:
        return f"Relay({self.transport!r}, schema={self.schema!r})"

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        """Relay until `stop()` (or cancellation); reconnects to the database by itself."""
        listener = asyncio.get_running_loop().create_task(self._listen())
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    done = await self.relay_once()
                    await self._maybe_cleanup()
                except psycopg.Error as exc:
                    self.stats.db_errors += 1
                    logger.warning("outbox relay: database error, reconnecting: %s", exc)
                    await self._drop_connection()
                    await self._pause(self.reconnect_delay)
                    continue
                if done < self.batch_size:
                    await self._pause(self.poll_interval)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._release()

    async def start(self) -> None:
        """Run in a background task (what `attach` registers as the runner's start)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    def stop(self) -> None:
        """Ask `run()` to return once the batch in progress is committed."""
        self._stopping.set()
        self._wake.set()

    async def close(self) -> None:
        """Stop and wait for the background task (the batch in progress finishes)."""
        self.stop()
        task, self._task = self._task, None
        if task is not None:
            await task  # run() releases the connections and producers as it returns
        else:
            await self._release()

    def attach(self, runner: Any) -> None:
        """Run beside a ConsumerRunner's consumers: started before them, closed after them
        (handlers may still write to the outbox until they stopped)."""
        runner.on_startup.append(self.start)
        runner.on_shutdown.append(self.close)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _listen(self) -> None:
        # LISTEN on a connection of its own; the poll covers the gaps while it reconnects.
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
                try:
                    await conn.execute(f'LISTEN "{self._channel}"'.encode())
                    self._wake.set()  # rows may have come while no one listened
                    async for _ in conn.notifies():
                        self._wake.set()
                finally:
                    await conn.close()
            except psycopg.Error as exc:
                logger.info("outbox relay: listener lost (%s); polling meanwhile", exc)
            await asyncio.sleep(self.reconnect_delay)

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = await psycopg.AsyncConnection.connect(self.dsn)
        return conn

    async def _drop_connection(self) -> None:
        async with self._conn_lock:  # not under a cleanup() called from outside
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _release(self) -> None:
        await self._drop_connection()
        producers = list(self._producers.values())
        self._producers.clear()
        await asyncio.gather(*(p.close() for p in producers), return_exceptions=True)

    # --- one batch ---------------------------------------------------------------------

    async def relay_once(self) -> int:
        """Publish one batch and commit its marks; return how many rows it took."""
        async with self._conn_lock:
            return await self._relay_batch()

    async def _relay_batch(self) -> int:
        conn = await self._connection()
        async with conn.transaction():
            keys = await self._take_keys(conn)
            cursor = await conn.execute(self._select, (keys, self.batch_size))
            rows = [_Row(*record) for record in await cursor.fetchall()]
            if not rows:
                return 0
            outcomes = await self._publish(rows)
            sent = [row.position for row, (state, _) in outcomes if state == "sent"]
            parked = [(text, row.position) for row, (state, text) in outcomes if state == "parked"]
            retry = [
                (
                    text,
                    backoff_delay(row.attempts + 1, self.retry_delay, self.max_retry_delay),
                    row.position,
                )
                for row, (state, text) in outcomes
                if state == "retry"
            ]
            try:
                if sent:
                    await conn.execute(
                        f"UPDATE {self._table} SET state = 'sent', sent_at = clock_timestamp(), "
                        "attempts = attempts + 1 WHERE position = ANY(%s)",
                        (sent,),
                    )
                async with conn.cursor() as cur:
                    if parked:
                        await cur.executemany(
                            f"UPDATE {self._table} SET state = 'parked', parked_reason = %s, "
                            "attempts = attempts + 1 WHERE position = %s",
                            parked,
                        )
                    if retry:
                        await cur.executemany(
                            f"UPDATE {self._table} SET attempts = attempts + 1, last_error = %s, "
                            "not_before = clock_timestamp() + %s * interval '1 second' "
                            "WHERE position = %s",
                            retry,
                        )
            except psycopg.Error:
                self.stats.lost_marks += len(sent)
                raise
        # committed
        stats = self.stats
        stats.batches += 1
        stats.published += len(sent)
        stats.parked += len(parked)
        stats.retried += len(retry)
        return len(rows)

    async def _take_keys(self, conn: psycopg.AsyncConnection[Any]) -> list[str]:
        cursor = await conn.execute(self._head_keys, (self.batch_size * 4,))
        heads: list[tuple[str | None, int]] = await cursor.fetchall()
        covered = sum(count for key, count in heads if key is None)
        keyed = [(key, count) for key, count in heads if key is not None]
        taken: list[str] = []
        index = 0
        while covered < self.batch_size and index < len(keyed):
            # just the keys that would fill the batch; more only if some are held elsewhere
            wanted: list[tuple[str, int]] = []
            filling = covered
            while index < len(keyed) and filling < self.batch_size:
                wanted.append(keyed[index])
                filling += keyed[index][1]
                index += 1
            cursor = await conn.execute(
                self._try_keys, ([key for key, _ in wanted], self._lock_class)
            )
            got = {record[0] for record in await cursor.fetchall()}
            for key, count in wanted:
                if key in got:
                    taken.append(key)
                    covered += count
        return taken

    async def _publish(self, rows: list[_Row]) -> list[tuple[_Row, tuple[str, str]]]:
        # One key in order, each confirmed before the next; keys (and keyless rows) at once.
        groups: dict[object, list[_Row]] = {}
        for row in rows:
            groups.setdefault(row.key if row.key is not None else ("", row.position), []).append(
                row
            )
        results = await asyncio.gather(*(self._publish_key(group) for group in groups.values()))
        return [item for group in results for item in group]

    async def _publish_key(self, rows: list[_Row]) -> list[tuple[_Row, tuple[str, str]]]:
        outcomes: list[tuple[_Row, tuple[str, str]]] = []
        started = time.monotonic()
        for row in rows:
            try:
                await self._send(row)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                text = f"{type(exc).__name__}: {exc}"[:_MAX_ERROR]
                if self.refused(exc):
                    logger.error("outbox relay: message %s parked: %s", row.message_id, text)
                    outcomes.append((row, ("parked", text)))
                    continue  # out of the stream: the key's next rows go on
                if self.max_attempts is not None and row.attempts + 1 >= self.max_attempts:
                    reason = f"gave up after {row.attempts + 1} attempts: {text}"[:_MAX_ERROR]
                    logger.error("outbox relay: message %s parked: %s", row.message_id, reason)
                    outcomes.append((row, ("parked", reason)))
                    continue
                logger.warning(
                    "outbox relay: message %s not sent, retried: %s", row.message_id, text
                )
                outcomes.append((row, ("retry", text)))
                break  # the key's later rows wait for this one: left pending, untouched
            else:
                if self.record_latency:
                    self.stats.confirm_latencies.append(row.age + time.monotonic() - started)
                outcomes.append((row, ("sent", "")))
        return outcomes

    async def _send(self, row: _Row) -> None:
        producer = self._producers.get((row.queue, row.source))
        if producer is None:
            queue: Queue[Any] | str = self.contracts.get(row.queue, row.queue)
            producer = self.producer_class(queue, source=row.source, **self.producer_settings)
            self._producers[(row.queue, row.source)] = producer
        options = dict(row.options)
        if self.pass_key and row.key is not None:
            options.setdefault("key", row.key)
        meta = Metadata(
            id=row.message_id,
            type=row.type,
            source=row.source,
            time=row.time,
            content_type=row.content_type,
        )
        await producer.send_encoded(row.body, meta, **options)

    # --- retention ---------------------------------------------------------------------

    async def _maybe_cleanup(self) -> None:
        now = time.monotonic()
        if now - self._last_cleanup < self.cleanup_interval:
            return
        self._last_cleanup = now
        await self.cleanup()

    async def cleanup(self) -> tuple[int, int]:
        """Delete sent rows older than `retention` and inbox entries older than
        `inbox_retention`; return how many of each."""
        async with self._conn_lock:
            return await self._cleanup()

    async def _cleanup(self) -> tuple[int, int]:
        conn = await self._connection()
        removed = [0, 0]
        for index, (table, column, keep, extra) in enumerate(
            (
                (self._table, "sent_at", self.retention, "AND state = 'sent'"),
                (self._inbox, "handled_at", self.inbox_retention, ""),
            )
        ):
            if keep is None:
                continue
            async with conn.transaction():
                cursor = await conn.execute(
                    f"DELETE FROM {table} WHERE {column} < clock_timestamp() - %s * interval "
                    f"'1 second' {extra}",
                    (keep,),
                )
                removed[index] = cursor.rowcount
        return removed[0], removed[1]


def _lock_class(schema: str) -> int:
    # A stable int4 per schema (not Python's salted hash): relays of one schema agree.
    return zlib.crc32(schema.encode()) & 0x7FFFFFFF
