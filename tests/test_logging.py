"""Logs an operator can use: JSON lines on request, each naming the queue, message and
transport; the start-up line naming what is served; rejections logged once at INFO."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import msgspec
import pytest

from streamtools import CONSUMER_LOOPS, Queue
from streamtools._logging import JsonFormatter
from tests.conftest import unique_name

ROOT = Path(__file__).parents[1]

SERVICE = """
import asyncio
from streamtools import CONSUMER_LOOPS, PRODUCERS, ConsumerRunner, Queue, RetryPolicy

consumer = CONSUMER_LOOPS["memory"](
    Queue("st-logq", dict[str, int]), retry=RetryPolicy(attempts=0)
)

@consumer()
async def handle(msg: dict[str, int]) -> None:
    raise RuntimeError("the handler fails")

runner = ConsumerRunner([consumer])
start = consumer.start

async def start_then_send() -> None:
    await start()

    async def poison_then_stop() -> None:
        async with PRODUCERS["memory"]("st-logq") as producer:
            await producer.send({"a": 1})
        await asyncio.sleep(0.3)
        runner.stop()

    asyncio.get_running_loop().create_task(poison_then_stop())

consumer.start = start_then_send
runner.run()
"""


def test_json_log_lines_name_the_queue_message_and_transport() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SERVICE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "STREAMTOOLS_LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert lines, result.stderr
    started = [line for line in lines if line["message"].startswith("serving st-logq")]
    assert started
    assert started[0]["message"] == "serving st-logq on MemoryHandler: MemoryConsumer('st-logq')"
    [dead] = [line for line in lines if "dead-lettered" in line["message"]]
    assert dead["level"] == "ERROR"
    assert dead["queue"] == "st-logq"
    assert dead["transport"] == "streamtools.memory"
    assert len(dead["message_id"]) == 32
    assert "the handler fails" in dead["message"]
    assert '"a"' not in json.dumps(dead)  # the body is never logged


def test_json_formatter_keeps_the_fields_and_the_exception() -> None:
    record = logging.LogRecord("streamtools.delivery", logging.WARNING, "", 1, "x %s", ("y",), None)
    record.queue = "q"
    record.attempt = 2
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "x y"
    assert (line["queue"], line["attempt"], line["level"]) == ("q", 2, "WARNING")
    assert "ValueError: boom" in line["exception"]


class Point(msgspec.Struct):
    x: int


async def test_http_rejections_are_logged_once_at_info(caplog: pytest.LogCaptureFixture) -> None:
    consumer = CONSUMER_LOOPS["http"](Queue(unique_name(), Point), host="127.0.0.1", port=0)

    @consumer()
    async def handle(msg: Point) -> None:
        pass

    await consumer.start()
    caplog.set_level(logging.INFO, logger="streamtools.http")
    try:
        async with aiohttp.ClientSession() as session:
            url = consumer.url  # type: ignore[attr-defined]
            for body, content_type in ((b'{"x": "no"}', "application/json"), (b"{}", "text/x")):
                async with session.post(url, data=body, headers={"Content-Type": content_type}):
                    pass
    finally:
        await consumer.close()
    rejected = [r for r in caplog.records if r.getMessage().startswith("rejected")]
    assert [(r.levelno, getattr(r, "status", None)) for r in rejected] == [
        (logging.INFO, 422),
        (logging.INFO, 415),
    ]
    assert all(getattr(r, "queue", None) == consumer.queue.name for r in rejected)
