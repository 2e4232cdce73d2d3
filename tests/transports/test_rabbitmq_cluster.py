"""Failover on a real three-node RabbitMQ cluster: a node dies, the clients move on.

DESIGN.md promises that the topology works on a cluster (quorum queues) and that nothing
confirmed is lost. With every node's address configured (`url=[...]`), a producer or consumer
whose node dies reconnects to the next address, re-declares and re-subscribes there, and
publishes again, with the same id, what was waiting for a confirm. Each test kills (or
restarts) one node while a stream runs, keeps a ledger of every id whose `send` returned,
checks that consumers handled all of them, and prints sent / confirmed / handled / lost /
duplicates / longest blocked send (a figure, never a pass/fail threshold).

Who is where: a client connects to the first address of its list, and a quorum queue's
leader starts on the node of the client that declares it first, so each test chooses the
producer's node, the consumer's node and the leader's node. One cluster serves the module;
a node a test killed is started again (it rejoins from its data folder) before the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

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
from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer
from tests.support.consumer_child import Tick
from tests.support.queues import delete_queues
from tests.support.rabbit_cluster import RabbitCluster

pytestmark = pytest.mark.slow

SEND_TIMEOUT = 30.0  # far longer than a failover, so no send needs to fail
DRAIN_TIMEOUT = 60.0  # bound on "every confirmed message is handled eventually"
TEST_TIMEOUT = 150.0
PREFETCH = 20
PRODUCER, CONSUMER, LEADER = "producer", "consumer", "leader"


# --- ledger ----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What was sent, confirmed and handled, and how long the slowest send blocked."""

    confirmed: list[str] = field(default_factory=list)
    not_confirmed: int = 0  # sends that raised PublishError
    handled: list[str] = field(default_factory=list)
    longest_send: float = 0.0
    in_flight: int = 0  # sends waiting for their confirm right now
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def confirm(self, *ids: str) -> None:
        self.confirmed.extend(ids)
        self._changed.set()

    def handle(self, ident: str) -> None:
        self.handled.append(ident)
        self._changed.set()

    def blocked(self, seconds: float) -> None:
        self.longest_send = max(self.longest_send, seconds)

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    def lost(self) -> set[str]:
        return set(self.confirmed).difference(self.handled)

    @property
    def duplicates(self) -> int:
        return len(self.handled) - len(set(self.handled))

    def summary(self, label: str) -> str:
        return (
            f"{label}: sent {len(self.confirmed) + self.not_confirmed}, "
            f"confirmed {len(self.confirmed)}, handled {len(set(self.handled))}, "
            f"lost {len(self.lost())}, duplicates {self.duplicates}, "
            f"longest blocked send {self.longest_send:.2f} s"
        )


async def send_one(producer: Producer[Tick], ledger: Ledger, seq: int) -> None:
    started = time.monotonic()
    ledger.in_flight += 1
    ledger._changed.set()
    try:
        ledger.confirm(await producer.send(Tick(seq=seq)))
    except PublishError:
        ledger.not_confirmed += 1
    finally:
        ledger.in_flight -= 1
        ledger.blocked(time.monotonic() - started)


async def stream(
    producer: Producer[Tick], ledger: Ledger, stop: asyncio.Event, *, workers: int = 4
) -> None:
    """Send from `workers` paced loops until `stop`: confirms are in flight at any moment."""
    seqs = iter(range(1_000_000))

    async def loop() -> None:
        for seq in seqs:
            if stop.is_set():
                return
            await send_one(producer, ledger, seq)
            await asyncio.sleep(0.02)

    await asyncio.gather(*(loop() for _ in range(workers)))


async def more_confirmed(ledger: Ledger, count: int) -> None:
    target = len(ledger.confirmed) + count
    await ledger.until(lambda: len(ledger.confirmed) >= target, SEND_TIMEOUT + 10)


async def until_handled(ledger: Ledger) -> None:
    with contextlib.suppress(TimeoutError):  # the assertion that follows names what is missing
        await ledger.until(lambda: not ledger.lost(), DRAIN_TIMEOUT)


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """One private three-node cluster for the module; every node removed afterwards."""
    with RabbitCluster() as cluster:
        yield cluster


@pytest.fixture
def cluster(rabbit_cluster: RabbitCluster) -> RabbitCluster:
    """The cluster with all three nodes running (a failed test may have left one down)."""
    for index, node in enumerate(rabbit_cluster.nodes):
        if not node.running:
            rabbit_cluster.start_node(index)
    return rabbit_cluster


@dataclass
class Clients:
    producer: Producer[Tick]
    consumer: Consumer[Tick]
    ledger: Ledger


