"""Conformance harness for the HTTP transport: consumers on 127.0.0.1, port 0."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from streamtools import Consumer, RetryPolicy
from tests.conformance.conftest import Harness
from tests.conftest import free_port

HARNESS_NAME = "HTTPHandler"


def _producer_settings(consumer: Consumer[Any] | None) -> dict[str, object]:
    # No consumer: a port nobody listens on, so a send fails with ConnectError at once.
    port = free_port() if consumer is None else consumer.port  # type: ignore[attr-defined]
    return {"host": "127.0.0.1", "port": port, "resend": RetryPolicy(attempts=1, delay=0.01)}


async def _send_foreign(consumer: Consumer[Any], body: bytes, headers: dict[str, object]) -> None:
    # A plain client: whatever the status, the consumer decides what the message was.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            consumer.url,  # type: ignore[attr-defined]
            data=body,
            # A plain JSON client (aiohttp would send application/octet-stream for bytes).
            headers={"Content-Type": "application/json", **{k: str(v) for k, v in headers.items()}},
        ) as response,
    ):
        await response.read()


def make_harness(request: pytest.FixtureRequest) -> Harness:
    return Harness(
        HARNESS_NAME,
        consumer_settings={"host": "127.0.0.1", "port": 0, "shutdown_timeout": 10},
        producer_settings=_producer_settings,
        send_foreign=_send_foreign,
        # Past limits.max_in_flight (64) requests are answered 503; the producer resends.
        burst_settings={"resend": RetryPolicy(attempts=20, delay=0.05, max_delay=0.5)},
    )
