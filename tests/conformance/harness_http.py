"""Conformance harness for the HTTP transport: consumers on 127.0.0.1, port 0."""

from __future__ import annotations

from typing import Any

import pytest

from streamtools import Consumer
from tests.conformance.conftest import Harness
from tests.conftest import free_port

HARNESS_NAME = "HTTPHandler"


def _producer_settings(consumer: Consumer[Any] | None) -> dict[str, object]:
    # No consumer: a port nobody listens on, so a send fails with ConnectError at once.
    port = free_port() if consumer is None else consumer.port  # type: ignore[attr-defined]
    return {"host": "127.0.0.1", "port": port, "retries": 1, "retry_backoff": 0.01}


def make_harness(request: pytest.FixtureRequest) -> Harness:
    return Harness(
        HARNESS_NAME,
        consumer_settings={"host": "127.0.0.1", "port": 0, "shutdown_timeout": 10},
        producer_settings=_producer_settings,
    )
