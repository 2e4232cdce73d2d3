"""Queued consumers hand messages to workers, not to a task each (`QueuedConsumer._work`):
what a task per message gave must still hold. Handlers that wait run concurrently up to
`max_in_flight`; each message runs in a context of its own; a handler's own timeout cancels
its message only; shutdown leaves the messages no worker took for redelivery."""

from __future__ import annotations

import asyncio
import contextvars

import msgspec

from streamtools import Limits, Queue, RetryPolicy
from streamtools.testing import TestClient
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.conftest import eventually, unique_name


class Job(msgspec.Struct):
    n: int


def _queue() -> Queue[Job]:
    return Queue(unique_name("st-workers"), Job)


async def test_waiting_handlers_run_concurrently_up_to_max_in_flight() -> None:
    broker = MemoryBroker()
    queue = _queue()
    consumer = MemoryConsumer(queue, broker=broker, limits=Limits(max_in_flight=8))
    release = asyncio.Event()
    running = 0
    most = 0
    handled: list[int] = []

    @consumer()
    async def handle(job: Job) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        handled.append(job.n)

    async with MemoryProducer(queue, broker=broker) as producer:
        for n in range(20):
            await producer.send(Job(n))
    await consumer.start()
    try:
        await eventually(lambda: running >= 8, "running >= 8")
        await asyncio.sleep(0.1)  # room for a ninth, if anything let one in
        assert (running, most) == (8, 8)
        release.set()
        await eventually(lambda: len(handled) >= 20, "len(handled) >= 20")
        assert sorted(handled) == list(range(20))
        assert most == 8
    finally:
        await consumer.close()


async def test_a_context_variable_a_handler_sets_stays_with_its_message() -> None:
    broker = MemoryBroker()
    queue = _queue()
    var: contextvars.ContextVar[int | None] = contextvars.ContextVar("job", default=None)
    consumer = MemoryConsumer(queue, broker=broker, limits=Limits(max_in_flight=4))
    seen: dict[int, tuple[int | None, int | None]] = {}

    @consumer()
    async def handle(job: Job) -> None:
        before = var.get()
        var.set(job.n)  # never reset: a task per message dropped it with the task
        if job.n % 3 == 0:
            await asyncio.sleep(0.001)  # some wait, so they interleave across workers
        seen[job.n] = (before, var.get())

    async with MemoryProducer(queue, broker=broker) as producer:
        for n in range(50):
            await producer.send(Job(n))
    await consumer.start()
    try:
        await eventually(lambda: len(seen) >= 50, "len(seen) >= 50")
    finally:
        await consumer.close()
    assert seen == {n: (None, n) for n in range(50)}


async def test_a_handler_timeout_cancels_its_own_message_only() -> None:
    queue = _queue()
    handled: list[int] = []

    async with TestClient() as client:
        consumer = MemoryConsumer(
            queue,
            limits=Limits(max_in_flight=4),
            retry=RetryPolicy(attempts=1, delay=0.01, max_delay=0.01),
        )

        @consumer()
        async def handle(job: Job) -> None:
            if job.n == 3:
                async with asyncio.timeout(0.05):  # bounds this handler, in its worker
                    await asyncio.sleep(10)
            await asyncio.sleep(0.01)
            handled.append(job.n)

        await client.start(consumer)
        for n in range(8):
            await client.send(queue, Job(n))
        [dead] = client.dead_letters(queue)
    assert sorted(handled) == [0, 1, 2, 4, 5, 6, 7]
    assert (dead.reason, dead.error_type, dead.attempts) == ("max-retries", "TimeoutError", 2)


async def test_shutdown_leaves_the_messages_no_worker_took_for_redelivery() -> None:
    broker = MemoryBroker()
    queue = _queue()
    consumer = MemoryConsumer(
        queue, broker=broker, limits=Limits(max_in_flight=4), shutdown_timeout=0.2
    )
    started: list[int] = []

    @consumer()
    async def stuck(job: Job) -> None:
        started.append(job.n)
        await asyncio.sleep(60)  # never done: shutdown times out on it

    async with MemoryProducer(queue, broker=broker) as producer:
        for n in range(10):
            await producer.send(Job(n))
    await consumer.start()
    await eventually(lambda: len(started) >= 4, "len(started) >= 4")
    await consumer.close()
    assert consumer._inflight == 0  # every accepted message accounted for

    again: list[int] = []
    second = MemoryConsumer(queue, broker=broker, limits=Limits(max_in_flight=16))

    @second()
    async def handle(job: Job) -> None:
        again.append(job.n)

    await second.start()
    try:
        await eventually(lambda: len(again) >= 10, "len(again) >= 10")
    finally:
        await second.close()
    assert sorted(again) == list(range(10))  # the stuck ones and the never-taken ones
