"""Memory cases: resident memory growth between WARM and TOTAL messages through a transport.

Each transport runs in a fresh child process (`python -m benchmarks.rss TRANSPORT WARM
TOTAL [LOOP]`, on the event loop of the run that starts it), so earlier cases' garbage does
not count. The child sends WARM messages through a
producer/consumer pair, collects garbage and reads its current RSS (/proc/self/statm, not
the monotonic ru_maxrss), sends up to TOTAL, reads again and prints the growth in MiB. A
leak or an unbounded cache (per message id, per connection, per task) shows as growth
proportional to TOTAL - WARM; a healthy transport stays flat. Issue #14's target: under
5 MiB from 10k to 200k messages on every transport (memory, RabbitMQ, HTTP, Kafka).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from benchmarks.common import RMQ_URL, WINDOW, delete_queues, orders, unique
from benchmarks.harness import RSS, Case, Contender, Workload, loop_factory, running_loop
from examples.contracts import OrderCreated
from streamtools import Limits, Producer

MiB = 1024 * 1024
TRANSPORTS = ("memory", "rabbitmq", "http", "kafka")
_ROOT = Path(__file__).resolve().parent.parent  # the child runs `-m benchmarks.rss` here


def rss_bytes() -> int:
    """The current resident set size of this process, after a full collection.

    glibc keeps freed memory in its arenas; `malloc_trim(0)` hands it back, so what is
    left is memory still in use rather than the high-water mark of a burst.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Counter:
    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.event = asyncio.Event()

    def expect(self, target: int) -> None:
        self.target = target
        self.event = asyncio.Event()
        if self.count >= target:
            self.event.set()

    def hit(self) -> None:
        self.count += 1
        if self.count >= self.target:
            self.event.set()


Send = Callable[[int, int], Awaitable[None]]  # send messages [start, stop)


def _in_windows(producer: Producer[OrderCreated], pool: list[OrderCreated]) -> Send:
    """Send messages [start, stop) of the pool (cycled) with `send_many`, WINDOW at a time."""

    async def send(start: int, stop: int) -> None:
        for first in range(start, stop, WINDOW):
            last = min(first + WINDOW, stop)
            await producer.send_many(pool[i % len(pool)] for i in range(first, last))

    return send


async def _measure(send: Send, handled: _Counter, warm: int, total: int) -> dict[str, float]:
    async def through(start: int, stop: int) -> None:
        handled.expect(stop)
        await send(start, stop)
        async with asyncio.timeout(600):
            await handled.event.wait()

    await through(0, warm)
    gc.collect()
    before = rss_bytes()
    started = time.perf_counter()
    await through(warm, total)
    elapsed = time.perf_counter() - started
    gc.collect()
    await asyncio.sleep(0.2)  # let closed connections and finished tasks go
    gc.collect()
    after = rss_bytes()
    return {
        "warm_mib": before / MiB,
        "total_mib": after / MiB,
        "growth_mib": (after - before) / MiB,
        "msg_per_s": (total - warm) / elapsed,
    }


async def _memory(warm: int, total: int) -> dict[str, float]:
    from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer

    pool = orders(1000)
    handled = _Counter()
    broker = MemoryBroker()
    name = unique("rss")
    consumer = MemoryConsumer(name, message_type=OrderCreated, broker=broker)

    @consumer()
    async def handle(msg: OrderCreated) -> None:
        handled.hit()

    async with MemoryProducer(name, message_type=OrderCreated, broker=broker) as producer:
        await consumer.start()

        async def send(start: int, stop: int) -> None:
            for i in range(start, stop):
                await producer.send(pool[i % len(pool)])

        try:
            return await _measure(send, handled, warm, total)
        finally:
            await consumer.close()


