"""Failure tests of the RabbitMQ transport: cut connections, broker restarts, a killed consumer.

DESIGN.md promises that a returned `send` means the broker has the message, that nothing
confirmed is ever lost (also across a broker restart or a cut connection), and that a consumer
acks only after its handler returned. Each test keeps a ledger of every id whose `send`
returned and checks that consumers handled all of them; duplicates are fine (at-least-once).

Cut connections go through a TcpProxy in front of the shared broker; restarts use a private
node (the shared broker is never stopped); the killed consumer is a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    RMQ,
    Consumer,
    Limits,
    Producer,
    PublishError,
    Queue,
    RetryPolicy,
    current_metadata,
)
from tests.support import RabbitNode, TcpProxy
from tests.support.consumer_child import Tick, kill_midway
from tests.support.queues import delete_queues, queue_depth

pytestmark = pytest.mark.slow

SEND_TIMEOUT = 30.0  # longer than a private node's restart, so sends ride it out
DRAIN_TIMEOUT = 60.0  # bound on "every confirmed message is handled eventually"
TEST_TIMEOUT = 120.0


# --- helpers ---------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What was confirmed and what was handled, for the accounting at the end of a test."""

    confirmed: list[str] = field(default_factory=list)
    not_confirmed: int = 0  # sends that raised PublishError: allowed, they promised nothing
    handled: list[str] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def confirm(self, ident: str) -> None:
        self.confirmed.append(ident)
        self._changed.set()

    def handle(self, ident: str) -> None:
        self.handled.append(ident)
        self._changed.set()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until `predicate()` holds, re-checked on every change; TimeoutError after."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def lost(self, *also_handled: list[str]) -> set[str]:
        """Confirmed ids no consumer handled."""
        return set(self.confirmed).difference(self.handled, *also_handled)

    def summary(self, label: str) -> str:
        distinct = len(set(self.handled))
        return (
            f"{label}: sent {len(self.confirmed) + self.not_confirmed}, "
            f"confirmed {len(self.confirmed)}, not confirmed {self.not_confirmed}, "
            f"handled {distinct}, duplicates {len(self.handled) - distinct}, "
            f"confirmed lost {len(self.lost())}"
        )


def rmq_consumer(
    queue: str, url: str, ledger: Ledger, *, fail_first: bool = False, **settings: object
) -> Consumer[Tick]:
    """A consumer that records the id of every message its handler finished.

    With `fail_first`, the handler raises the first time it sees each id, so every message
    also goes through the transport's retry path (a copy to `<queue>.retry.1`, then back).
    """
    failed_once: set[str] = set()
    consumer = CONSUMER_LOOPS[RMQ](
        Queue(queue, Tick),
        url=url,
        **{
            "limits": Limits(max_in_flight=50),
            "retry": RetryPolicy(attempts=3, delay=0.05),
            "shutdown_timeout": 10,
            "connect_timeout": 10,
            **settings,
        },
    )

    @consumer()
    async def handle(msg: Tick) -> None:
        ident = current_metadata().id
        if fail_first and ident not in failed_once:
            failed_once.add(ident)
            raise RuntimeError(f"first attempt at {ident} fails")
        ledger.handle(ident)

    return consumer


def rmq_producer(queue: str, url: str, **settings: object) -> Producer[Tick]:
    return PRODUCERS[RMQ](
        Queue(queue, Tick),
        url=url,
        **{"send_timeout": SEND_TIMEOUT, "connect_timeout": 10, **settings},
    )


async def send_one(producer: Producer[Tick], ledger: Ledger, seq: int) -> None:
    try:
        ledger.confirm(await producer.send(Tick(seq=seq)))
    except PublishError:
        ledger.not_confirmed += 1


async def send_until(
    producer: Producer[Tick],
    ledger: Ledger,
    stop: asyncio.Event,
    *,
    limit: int,
    workers: int = 8,
    pause: float = 0.01,
) -> None:
    """Send from `workers` concurrent loops, paced, until `stop` is set or `limit` were sent.

    Several loops keep confirms in flight when a connection dies, which is where a lost
    confirm would hide.
    """
    seqs = iter(range(limit))

    async def loop() -> None:
        for seq in seqs:  # shared: each seq is sent once
            if stop.is_set():
                return
            await send_one(producer, ledger, seq)
            await asyncio.sleep(pause)

    await asyncio.gather(*(loop() for _ in range(workers)))


async def send_batch(producer: Producer[Tick], ledger: Ledger, count: int, first: int) -> None:
    for seq in range(first, first + count):
        await send_one(producer, ledger, seq)


async def confirmed_at_least(ledger: Ledger, count: int, timeout: float = 30.0) -> None:
    await ledger.until(lambda: len(ledger.confirmed) >= count, timeout)


async def until_handled(ledger: Ledger, *also_handled: list[str]) -> None:
    """Wait (bounded) until every confirmed id was handled; the caller asserts the outcome."""
    with contextlib.suppress(TimeoutError):  # the assertion that follows names what is missing
        await ledger.until(lambda: not ledger.lost(*also_handled), DRAIN_TIMEOUT)


