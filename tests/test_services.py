"""Services as real processes: the seed's examples run as written, SIGTERM loses nothing.

Each test starts a service with `sys.executable`, waits for its `/healthz`, talks to it with
the public API, and stops it with SIGTERM, checking the exit code and what was handled.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from examples.contracts import Customer, LineItem, OrderCreated
from streamtools import HTTP, PRODUCERS, RMQ, DeliveryError, PublishError, Queue, RetryPolicy
from streamtools import ConnectError as StreamtoolsConnectError
from tests.conftest import RMQ_URL, eventually, free_port, unique_name
from tests.support.queues import delete_queues

ROOT = Path(__file__).parents[1]
WAIT = 60.0


def order(n: int = 0) -> OrderCreated:
    return OrderCreated(
        order_id=uuid.uuid4(),
        customer=Customer(id=uuid.uuid4(), email=f"c{n}@example.com", name=f"C {n}"),
        items=[LineItem(sku="ABC-1234", quantity=1 + n % 3, unit_price=2.5)],
        currency="EUR",
        created_at=datetime.now(UTC),
    )


def handled_ids(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


class Service:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    async def health(self) -> tuple[int, dict[str, object]]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{self.port}/healthz") as response,
        ):
            return response.status, await response.json()

    async def wait_healthy(self) -> dict[str, object]:
        async with asyncio.timeout(WAIT):
            while True:
                if self.process.returncode is not None:
                    out = await self.process.stdout.read() if self.process.stdout else b""
                    pytest.fail(f"service exited with {self.process.returncode}: {out.decode()}")
                try:
                    status, body = await self.health()
                    if status == 200:
                        return body
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def terminate(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            out, _ = await self.process.communicate()
        assert self.process.returncode is not None
        return self.process.returncode, out.decode()


@asynccontextmanager
async def service(script: str, **env: str) -> AsyncIterator[Service]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "tests" / "services" / script),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PORT": str(port), "RMQ_URL": RMQ_URL, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    svc = Service(process, port)
    try:
        yield svc
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def producer_settings(queue_type: str, port: int) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port} if queue_type == HTTP else {"url": RMQ_URL}


@pytest.mark.parametrize("queue_type", [HTTP, RMQ])
async def test_seed_consumer_factory_example_serves_on_either_transport(
    queue_type: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if queue_type == RMQ:
        request.getfixturevalue("rabbitmq_url")
    name = unique_name("st-seed")
    handled = tmp_path / "handled"
    try:
        async with service(
            "seed_service.py", QUEUE_TYPE=queue_type, QUEUE_NAME=name, HANDLED_FILE=str(handled)
        ) as svc:
            report = await svc.wait_healthy()
            assert report["status"] == "ok"
            assert report["consumers"] == [
                {
                    "queue": name,
                    "transport": {HTTP: "streamtools.http", RMQ: "rabbitmq"}[queue_type],
                    "connected": True,
                    "consuming": True,
                    "in_flight": 0,
                }
            ]
            queue = Queue(name, OrderCreated)
            async with PRODUCERS[queue_type](queue, **producer_settings(queue_type, svc.port)) as p:
                sent = [await p.send(order(n)) for n in range(10)]
            await eventually(lambda: sorted(handled_ids(handled)) == sorted(sent), "10 handled")
            code, out = await svc.terminate()
        assert code == 0, out
        assert f"serving {name} on {queue_type}" in out
    finally:
        if queue_type == RMQ:
            await delete_queues(RMQ_URL, [name])


async def test_sigterm_mid_burst_over_http_answers_every_request(tmp_path: Path) -> None:
    name = unique_name("st-term-http")
    handled = tmp_path / "handled"
    async with service(
        "seed_service.py",
        QUEUE_TYPE=HTTP,
        QUEUE_NAME=name,
        HANDLED_FILE=str(handled),
        HANDLER_DELAY="0.2",
    ) as svc:
        await svc.wait_healthy()
        queue = Queue(name, OrderCreated)
        producer = PRODUCERS[HTTP](
            queue, host="127.0.0.1", port=svc.port, resend=RetryPolicy(attempts=0)
        )
        accepted: list[str] = []
        refused: list[BaseException] = []

        async def send(n: int) -> None:
            try:
                accepted.append(await producer.send(order(n)))
            except (DeliveryError, StreamtoolsConnectError) as exc:
                refused.append(exc)

        async with producer:
            burst = [asyncio.create_task(send(n)) for n in range(60)]
            await eventually(lambda: svc.port > 0 and len(handled_ids(handled)) >= 3, "some")
            code, out = await svc.terminate()
            async with asyncio.timeout(WAIT):
                await asyncio.gather(*burst)
    assert code == 0, out
    # Every request got an answer: handled (2xx), or refused with a clear error.
    assert len(accepted) + len(refused) == 60
    assert sorted(accepted) == sorted(handled_ids(handled))  # nothing accepted went unhandled
    for exc in refused:
        assert isinstance(exc, StreamtoolsConnectError) or (
            isinstance(exc, DeliveryError) and exc.status == 503
        ), exc


async def test_sigterm_mid_burst_over_rabbitmq_loses_nothing(
    tmp_path: Path, rabbitmq_url: str
) -> None:
    name = unique_name("st-term-rmq")
    handled = tmp_path / "handled"
    queue = Queue(name, OrderCreated)
    try:
        async with PRODUCERS[RMQ](queue, url=rabbitmq_url) as producer:
            sent = await producer.send_many([order(n) for n in range(200)])
            async with service(
                "seed_service.py",
                QUEUE_TYPE=RMQ,
                QUEUE_NAME=name,
                HANDLED_FILE=str(handled),
                HANDLER_DELAY="0.02",
            ) as svc:
                await svc.wait_healthy()
                await eventually(lambda: len(handled_ids(handled)) >= 20, "a first part handled")
                code, out = await svc.terminate()
            assert code == 0, out
            first = set(handled_ids(handled))
            assert 20 <= len(first) < 200  # stopped mid-burst
            # What the stopped service did not finish is still in the queue: a new one drains it.
            async with service(
                "seed_service.py", QUEUE_TYPE=RMQ, QUEUE_NAME=name, HANDLED_FILE=str(handled)
            ) as svc:
                await svc.wait_healthy()
                await eventually(lambda: set(handled_ids(handled)) >= set(sent), "all 200")
                code, out = await svc.terminate()
            assert code == 0, out
    finally:
        await delete_queues(rabbitmq_url, [name])
    assert set(handled_ids(handled)) == set(sent)


async def test_runner_exits_non_zero_when_a_consumer_cannot_start(tmp_path: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = blocker.sockets[0].getsockname()[1]
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "tests" / "services" / "seed_service.py"),
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "PORT": str(port),
                "QUEUE_TYPE": HTTP,
                "QUEUE_NAME": unique_name(),
                "HANDLED_FILE": str(tmp_path / "h"),
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(WAIT):
            out, _ = await process.communicate()
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert process.returncode == 1
    text = out.decode()
    assert f"cannot listen on 127.0.0.1:{port}" in text
    assert "Traceback" not in text


async def test_seed_handler_factory_with_mixed_transports(rabbitmq_url: str) -> None:
    rmq_queue, http_queue = unique_name("st-bridge"), unique_name("st-sink")
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "tests" / "services" / "handler_factory_service.py"),
            cwd=ROOT,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "PORT": str(free_port()),
                "RMQ_URL": rabbitmq_url,
                "RMQ_QUEUE": rmq_queue,
                "HTTP_QUEUE": http_queue,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        async with asyncio.timeout(WAIT):
            out, _ = await process.communicate()
    finally:
        await delete_queues(rabbitmq_url, [rmq_queue])
    assert process.returncode == 0, out.decode()
    assert "BRIDGED 20 via RMQIOHandler -> HTTPHandler" in out.decode(), out.decode()


async def test_health_reports_a_consumer_that_is_down(tmp_path: Path) -> None:
    name = unique_name("st-health")
    async with service(
        "seed_service.py", QUEUE_TYPE=HTTP, QUEUE_NAME=name, HANDLED_FILE=str(tmp_path / "h")
    ) as svc:
        await svc.wait_healthy()
        svc.process.send_signal(signal.SIGTERM)

        async def status_after_stop() -> int:
            # While it drains the service answers 503; once gone, nothing answers (0).
            async with asyncio.timeout(WAIT):
                while True:
                    try:
                        status, _ = await svc.health()
                    except aiohttp.ClientError:
                        return 0
                    if status != 200:
                        return status
                    await asyncio.sleep(0.01)

        assert await status_after_stop() in (0, 503)
        await svc.process.wait()
    assert svc.process.returncode == 0


async def test_publish_error_is_a_streamtools_error() -> None:
    assert issubclass(DeliveryError, PublishError)
