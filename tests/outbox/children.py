"""A relay and an inbox consumer in processes of their own, for tests that SIGKILL them.

`python -m tests.outbox.children relay DSN SCHEMA TRANSPORT SETTINGS JOURNAL --pause-after N`
relays, journalling `confirmed <id>` after each broker confirm; after the N-th it writes
`paused` and blocks, mid-batch (that batch's marks are never committed).

`python -m tests.outbox.children inbox DSN SCHEMA TRANSPORT SETTINGS JOURNAL QUEUE
--pause-after N` consumes QUEUE with an inbox whose handler inserts the order into
`<schema>.effects`; after each committed handler it journals `done <id>`, and after the N-th
it writes `paused` and blocks before returning (the message is never settled).
Each journal line is one O_APPEND write, so a SIGKILL leaves whole lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import msgspec
import psycopg

from streamtools import CONSUMER_LOOPS, Limits, Queue, current_metadata
from streamtools.outbox import Inbox, Relay
from tests.outbox.conftest import Order


class _Journal:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.count = 0

    def write(self, line: str) -> None:
        os.write(self.fd, f"{line}\n".encode())


class JournalledRelay(Relay):
    """A relay that journals each confirm and blocks after the N-th, mid-batch."""

    journal: _Journal
    pause_after: int

    async def _send(self, row: Any) -> None:
        await super()._send(row)
        self.journal.write(f"confirmed {row.message_id}")
        self.journal.count += 1
        if self.journal.count == self.pause_after:
            self.journal.write("paused")
            await asyncio.sleep(3600)


async def relay(args: argparse.Namespace, settings: dict[str, object]) -> None:
    r = JournalledRelay(
        args.transport,
        dsn=args.dsn,
        schema=args.schema,
        producer_settings=settings,
        batch_size=50,
        poll_interval=0.2,
    )
    r.journal = _Journal(args.journal)
    r.pause_after = args.pause_after
    r.journal.write("ready")
    await r.run()


async def apply_order(schema: str, order: Order, conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        f'INSERT INTO "{schema}".effects (message_id, key, seq) VALUES (%s, %s, %s)'.encode(),
        (current_metadata().id, order.key, order.seq),
    )


async def inbox(args: argparse.Namespace, settings: dict[str, object]) -> None:
    journal = _Journal(args.journal)
    box = Inbox(args.dsn, schema=args.schema)
    if isinstance(limits := settings.get("limits"), dict):  # a Limits, as JSON
        settings["limits"] = Limits(**limits)
    consumer = CONSUMER_LOOPS[args.transport](Queue(args.queue, Order), **settings)

    async def effect(order: Order, conn: psycopg.AsyncConnection[Any]) -> None:
        await apply_order(args.schema, order, conn)

    handle = box.handler(effect)

    @consumer()
    async def on_order(order: Order) -> None:
        await handle(order)  # committed: effect and inbox entry
        journal.write(f"done {current_metadata().id}")
        journal.count += 1
        if journal.count == args.pause_after:
            journal.write("paused")
            await asyncio.sleep(3600)  # never settled

    await consumer.start()
    journal.write("ready")
    await consumer.run()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["relay", "inbox"])
    parser.add_argument("dsn")
    parser.add_argument("schema")
    parser.add_argument("transport")
    parser.add_argument("settings", help="JSON object of transport settings")
    parser.add_argument("journal")
    parser.add_argument("queue", nargs="?", default="")
    parser.add_argument("--pause-after", type=int, required=True)
    args = parser.parse_args()
    settings: dict[str, object] = msgspec.json.decode(args.settings)
    asyncio.run(relay(args, settings) if args.role == "relay" else inbox(args, settings))


if __name__ == "__main__":
    main()