async def send_through_cuts(
    proxy: TcpProxy, producer: Producer[Tick], consumer: Consumer[Tick], ledger: Ledger
) -> list[int]:
    """Start `consumer` and `producer`, then send from 8 loops while the proxy's connections
    are cut 8 times (0.3-0.5 s apart) and then refused for 2.5 s; send a tail after the last
    cut and wait (bounded) until every confirmed id was handled. Returns the connections cut
    per cut. Closes neither: the caller does, and asserts."""
    cuts: list[int] = []
    await consumer.start()
    await producer.a_init()
    stop = asyncio.Event()

    async def cutter() -> None:
        try:
            await confirmed_at_least(ledger, 40)
            for _ in range(8):
                cuts.append(proxy.cut_all())
                await asyncio.sleep(random.uniform(0.3, 0.5))
            # Then unreachable for a while: reconnect attempts are reset too.
            proxy.pause()
            cuts.append(proxy.cut_all())
            await asyncio.sleep(2.5)
            proxy.resume()
        finally:
            stop.set()

    await asyncio.gather(send_until(producer, ledger, stop, limit=500), cutter())
    # Sent after the last cut: only reach the handler if both sides came back.
    tail = max(30, 300 - len(ledger.confirmed) - ledger.not_confirmed)
    await send_batch(producer, ledger, tail, first=10_000)
    await until_handled(ledger)
    return cuts


def via(url: str, port: int) -> str:
    """`url` with its host:port replaced by 127.0.0.1:`port` (credentials and vhost kept)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture
async def shared_queue(rabbitmq_url: str, queue_name: str) -> AsyncIterator[str]:
    """A unique queue on the shared broker, deleted (with its .dlq and .retry.*) afterwards."""
    yield queue_name
    await delete_queues(rabbitmq_url, [queue_name])


@pytest.fixture(scope="module")
def private_node() -> Iterator[RabbitNode]:
    """One private RabbitMQ node for the module's restart tests; removed afterwards."""
    with RabbitNode() as node:
        yield node


@pytest.fixture
def node(private_node: RabbitNode) -> RabbitNode:
    """The private node, running (a test that failed mid-restart may have left it down)."""
    if not private_node.running:
        private_node.start()
    return private_node


# --- 1. cut connections ------------------------------------------------------------------------


@pytest.mark.parametrize("fail_first", [False, True], ids=["handler-ok", "handler-fails-once"])
async def test_cut_connections_lose_nothing_confirmed(
    rabbitmq_url: str, shared_queue: str, fail_first: bool
) -> None:
    broker = urlsplit(rabbitmq_url)
    ledger = Ledger()
    cuts: list[int] = []
    async with TcpProxy(broker.hostname or "127.0.0.1", broker.port or 5672) as proxy:
        url = via(rabbitmq_url, proxy.port)
        consumer = rmq_consumer(shared_queue, url, ledger, fail_first=fail_first)
        producer = rmq_producer(shared_queue, url)
        try:
            async with asyncio.timeout(TEST_TIMEOUT):
                cuts = await send_through_cuts(proxy, producer, consumer, ledger)
        finally:
            await producer.close()
            await consumer.close()
    label = f"cut connections ({'handler fails once' if fail_first else 'handler ok'})"
    print(
        f"\n{ledger.summary(label)}; connections cut per cut: {cuts}; "
        f"connections refused while paused: {proxy.refused}"
    )
    # A process's producer and consumer share one connection (channels multiplexed on it),
    # so the first cut, made while it is live, takes both down at once.
    assert cuts[0] >= 1, "the first cut should hit the live connection"
    assert proxy.accepted > 1, "nobody reconnected through the proxy"
    assert proxy.refused > 0, "nobody tried to reconnect while the proxy refused"
    assert ledger.lost() == set(), ledger.summary(label)


