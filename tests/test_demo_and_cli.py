"""`make demo` on each transport, and the `streamtools` CLI end to end, as subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from streamtools import HTTP, KAFKA, MEMORY, RMQ
from tests.conftest import RMQ_URL, eventually, free_port, unique_name
from tests.support.queues import delete_queues

ROOT = Path(__file__).parents[1]
CLI = [sys.executable, "-m", "streamtools.cli"]


def run(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args),
        cwd=ROOT,
        # the demo contracts live in examples/contracts, not in the default `generated`
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "STREAMTOOLS_CONTRACTS": "examples.contracts",
            **(env or {}),
        },
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("queue_type", [HTTP, MEMORY, RMQ, KAFKA])
def test_demo_runs_the_order_flow(queue_type: str, request: pytest.FixtureRequest) -> None:
    env = {"QUEUE_TYPE": queue_type, "RMQ_URL": RMQ_URL}
    if queue_type == RMQ:
        request.getfixturevalue("rabbitmq_url")
    if queue_type == KAFKA:
        env["KAFKA_BOOTSTRAP_SERVERS"] = request.getfixturevalue("kafka_bootstrap")
    try:
        result = run(sys.executable, "-m", "examples.demo", env=env)
    finally:
        if queue_type == RMQ:
            asyncio.run(delete_queues(RMQ_URL, ["orders.created", "billing.invoiced"]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"demo ({queue_type}): sent 300, handled 300, rejected 1" in result.stdout
    assert "billing stopped with exit code 0" in result.stdout
    assert "Traceback" not in result.stderr


def test_kafka_demo_starts_the_bundled_broker_when_none_is_configured() -> None:
    # What `QUEUE_TYPE=KafkaHandler make demo` does on a fresh clone: no broker configured.
    result = run(
        sys.executable,
        "-m",
        "examples.demo",
        env={"QUEUE_TYPE": KAFKA, "KAFKA_BOOTSTRAP_SERVERS": "", "DEMO_ORDERS": "40"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "demo: started the bundled Kafka broker on 127.0.0.1:" in result.stdout
    assert "demo (KafkaHandler): sent 40, handled 40, rejected 1" in result.stdout


def test_cli_version_and_help() -> None:
    version = run(*CLI, "--version")
    assert version.returncode == 0
    assert version.stdout.startswith("streamtools ")
    for command in ("codegen", "run", "send", "queues"):
        helped = run(*CLI, command, "--help")
        assert helped.returncode == 0, command
        assert f"usage: streamtools {command}" in helped.stdout


def test_cli_queues_lists_the_contracts() -> None:
    result = run(*CLI, "queues")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == [
        "billing.invoiced",
        "orders.created",
        "shipping.requested",
    ]
    assert "OrderCreated(order_id, customer, items" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["send", "orders.created", '{"order_id": 1}', "--transport", MEMORY],
            "does not match its schema",
        ),
        (
            ["send", "orders.created", "{not json", "--transport", MEMORY],
            "malformed application/json",
        ),
        (
            ["send", "q", "{}", "--transport", "ZeroMQHandler"],
            "unknown producer transport 'ZeroMQHandler'",
        ),
        (["run", "no.such.module:app"], "cannot import 'no.such.module'"),
        (["run", "examples.orders:make_order"], "expected a ConsumerFactory or a ConsumerRunner"),
        (["run", "examples.orders"], "expected MODULE:ATTR"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str) -> None:
    result = run(*CLI, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr


async def test_cli_run_then_send_over_http(tmp_path: Path) -> None:
    port = free_port()
    name = unique_name("st-cli")
    handled = tmp_path / "handled"
    # The service module defaults to memory; `--transport` and `--port` move it to HTTP.
    process = await asyncio.create_subprocess_exec(
        *CLI,
        "run",
        "tests.services.seed_service:consumers",
        "--transport",
        HTTP,
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "QUEUE_TYPE": MEMORY,
            "PORT": "1",
            "QUEUE_NAME": name,
            "HANDLED_FILE": str(handled),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with aiohttp.ClientSession() as session:

            async def healthy() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            async with asyncio.timeout(60):
                while not await healthy():  # noqa: ASYNC110 - polls another process
                    await asyncio.sleep(0.05)
        order = json.dumps(
            {
                "order_id": "5f2b6f5e-0a51-4c8e-9a51-0d4c6b1f6a01",
                "customer": {
                    "id": "0b7a2a6c-3f0e-4d8a-8c7e-2f1d9a4b5c6d",
                    "email": "a@example.com",
                    "name": "A",
                },
                "items": [{"sku": "ABC-1234", "quantity": 1, "unit_price": 3.5}],
                "currency": "EUR",
                "created_at": "2026-11-27T10:00:00Z",
            }
        )
        loop = asyncio.get_running_loop()
        args = [
            *CLI,
            "send",
            name,
            "-",
            "--transport",
            HTTP,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--raw",  # a queue of the test's own, with no contract in examples.contracts
        ]
        sent = await loop.run_in_executor(None, lambda: run(*args, stdin=order))
        assert sent.returncode == 0, sent.stderr
        message_id = sent.stdout.strip()
        await eventually(
            lambda: handled.exists() and handled.read_text().split() == [message_id], "handled"
        )
        replied = await loop.run_in_executor(None, lambda: run(*args, "--request", stdin=order))
        assert replied.returncode == 0, replied.stderr
        assert replied.stdout.strip() == "null"  # the handler returns nothing
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    assert f"serving {name} on {HTTP}" in out.decode()


def test_cli_run_overrides_keep_the_runners_shutdown_callbacks() -> None:
    import argparse

    from streamtools import CONSUMER_LOOPS, ConsumerRunner, Queue
    from streamtools.cli import _runner_for

    consumer = CONSUMER_LOOPS[HTTP](Queue(unique_name(), object), host="127.0.0.1", port=0)

    async def handle(msg: object) -> None:
        pass

    async def close_producers() -> None:
        pass

    runner = ConsumerRunner([consumer], {consumer.queue.name: handle}, port=0, host="127.0.0.1")
    runner.on_shutdown.append(close_producers)
    overridden = _runner_for(
        runner, argparse.Namespace(transport=None, host=None, port=free_port(), target="m:app")
    )
    assert overridden is not runner
    assert overridden.port != 0
    assert overridden.on_shutdown == [close_producers]
