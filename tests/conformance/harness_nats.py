"""Conformance harness for the NATS JetStream transport, against the server on NATS_URL
(nats://127.0.0.1:4222 by default)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

import nats
import nats.js.errors
import pytest

from streamtools import Consumer
from streamtools.transports.nats._streams import stream_name

if TYPE_CHECKING:
    from tests.conformance.conftest import Harness

HARNESS_NAME = "NATSHandler"
SERVERS = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")


def make_harness(request: pytest.FixtureRequest) -> Harness:
    from tests.conformance.conftest import QUEUED_SETTINGS, Harness

    async def queue_exists(name: str) -> bool:
        nc = await nats.connect(SERVERS)
        try:
            await nc.jetstream().stream_info(stream_name(name))
            return True
        except nats.js.errors.NotFoundError:
            return False
        finally:
            await nc.close()

    async def send_foreign(
        consumer: Consumer[Any], body: bytes, headers: dict[str, object]
    ) -> None:
        nc = await nats.connect(SERVERS)
        try:
            # The CloudEvents NATS binding spells the attributes ce-id, ce-type, ... as given.
            await nc.jetstream().publish(
                consumer.queue.name,
                body,
                headers={key: str(value) for key, value in headers.items()} or None,
            )
        finally:
            await nc.close()

    async def cleanup(names: list[str]) -> None:
        streams = {stream_name(q) for name in names for q in (name, f"{name}.dlq")}
        nc = await nats.connect(SERVERS)
        try:
            js = nc.jetstream()
            for stream in sorted(streams):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(stream)
        finally:
            await nc.close()

    return Harness(
        HARNESS_NAME,
        consumer_settings={"servers": SERVERS, **QUEUED_SETTINGS},
        producer_settings=lambda _: {"servers": SERVERS},
        cleanup=cleanup,
        queue_exists=queue_exists,
        send_foreign=send_foreign,
    )