# --- 2. broker restart -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crash", "fail_first"),
    [(False, False), (True, True)],
    ids=["graceful-stop", "sigkill-with-retries-pending"],
)
async def test_broker_restart_mid_stream_loses_nothing_confirmed(
    node: RabbitNode, queue_name: str, crash: bool, fail_first: bool
) -> None:
    ledger = Ledger()
    # With fail_first every message goes through `.retry.1`, and a retry delay of ~1 s keeps
    # copies waiting there when the broker dies: they must come back too.
    retry_delay = 1.5 if fail_first else 0.05
    consumer = rmq_consumer(
        queue_name,
        node.url,
        ledger,
        fail_first=fail_first,
        retry=RetryPolicy(attempts=3, delay=retry_delay),
    )
    producer = rmq_producer(queue_name, node.url)
    # Its sends while the broker is down must fail with PublishError, after send_timeout.
    impatient = rmq_producer(queue_name, node.url, send_timeout=2)
    confirmed_before = pending_retries = 0
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            await consumer.start()
            await producer.a_init()
            await impatient.a_init()
            stop = asyncio.Event()

            async def restarter() -> None:
                nonlocal confirmed_before, pending_retries
                try:
                    await confirmed_at_least(ledger, 50)
                    confirmed_before = len(ledger.confirmed)
                    if fail_first:
                        pending_retries = await queue_depth(node.url, f"{queue_name}.retry.1")
                    await (node.akill() if crash else node.astop())
                    with pytest.raises(PublishError):
                        await impatient.send(Tick(seq=-1))
                    await node.astart()
                    # The producer whose send failed works again once the broker is back
                    # (its 2 s send_timeout may run out while it reconnects: try again).
                    for _ in range(10):
                        with contextlib.suppress(PublishError):
                            ledger.confirm(await impatient.send(Tick(seq=-2)))
                            break
                    else:
                        pytest.fail("a producer whose send failed never recovered")
                    # Let the stream run on the restarted node for a moment.
                    await confirmed_at_least(ledger, len(ledger.confirmed) + 20)
                finally:
                    stop.set()

            # No small limit: a graceful stop takes seconds, and the stream must still be
            # running when the node goes down and when it is back.
            await asyncio.gather(
                send_until(producer, ledger, stop, limit=10_000, pause=0.05), restarter()
            )
            await send_batch(producer, ledger, 30, first=10_000)
            await until_handled(ledger)
    finally:
        await impatient.close()
        await producer.close()
        await consumer.close()
    label = f"broker {'killed' if crash else 'stopped'} and restarted"
    waiting = f", retry copies waiting then: {pending_retries}" if fail_first else ""
    print(f"\n{ledger.summary(label)}; confirmed before the restart: {confirmed_before}{waiting}")
    assert node.starts >= 2
    if fail_first:
        assert pending_retries > 0, "no retry copy was waiting when the broker died"
    assert ledger.lost() == set(), ledger.summary(label)


async def test_confirmed_messages_survive_restart_without_consumer(
    node: RabbitNode, queue_name: str
) -> None:
    # One restart covers both queue types: persistent messages in a durable queue come back.
    queue_types = {f"{queue_name}-quorum": "quorum", f"{queue_name}-classic": "classic"}
    ledgers = {queue: Ledger() for queue in queue_types}
    async with asyncio.timeout(TEST_TIMEOUT):
        for queue, queue_type in queue_types.items():
            async with rmq_producer(queue, node.url, queue_type=queue_type) as producer:
                await send_batch(producer, ledgers[queue], 100, first=0)

        await node.arestart()
        # Before any consumer: the broker itself still holds every confirmed message.
        depths = {queue: await queue_depth(node.url, queue) for queue in queue_types}
        assert depths == {queue: 100 for queue in queue_types}

        for queue, queue_type in queue_types.items():
            consumer = rmq_consumer(queue, node.url, ledgers[queue], queue_type=queue_type)
            try:
                await consumer.start()
                await until_handled(ledgers[queue])
            finally:
                await consumer.close()
    for queue, ledger in ledgers.items():
        print(f"\n{ledger.summary(f'restart with no consumer ({queue_types[queue]})')}")
        assert len(ledger.confirmed) == 100, ledger.summary(queue)
        assert ledger.lost() == set(), ledger.summary(queue_types[queue])


# --- 3. a consumer process killed with a backlog of unacked deliveries -------------------------


async def test_sigkilled_consumer_loses_nothing_and_acked_only_finished_work(
    rabbitmq_url: str, shared_queue: str, tmp_path: Path
) -> None:
    journal, log = tmp_path / "journal", tmp_path / "child.log"
    ledger = Ledger()  # handled: by the second consumer
    async with rmq_producer(shared_queue, rabbitmq_url) as producer:
        await send_batch(producer, ledger, 100, first=0)
    assert len(ledger.confirmed) == 100, ledger.summary("sigkill")

    started, finished = await kill_midway(
        [
            "-m",
            "tests.support.consumer_child",
            rabbitmq_url,
            shared_queue,
            str(journal),
            "--prefetch",
            "20",
            "--sleep",
            "0.3",
        ],
        journal,
        log,
        done=5,
        inflight=5,
        timeout=30,
    )
    unfinished = set(started) - set(finished)

    consumer = rmq_consumer(shared_queue, rabbitmq_url, ledger)
    try:
        await consumer.start()
        await until_handled(ledger, finished)
        # Redeliveries of the unfinished ones may trail the last new message: wait for them too.
        with contextlib.suppress(TimeoutError):  # asserted below
            await ledger.until(lambda: unfinished <= set(ledger.handled), DRAIN_TIMEOUT)
    finally:
        await consumer.close()

    again = set(finished) & set(ledger.handled)
    print(
        f"\nsigkill: confirmed {len(ledger.confirmed)}, child finished {len(set(finished))}, "
        f"started but unfinished at the kill {len(unfinished)}, second consumer handled "
        f"{len(set(ledger.handled))} (of which the child had finished {len(again)})"
    )
    assert unfinished, "the child was killed with no handler running: the test proved nothing"
    assert ledger.lost(finished) == set(), "confirmed messages nobody handled"
    # Acked before the handler finished would mean never redelivered: each must come again.
    assert unfinished - set(ledger.handled) == set(), "started, never finished, not redelivered"
