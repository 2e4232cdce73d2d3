"""Conformance harness for the RabbitMQ transport, against the broker at `RMQ_URL`."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import aio_pika
import pytest

if TYPE_CHECKING:
    from tests.conformance.conftest import Harness

HARNESS_NAME = "RMQIOHandler"

# Retry queues are `<queue>.retry.<n>` for n up to a consumer's max_retries.
_MAX_RETRY_QUEUES = 10


async def delete_queues(url: str, names: list[str]) -> None:
    """Delete every queue the transport may have declared for `names` (ignore missing ones)."""
    targets: list[str] = []
    for name in names:
        for base in (name, f"{name}.dlq"):
            targets.append(base)
            targets.extend(f"{base}.retry.{n}" for n in range(1, _MAX_RETRY_QUEUES + 1))
    connection = await aio_pika.connect(url)
    try:
        for target in dict.fromkeys(targets):
            # A delete of a missing queue is a no-op on RabbitMQ, but a channel error closes
            # the channel: one channel per delete keeps the others going.
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(target)
            with contextlib.suppress(Exception):
                await channel.close()
    finally:
        await connection.close()


def make_harness(request: pytest.FixtureRequest) -> Harness:
    # Imported here: conftest imports this module to discover it (tests import it too).
    from tests.conformance.conftest import QUEUED_SETTINGS, Harness

    url: str = request.getfixturevalue("rabbitmq_url")

    async def cleanup(names: list[str]) -> None:
        await delete_queues(url, names)

    return Harness(
        HARNESS_NAME,
        consumer_settings={"url": url, **QUEUED_SETTINGS},
        producer_settings=lambda _: {"url": url},
        cleanup=cleanup,
    )
