"""`Outbox.send`: write a message in the caller's transaction, validated and encoded now."""

from __future__ import annotations

from typing import Any, Final

import msgspec
import psycopg

from streamtools._codec import codec_for, default_source, new_metadata
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError
from streamtools.outbox._schema import DEFAULT_SCHEMA, quoted

__all__ = ["Outbox", "init_schema"]

_COLUMNS: Final = "queue, key, message_id, type, source, time, content_type, options, body"


class Outbox:
    """Writes messages to the outbox table of `schema` on the caller's connection.

    `await outbox.send(conn, ORDERS_CREATED, msg, key=...)` inside the caller's transaction:
    the message is validated and encoded at once (a bad message raises there and fails the
    transaction, not the relay), given its message id, and inserted; a relay publishes it
    once the transaction commits, and never if it rolls back.
    """

    def __init__(
        self,
        *,
        schema: str = DEFAULT_SCHEMA,
        source: str | None = None,
        validate: bool = True,
    ) -> None:
        try:
            table = f"{quoted(schema)}.outbox"
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.schema = schema
        self.source = source or default_source()
        self.validate = validate
        self._insert = (
            f"INSERT INTO {table} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)"
        )
        # Writers of one key queue up from their insert to their commit, so the positions
        # of a key's rows are in commit order (the relay publishes them in that order).
        self._insert_keyed = (
            "WITH ordered AS (SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))) "
            f"INSERT INTO {table} ({_COLUMNS}) "
            "SELECT %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s FROM ordered"
        )

    def __repr__(self) -> str:
        return f"Outbox(schema={self.schema!r})"

    async def send(
        self,
        conn: psycopg.AsyncConnection[Any],
        queue: Queue[T],
        msg: T,
        *,
        key: str | None = None,
        **options: object,
    ) -> str:
        """Write `msg` for `queue` in `conn`'s current transaction; return its message id.

        Typed like `Producer.send`: `msg` must be the queue's message type. Raises
        ValidationError (or EncodeError) for a message that breaks its schema, before
        anything is written. Messages of one `key` are published in commit order (on Kafka
        the key is the record key too); `options` are the transport's send options (JSON
        values), passed to the producer by the relay.
        """
        codec = codec_for(queue.message_type)
        body = codec.encode(msg, validate=self.validate)
        meta = new_metadata(codec.type_name, self.source, codec.content_type)
        try:
            stored_options = msgspec.json.encode(options).decode()
        except (TypeError, msgspec.EncodeError) as exc:
            raise ConfigurationError(f"outbox send options must be JSON values: {exc}") from exc
        values = (
            queue.name,
            key,
            meta.id,
            meta.type,
            meta.source,
            meta.time,
            meta.content_type,
            stored_options,
            body,
        )
        if key is None:
            await conn.execute(self._insert, values)
        else:
            await conn.execute(self._insert_keyed, (f"{self.schema}:{key}", *values))
        return meta.id


async def init_schema(conn: psycopg.AsyncConnection[Any], schema: str = DEFAULT_SCHEMA) -> None:
    """Create the outbox and inbox tables in `schema` (idempotent), in one transaction."""
    from streamtools.outbox._schema import schema_sql

    try:
        sql = schema_sql(schema)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    async with conn.transaction():
        await conn.execute(sql.encode())  # several statements: the simple query protocol