@pytest.fixture
async def endpoints(cluster: RabbitCluster, queue_name: str) -> AsyncIterator[list[object]]:
    """Producers and consumers a test opened: closed, and the queue deleted, afterwards."""
    opened: list[object] = []
    yield opened
    for endpoint in reversed(opened):
        assert isinstance(endpoint, Producer | Consumer)
        with contextlib.suppress(Exception):
            await endpoint.close()
    live = [url for node, url in zip(cluster.nodes, cluster.urls, strict=True) if node.running]
    with contextlib.suppress(Exception):
        await delete_queues(live[0], [queue_name])


async def open_clients(
    cluster: RabbitCluster,
    opened: list[object],
    queue: str,
    *,
    producer_at: int,
    consumer_at: int,
    leader_at: int,
) -> Clients:
    """A started consumer and producer, each with all three addresses, its own node first.

    The queue is declared first from the leader's node, which puts the quorum leader there.
    """
    async with PRODUCERS[RMQ](Queue(queue, Tick), url=cluster.url_of(leader_at)):
        pass
    ledger = Ledger()
    consumer = CONSUMER_LOOPS[RMQ](
        Queue(queue, Tick),
        url=cluster.order_from(consumer_at),
        limits=Limits(max_in_flight=PREFETCH),
        retry=RetryPolicy(delay=0.05),
        shutdown_timeout=10,
    )

    @consumer()
    async def handle(msg: Tick) -> None:
        ledger.handle(current_metadata().id)

    producer = PRODUCERS[RMQ](
        Queue(queue, Tick), url=cluster.order_from(producer_at), send_timeout=SEND_TIMEOUT
    )
    opened += [consumer, producer]
    await consumer.start()
    await producer.a_init()
    assert await asyncio.to_thread(cluster.leader_of, queue) == leader_at
    assert where(cluster, producer) == producer_at
    assert where(cluster, consumer) == consumer_at
    return Clients(producer, consumer, ledger)


def where(cluster: RabbitCluster, endpoint: Producer[Tick] | Consumer[Tick]) -> int:
    """The node an endpoint's (shared) connection is on now."""
    assert isinstance(endpoint, RabbitMQProducer | RabbitMQConsumer)
    connection = endpoint._link.connection
    assert connection is not None
    return cluster.node_of(connection.url)


async def handled_more(ledger: Ledger, count: int) -> None:
    target = len(set(ledger.handled)) + count
    await ledger.until(lambda: len(set(ledger.handled)) >= target, SEND_TIMEOUT + 10)


# --- (a)-(d): a node dies or restarts while a stream runs ------------------------------------


