"""What the transport cases share: the broker URL, the messages, unique names, cleanup."""

from __future__ import annotations

import asyncio
import os
import statistics
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aio_pika.exceptions
import aiormq.abc
from pamqp.commands import Basic

from examples.contracts import OrderCreated
from examples.orders import make_order
from streamtools._codec import codec_for, new_metadata
from streamtools.transports.rabbitmq import _properties
from tests.support.queues import delete_queues as _delete_queues

RMQ_URL = os.environ.get("RMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
WINDOW = 256  # in-flight publishes of the pipelined cases (streamtools and contenders alike)
PREFETCH = 128  # unacked deliveries of every consumer in the consume cases


class Done:
    """Counts handled messages; `event` fires at `target`, `wait` raises after 300 s."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.count = 0
        self.event = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()

    async def wait(self, what: str) -> None:
        try:
            async with asyncio.timeout(300):
                await self.event.wait()
        except TimeoutError:
            raise RuntimeError(f"{what}: only {self.count} of {self.target} handled") from None


def orders(count: int) -> list[OrderCreated]:
    """`count` distinct orders; every contender sends the same ones."""
    return [make_order(seq) for seq in range(count)]


def unique(case: str) -> str:
    """A queue name no other run (or engineer) on the shared broker uses."""
    return f"st-bench-{case}-{uuid.uuid4().hex[:10]}"


def wire(messages: list[OrderCreated]) -> list[tuple[bytes, Basic.Properties]]:
    """(body, AMQP properties) exactly as a streamtools producer publishes them."""
    codec = codec_for(OrderCreated)
    prepared = []
    for msg in messages:
        body = codec.encode(msg)
        meta = new_metadata(codec.type_name, "//bench")
        prepared.append((body, _properties(meta)))
    return prepared


async def prefill(
    channel: aiormq.abc.AbstractChannel, queue: str, wire_msgs: list[tuple[bytes, Basic.Properties]]
) -> None:
    """Publish the same bytes to `queue`, confirmed, as fast as the broker takes them."""
    for start in range(0, len(wire_msgs), 1024):
        await asyncio.gather(
            *(
                channel.basic_publish(body, routing_key=queue, properties=props, mandatory=True)
                for body, props in wire_msgs[start : start + 1024]
            )
        )


async def depth(connection: aio_pika.abc.AbstractConnection, queue: str) -> int:
    """Messages ready in `queue` (a passive declare)."""
    channel = await connection.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0
    finally:
        await channel.close()


async def delete_queues(names: list[str]) -> None:
    """Delete each queue with its `.dlq` and `.retry.<n>` queues (missing ones are fine)."""
    await _delete_queues(RMQ_URL, names)


async def windows(count: int, size: int, send: Callable[[int], Awaitable[object]]) -> None:
    """`send(i)` for i in range(count), `size` at a time (gathered)."""
    for start in range(0, count, size):
        await asyncio.gather(*(send(i) for i in range(start, min(start + size, count))))


def percentile(samples: list[float], q: float) -> float:
    """The q-th percentile (0-100) of `samples`."""
    if len(samples) < 2:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[max(0, min(98, int(q) - 1))]
