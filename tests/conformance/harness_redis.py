"""Conformance harness for the Redis Streams transport, against `REDIS_URL` (else the local
server on 6379). Every stream a test used (and its `.dlq`) is deleted afterwards."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio

from streamtools import Consumer

if TYPE_CHECKING:
    from tests.conformance.conftest import Harness

HARNESS_NAME = "RedisHandler"
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def make_harness(request: pytest.FixtureRequest) -> Harness:
    from tests.conformance.conftest import QUEUED_SETTINGS, Harness

    async def queue_exists(name: str) -> bool:
        async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
            return bool(await client.exists(name))

    async def send_foreign(
        consumer: Consumer[Any], body: bytes, headers: dict[str, object]
    ) -> None:
        # A peer without streamtools: the body in `body`, the attributes as fields.
        fields: dict[Any, Any] = {"body": body}
        fields.update({key: str(value) for key, value in headers.items()})
        async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
            await client.xadd(consumer.queue.name, fields)

    async def cleanup(names: list[str]) -> None:
        keys = [key for name in names for key in (name, f"{name}.dlq", f"{name}.dlq.dlq")]
        if keys:
            async with redis.asyncio.Redis.from_url(REDIS_URL) as client:
                await client.delete(*keys)

    return Harness(
        HARNESS_NAME,
        # A short claim_idle: a message given back (shutdown, an internal failure) comes again
        # within seconds.
        consumer_settings={"url": REDIS_URL, "claim_idle": 2.0, **QUEUED_SETTINGS},
        producer_settings=lambda _: {"url": REDIS_URL},
        cleanup=cleanup,
        queue_exists=queue_exists,
        send_foreign=send_foreign,
    )
