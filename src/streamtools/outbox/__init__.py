"""Transactional outbox and idempotent inbox on PostgreSQL (`pip install 'streamtools[postgres]'`).

- `Outbox.send(conn, queue, msg, key=...)` writes a message in the caller's transaction,
  validated and encoded at that moment with the queue's codec and given its message id;
- `Relay` publishes the committed rows through any registered producer, in commit order per
  key, and marks them sent only once the broker confirmed (`streamtools outbox relay`);
- `Inbox.handler` runs a handler in a transaction that records (`ce-source`, `ce-id`), so a
  redelivered message whose effect committed is settled without running the handler again;
- `schema_sql(schema)` / `init_schema(conn, schema)` / `streamtools outbox init`: the tables.

The driver is psycopg 3 rather than asyncpg: it ships its own type annotations (the SDK is
`mypy --strict` clean, asyncpg has none), takes a service's connection whether it comes from
psycopg_pool, SQLAlchemy's psycopg dialect or Django (one driver for async and sync code),
and has LISTEN/NOTIFY as an async iterator (`AsyncConnection.notifies`). asyncpg is faster
per query, but the outbox adds one insert to a transaction that already writes.
"""

from __future__ import annotations

from streamtools.outbox._inbox import Inbox, InboxHandler
from streamtools.outbox._outbox import Outbox, init_schema
from streamtools.outbox._relay import Relay, RelayStats, default_dsn, refused_for_good
from streamtools.outbox._schema import DEFAULT_SCHEMA, channel, schema_sql

__all__ = [
    "DEFAULT_SCHEMA",
    "Inbox",
    "InboxHandler",
    "Outbox",
    "Relay",
    "RelayStats",
    "channel",
    "default_dsn",
    "init_schema",
    "refused_for_good",
    "schema_sql",
]
