"""Conformance harness for the Kafka transport, against `kafka_bootstrap` (Tansu or yours)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from streamtools import Consumer

if TYPE_CHECKING:
    from tests.conformance.conftest import Harness

HARNESS_NAME = "KafkaHandler"


def make_harness(request: pytest.FixtureRequest) -> Harness:
    from tests.conformance.conftest import QUEUED_SETTINGS, Harness

    servers: str = request.getfixturevalue("kafka_bootstrap")

    async def queue_exists(name: str) -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await admin.start()
        try:
            return name in await admin.list_topics()
        finally:
            await admin.close()

    async def send_foreign(
        consumer: Consumer[Any], body: bytes, headers: dict[str, object]
    ) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                consumer.queue.name,
                body,
                # The CloudEvents Kafka binding spells the attributes ce_id, ce_type, ...
                headers=[
                    (key.replace("ce-", "ce_", 1), str(value).encode())
                    for key, value in headers.items()
                ],
            )
        finally:
            await producer.stop()

    async def cleanup(names: list[str]) -> None:
        topics = [t for name in names for t in (name, f"{name}.dlq")]
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            gone = [t for t in topics if t in existing]
            if gone:
                await admin.delete_topics(gone)
        finally:
            await admin.close()

    return Harness(
        HARNESS_NAME,
        # A short session: a member that left is given up on sooner (some brokers wait for it).
        consumer_settings={"bootstrap_servers": servers, "session_timeout": 6, **QUEUED_SETTINGS},
        producer_settings=lambda _: {"bootstrap_servers": servers},
        cleanup=cleanup,
        queue_exists=queue_exists,
        send_foreign=send_foreign,
        ordered_send={"key": "one-key"},
    )
