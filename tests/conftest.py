"""Shared fixtures: broker readiness, unique queue names, free ports.

The suite runs against a real RabbitMQ (`RMQ_URL`, default amqp://guest:guest@127.0.0.1:5672/);
when none answers, the tests that need it error with how to start one: they are never skipped.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

RMQ_URL = os.environ.get("RMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


def _amqp_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 3) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            s.settimeout(3)
            # A live broker answers the protocol header with a connection.start method frame.
            return s.recv(1)[:1] == b"\x01"
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """The URL of a RabbitMQ that answers; fails (not skips) the tests when there is none."""
    if not _amqp_answers(RMQ_URL):
        pytest.fail(
            f"RabbitMQ does not answer at {urlsplit(RMQ_URL).hostname}:{urlsplit(RMQ_URL).port}; "
            "start it with `rabbitmq-server -detached` (or set RMQ_URL)",
            pytrace=False,
        )
    return RMQ_URL


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A Kafka-protocol broker: `KAFKA_BOOTSTRAP_SERVERS` when set, else the bundled Tansu."""
    from tests.support.kafka_broker import TansuBroker, provided_bootstrap_servers

    provided = provided_bootstrap_servers()
    if provided is not None:
        yield provided
        return
    with TansuBroker() as broker:
        yield broker.bootstrap_servers


def unique_name(prefix: str = "st-test") -> str:
    """A queue name no other test or run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def queue_name(request: pytest.FixtureRequest) -> str:
    """A unique queue name that mentions the test, for reading broker listings."""
    test = request.node.name.split("[")[0].removeprefix("test_")[:24]
    return unique_name(f"st-{test}")


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `condition()` holds, polling; fail the test after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - polls state that has no event to await
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
