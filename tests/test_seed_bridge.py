"""The seed's HandlerFactory example (queue_1: Kafka consumer, HTTP producer) runs as written."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, unique_name
from tests.support.queues import delete_queues

ROOT = Path(__file__).parents[1]


def test_seed_handler_factory_bridges_http_into_kafka_and_uses_rabbitmq(
    kafka_bootstrap: str, rabbitmq_url: str
) -> None:
    queue_1, queue_2 = unique_name("st-seed-q1"), unique_name("st-seed-q2")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "examples.seed_bridge"],
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "RMQ_URL": rabbitmq_url,
                "QUEUE_1": queue_1,
                "QUEUE_2": queue_2,
                "BRIDGE_PORT": str(free_port()),
                "COUNT": "25",
            },
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        asyncio.run(delete_queues(rabbitmq_url, [queue_2]))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (
        "SEED queue_1: 25 via HTTPHandler -> bridge -> KafkaHandler; queue_2: 25 via RMQIOHandler"
        in result.stdout
    ), output
    assert "Traceback" not in result.stderr
