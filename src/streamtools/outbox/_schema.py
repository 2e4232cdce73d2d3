"""The outbox and inbox tables: the DDL `streamtools outbox init` runs (and prints).

Everything lives in one PostgreSQL schema of the user's choice (`streamtools` by default):

- `outbox`: one row per message written by `Outbox.send`, in the writer's transaction.
  `position` is the write order; within one `key` it is the commit order too, because
  `Outbox.send` takes a transaction-scoped advisory lock on the key before inserting.
  `state` is `pending`, then `sent` (the broker confirmed it) or `parked` (refused for good,
  with `parked_reason`). `not_before` delays a retry after a transient failure.
- `inbox`: one row per handled message, (`source`, `message_id`) = (`ce-source`, `ce-id`),
  inserted in the handler's own transaction.
- a statement trigger on `outbox` that sends `NOTIFY "<schema>.outbox"` (delivered by
  PostgreSQL at commit, so a relay wakes only for committed rows).

The DDL is idempotent (`IF NOT EXISTS`, `CREATE OR REPLACE`): running it again changes
nothing, so it doubles as a migration step. PostgreSQL 11 or newer.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["DEFAULT_SCHEMA", "channel", "check_schema", "quoted", "schema_sql"]

DEFAULT_SCHEMA: Final = "streamtools"
_SCHEMA_RE: Final = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")


def check_schema(name: object) -> str:
    """`name` if it is a usable schema name, else ValueError saying what one is."""
    if not isinstance(name, str) or not _SCHEMA_RE.match(name):
        raise ValueError(
            f"{name!r} is not an outbox schema name: use a lowercase letter or '_', then "
            "lowercase letters, digits or '_' (at most 50 characters), e.g. 'streamtools'"
        )
    return name


def quoted(schema: str) -> str:
    """The schema as a quoted SQL identifier (checked first)."""
    return f'"{check_schema(schema)}"'


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel a schema's outbox trigger notifies."""
    return f"{check_schema(schema)}.outbox"


def schema_sql(schema: str = DEFAULT_SCHEMA) -> str:
    """The idempotent DDL of the outbox and inbox tables in `schema`."""
    s = quoted(schema)
    return f"""\
CREATE SCHEMA IF NOT EXISTS {s};

CREATE TABLE IF NOT EXISTS {s}.outbox (
    position      bigserial PRIMARY KEY,
    queue         text NOT NULL,
    key           text,
    message_id    text NOT NULL UNIQUE,
    type          text NOT NULL,
    source        text NOT NULL,
    time          text NOT NULL,
    content_type  text NOT NULL,
    options       jsonb NOT NULL DEFAULT '{{}}',
    body          bytea NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'sent', 'parked')),
    attempts      integer NOT NULL DEFAULT 0,
    not_before    timestamptz NOT NULL DEFAULT '-infinity',
    last_error    text,
    sent_at       timestamptz,
    parked_reason text
);
CREATE INDEX IF NOT EXISTS outbox_pending ON {s}.outbox (position)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_pending_key ON {s}.outbox (key, position)
    WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_sent ON {s}.outbox (sent_at)
    WHERE state = 'sent';

CREATE TABLE IF NOT EXISTS {s}.inbox (
    source      text NOT NULL,
    message_id  text NOT NULL,
    type        text NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source, message_id)
);
CREATE INDEX IF NOT EXISTS inbox_handled ON {s}.inbox (handled_at);

CREATE OR REPLACE FUNCTION {s}.outbox_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel(schema)}', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS outbox_notify ON {s}.outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON {s}.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.outbox_notify();
"""
