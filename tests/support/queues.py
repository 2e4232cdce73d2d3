"""Broker-side cleanup of the queues a test's producers and consumers declared."""

from __future__ import annotations

import contextlib

import aio_pika
import aio_pika.exceptions

# The transport declares `<queue>.retry.<n>` for n up to a consumer's max_retries.
MAX_RETRY_QUEUES = 10


def declared_names(name: str) -> list[str]:
    """Every queue the RabbitMQ transport may declare for queue `name`.

    A consumer of the dead-letter queue declares retry queues of its own, hence the
    `<name>.dlq.retry.<n>` names too.
    """
    names = []
    for base in (name, f"{name}.dlq"):
        names.append(base)
        names += [f"{base}.retry.{n}" for n in range(1, MAX_RETRY_QUEUES + 1)]
    return names


async def delete_queues(url: str, names: list[str]) -> None:
    """Delete `names` and their `.dlq`/`.retry.<n>` queues; missing ones are fine."""
    connection = await aio_pika.connect(url, timeout=10)
    try:
        for name in dict.fromkeys(n for base in names for n in declared_names(base)):
            # A channel error closes only its channel: one channel per delete.
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(name)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


async def queue_depth(url: str, name: str) -> int:
    """Messages ready in queue `name`, from a passive declare.

    Not `rabbitmqctl list_queues`: its counts for quorum queues are metrics emitted every few
    seconds and read 0 for a while after a publish or a restart.
    """
    connection = await aio_pika.connect(url, timeout=10)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        count = queue.declaration_result.message_count
        return count if count is not None else 0
    finally:
        await connection.close()
