"""Helpers of the outbox tests: write orders through the outbox, collect what a broker delivers."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest

from streamtools import CONSUMER_LOOPS, Consumer, Queue, current_metadata
from streamtools.outbox import Outbox
from tests.outbox.conftest import Order

WAIT = 60.0  # seconds: a bound on any wait, never a pass/fail threshold


async def write_orders(
    dsn: str, schema: str, queue: Queue[Order], keys: int, per_key: int, *, per_tx: int = 10
) -> list[str]:
    """Commit keys x per_key orders through the outbox, `per_tx` per transaction, the keys
    interleaved; return the message ids in commit order."""
    outbox = Outbox(schema=schema)
    orders = [Order(key=f"k{k}", seq=s) for s in range(per_key) for k in range(keys)]
    ids: list[str] = []
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        for start in range(0, len(orders), per_tx):
            async with conn.transaction():
                batch = [
                    await outbox.send(conn, queue, order, key=order.key)
                    for order in orders[start : start + per_tx]
                ]
            ids += batch
    return ids


class Sink:
    """A consumer that records every delivery: (id, key, seq) in arrival order."""

    def __init__(self, transport: str, queue: Queue[Order], **settings: object) -> None:
        self.consumer: Consumer[Order] = CONSUMER_LOOPS[transport](queue, **settings)
        self.received: list[tuple[str, str, int]] = []
        self.sources: set[str] = set()
        self._changed = asyncio.Event()

        @self.consumer()
        async def collect(order: Order) -> None:
            meta = current_metadata()
            self.received.append((meta.id, order.key, order.seq))
            self.sources.add(meta.source)
            self._changed.set()

    async def start(self) -> Sink:
        await self.consumer.start()
        return self

    async def close(self) -> None:
        await self.consumer.close()

    @property
    def unique(self) -> set[str]:
        return {ident for ident, _, _ in self.received}

    @property
    def duplicates(self) -> int:
        return len(self.received) - len(self.unique)

    async def wait_for(self, ids: set[str], what: str = "the messages") -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not ids <= self.unique:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"{what}: {len(ids - self.unique)} of {len(ids)} never arrived")

    def assert_key_order(self) -> None:
        """Within each key, first deliveries come in seq order (a duplicate may repeat one)."""
        seen: dict[str, int] = defaultdict(lambda: -1)
        firsts: set[str] = set()
        for ident, key, seq in self.received:
            if ident in firsts:
                continue
            firsts.add(ident)
            assert seq == seen[key] + 1, f"key {key}: seq {seq} after {seen[key]}"
            seen[key] = seq


async def outbox_states(dsn: str, schema: str) -> Counter[str]:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        cursor = await conn.execute(
            f'SELECT state, count(*) FROM "{schema}".outbox GROUP BY state'.encode()
        )
        return Counter({state: count for state, count in await cursor.fetchall()})


def kafka_settings(bootstrap: str) -> dict[str, Any]:
    return {"bootstrap_servers": bootstrap}
