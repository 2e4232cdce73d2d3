"""Conformance harness for the RabbitMQ transport, against the broker at `RMQ_URL`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aio_pika
import aio_pika.exceptions
import pytest

from streamtools import Consumer
from tests.support.queues import delete_queues

if TYPE_CHECKING:
    from tests.conformance.conftest import Harness

HARNESS_NAME = "RMQIOHandler"


def make_harness(request: pytest.FixtureRequest) -> Harness:
    # Imported here: conftest imports this module to discover it (tests import it too).
    from tests.conformance.conftest import QUEUED_SETTINGS, Harness

    url: str = request.getfixturevalue("rabbitmq_url")

    async def cleanup(names: list[str]) -> None:
        await delete_queues(url, names)

    async def queue_exists(name: str) -> bool:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True
        finally:
            await connection.close()

    async def send_foreign(
        consumer: Consumer[Any], body: bytes, headers: dict[str, object]
    ) -> None:
        connection = await aio_pika.connect(url)
        try:
            channel = await connection.channel()
            message = aio_pika.Message(body, headers=headers)  # type: ignore[arg-type]
            await channel.default_exchange.publish(message, consumer.queue.name)
        finally:
            await connection.close()

    return Harness(
        HARNESS_NAME,
        consumer_settings={"url": url, **QUEUED_SETTINGS},
        producer_settings=lambda _: {"url": url},
        cleanup=cleanup,
        queue_exists=queue_exists,
        send_foreign=send_foreign,
    )
