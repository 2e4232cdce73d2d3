"""Conformance harness for the RabbitMQ transport, against the broker at `RMQ_URL`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

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

    return Harness(
        HARNESS_NAME,
        consumer_settings={"url": url, **QUEUED_SETTINGS},
        producer_settings=lambda _: {"url": url},
        cleanup=cleanup,
    )