async def test_producer_node_killed_sends_carry_on_through_another_node(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    clients = await open_clients(
        cluster, endpoints, queue_name, producer_at=0, consumer_at=1, leader_at=2
    )
    ledger, stop = clients.ledger, asyncio.Event()
    moved_to: list[int] = []
    in_flight: list[int] = []

    async def scenario() -> None:
        try:
            await more_confirmed(ledger, 100)
            beams = await asyncio.to_thread(cluster.beams, 0)
            await ledger.until(lambda: ledger.in_flight > 0, 10)  # kill with a confirm pending
            cluster.signal(beams)
            in_flight.append(ledger.in_flight)
            await cluster.akill(0)
            # Carried on through another node while the killed one is still down.
            await more_confirmed(ledger, 100)
            moved_to.append(where(cluster, clients.producer))
            assert not cluster.nodes[0].running
            await cluster.astart_node(0)
            await more_confirmed(ledger, 50)
        finally:
            stop.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(stream(clients.producer, ledger, stop), scenario())
        await until_handled(ledger)
    print(
        f"\n{ledger.summary('(a) producer node killed')}; "
        f"producer moved to node {moved_to}, "
        f"sends in flight at the kill: {in_flight}"
    )
    assert moved_to
    assert moved_to[0] != 0
    assert ledger.not_confirmed == 0, ledger.summary("(a)")
    assert ledger.lost() == set(), ledger.summary("(a)")


async def test_consumer_node_killed_consumption_resumes_on_another_node(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    clients = await open_clients(
        cluster, endpoints, queue_name, producer_at=1, consumer_at=0, leader_at=2
    )
    ledger, stop = clients.ledger, asyncio.Event()
    moved_to: list[int] = []

    async def scenario() -> None:
        try:
            await handled_more(ledger, 100)
            await cluster.akill(0)
            await handled_more(ledger, 100)  # handled through another node, 0 still down
            moved_to.append(where(cluster, clients.consumer))
            assert not cluster.nodes[0].running
            await cluster.astart_node(0)
            await more_confirmed(ledger, 50)
        finally:
            stop.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(stream(clients.producer, ledger, stop), scenario())
        await until_handled(ledger)
    print(f"\n{ledger.summary('(b) consumer node killed')}; consumer moved to node {moved_to}")
    assert moved_to
    assert moved_to[0] != 0
    assert ledger.lost() == set(), ledger.summary("(b)")
    # Redelivered: what the dead connection held unacked, at most the prefetch.
    assert ledger.duplicates <= PREFETCH, ledger.summary("(b)")


async def test_quorum_leader_killed_with_no_client_on_it(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    clients = await open_clients(
        cluster, endpoints, queue_name, producer_at=1, consumer_at=2, leader_at=0
    )
    ledger, stop = clients.ledger, asyncio.Event()
    leaders: list[int | None] = []

    async def scenario() -> None:
        try:
            await more_confirmed(ledger, 100)
            await cluster.akill(0)
            await more_confirmed(ledger, 100)
            await handled_more(ledger, 100)
            leaders.append(await asyncio.to_thread(cluster.leader_of, queue_name))
            assert not cluster.nodes[0].running
            await cluster.astart_node(0)
            await more_confirmed(ledger, 50)
        finally:
            stop.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(stream(clients.producer, ledger, stop), scenario())
        await until_handled(ledger)
    print(f"\n{ledger.summary('(c) quorum leader killed')}; new leader on node {leaders}")
    assert leaders
    assert leaders[0] in (1, 2)
    # Neither client was on the dead node: both kept their connection.
    assert (where(cluster, clients.producer), where(cluster, clients.consumer)) == (1, 2)
    assert ledger.not_confirmed == 0, ledger.summary("(c)")
    assert ledger.lost() == set(), ledger.summary("(c)")


async def test_node_restarted_and_rejoined_while_both_run(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    clients = await open_clients(
        cluster, endpoints, queue_name, producer_at=0, consumer_at=0, leader_at=1
    )
    ledger, stop = clients.ledger, asyncio.Event()
    during: list[tuple[int, int]] = []

    async def scenario() -> None:
        try:
            await more_confirmed(ledger, 100)
            await asyncio.to_thread(cluster.stop_node, 0)  # rabbitmqctl stop: graceful
            await more_confirmed(ledger, 50)
            await handled_more(ledger, 50)
            during.append((where(cluster, clients.producer), where(cluster, clients.consumer)))
            await cluster.astart_node(0)  # rejoins from its data folder
            await more_confirmed(ledger, 50)
        finally:
            stop.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(stream(clients.producer, ledger, stop), scenario())
        # The rejoined node serves again: a producer that knows only it sends through it.
        async with PRODUCERS[RMQ](Queue(queue_name, Tick), url=cluster.url_of(0)) as only_0:
            ledger.confirm(await only_0.send(Tick(seq=-1)))
        await until_handled(ledger)
    members = await asyncio.to_thread(cluster.running_members)
    print(
        f"\n{ledger.summary('(d) node restarted and rejoined')}; clients on nodes {during} "
        f"while it was down; members after: {len(members)}"
    )
    assert during
    assert 0 not in during[0]
    assert len(members) == 3
    assert ledger.not_confirmed == 0, ledger.summary("(d)")
    assert ledger.lost() == set(), ledger.summary("(d)")


# --- send_many with a batch in flight ----------------------------------------------------------


async def test_send_many_batch_in_flight_when_the_producer_node_dies(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    clients = await open_clients(
        cluster, endpoints, queue_name, producer_at=0, consumer_at=1, leader_at=2
    )
    ledger, stop = clients.ledger, asyncio.Event()
    batch = 300
    batches: list[tuple[int, float, float]] = []  # (batch number, started, returned)
    killed_at: list[float] = []
    busy = asyncio.Event()

    async def batches_until_stop() -> None:
        number = 0
        while not stop.is_set():
            started = time.monotonic()
            busy.set()
            try:
                ids = await clients.producer.send_many(
                    [Tick(seq=number * batch + k) for k in range(batch)]
                )
                ledger.confirm(*ids)
            except PublishError:
                ledger.not_confirmed += batch
            finally:
                busy.clear()
                returned = time.monotonic()
                ledger.blocked(returned - started)
                batches.append((number, started, returned))
            number += 1

    async def scenario() -> None:
        try:
            await more_confirmed(ledger, 2 * batch)
            beams = await asyncio.to_thread(cluster.beams, 0)
            await busy.wait()
            await asyncio.sleep(0.005)  # its publishes are out, their confirms pending
            cluster.signal(beams)
            killed_at.append(time.monotonic())
            await cluster.akill(0)  # reaps the node, waits for its port to close
            await more_confirmed(ledger, 2 * batch)
            assert not cluster.nodes[0].running
            await cluster.astart_node(0)
            await more_confirmed(ledger, batch)
        finally:
            stop.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(batches_until_stop(), scenario())
        await until_handled(ledger)
    spanning = [n for n, started, returned in batches if started < killed_at[0] < returned]
    print(
        f"\n{ledger.summary(f'(e) send_many of {batch}, producer node killed')}; "
        f"batches {len(batches)}, in flight at the kill: {spanning}"
    )
    assert spanning, "no batch was in flight when the node died: the test proved nothing"
    assert ledger.not_confirmed == 0, ledger.summary("(e)")
    assert ledger.lost() == set(), ledger.summary("(e)")