async def _rabbitmq(warm: int, total: int) -> dict[str, float]:
    from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer

    pool = orders(1000)
    handled = _Counter()
    name = unique("rss")
    consumer = RabbitMQConsumer(
        name, message_type=OrderCreated, url=RMQ_URL, limits=Limits(max_in_flight=128)
    )

    @consumer()
    async def handle(msg: OrderCreated) -> None:
        handled.hit()

    try:
        async with RabbitMQProducer(name, message_type=OrderCreated, url=RMQ_URL) as producer:
            await consumer.start()

            try:
                return await _measure(_in_windows(producer, pool), handled, warm, total)
            finally:
                await consumer.close()
    finally:
        await delete_queues([name])


async def _http(warm: int, total: int) -> dict[str, float]:
    from streamtools.transports.http import HTTPConsumer, HTTPProducer

    pool = orders(1000)
    handled = _Counter()
    name = unique("rss")
    consumer = HTTPConsumer(name, message_type=OrderCreated, host="127.0.0.1", port=0)

    @consumer()
    async def handle(msg: OrderCreated) -> None:
        handled.hit()

    await consumer.start()
    try:
        async with HTTPProducer(
            name, message_type=OrderCreated, host="127.0.0.1", port=consumer.port
        ) as producer:

            async def send(start: int, stop: int) -> None:
                async def worker(first: int) -> None:
                    for i in range(first, stop, 64):
                        await producer.send(pool[i % len(pool)])

                await asyncio.gather(*(worker(start + w) for w in range(64)))

            return await _measure(send, handled, warm, total)
    finally:
        await consumer.close()


async def _kafka(warm: int, total: int) -> dict[str, float]:
    from benchmarks.kafka import delete_topics, servers
    from benchmarks.kafka import unique as topic_name
    from streamtools.transports.kafka import KafkaConsumer, KafkaProducer

    pool = orders(1000)
    handled = _Counter()
    name = topic_name("rss")
    where = servers()  # the parent's broker (KAFKA_BOOTSTRAP_SERVERS), else a Tansu of its own
    consumer = KafkaConsumer(
        name,
        message_type=OrderCreated,
        bootstrap_servers=where,
        group=name,
        limits=Limits(max_in_flight=128),
    )

    @consumer()
    async def handle(msg: OrderCreated) -> None:
        handled.hit()

    try:
        async with KafkaProducer(
            name, message_type=OrderCreated, bootstrap_servers=where
        ) as producer:
            await consumer.start()  # a fresh group reads the topic from the start

            try:
                return await _measure(_in_windows(producer, pool), handled, warm, total)
            finally:
                await consumer.close()
    finally:
        await delete_topics([name])


_RUNNERS = {"memory": _memory, "rabbitmq": _rabbitmq, "http": _http, "kafka": _kafka}


def cases(warm: int, total: int, transports: tuple[str, ...] = TRANSPORTS) -> list[Case]:
    def child(transport: str) -> Workload:
        async def run() -> tuple[int, float]:
            env = dict(os.environ)
            if transport == "kafka":
                from benchmarks.kafka import servers

                env["KAFKA_BOOTSTRAP_SERVERS"] = servers()  # the broker of the Kafka cases
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "benchmarks.rss",
                transport,
                str(warm),
                str(total),
                running_loop(),  # the child runs on the loop of this run
                stdout=asyncio.subprocess.PIPE,
                cwd=_ROOT,
                env=env,
            )
            out, _ = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"rss child for {transport} failed ({process.returncode})")
            result = json.loads(out.decode().strip().splitlines()[-1])
            print(f"  {transport}: {json.dumps(result)}", flush=True)
            return 1, float(result["growth_mib"])

        return run

    return [
        Case(
            f"memory: RSS growth {warm:,} -> {total:,} msgs, {transport}",
            Contender(f"streamtools {transport}", child(transport)),
            [],
            unit="MiB",
            lower_is_better=True,
            target=RSS[transport],  # < 5 MiB
            rounds=1,
        )
        for transport in transports
    ]


def main() -> None:
    transport, warm, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    loop = sys.argv[4] if len(sys.argv) > 4 else "asyncio"
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        result = runner.run(_RUNNERS[transport](warm, total))
    print(json.dumps({**result, "loop": loop}))


if __name__ == "__main__":
    main()
