"""Failover on a three-node RabbitMQ cluster, every placement of producer, consumer and leader.

Issue #20: a producer on the node that also led its quorum queue never recovered when that
node died (RabbitMQ nacks every later publish of a channel whose first publish to the queue
came while the queue had no leader; the producer reconnects within that window). Here the
producer's node (P), the consumer's node (C) and the quorum leader's node (L) take every
distinct placement: all on one node, each pair shared, all three apart. The shared node
(the leader's when all are apart) is SIGKILLed while four loops send and one consumer
handles, kept down while the stream goes on through the other nodes, then restarted (it
rejoins from its data folder). Each placement records sent, confirmed, handled, lost,
duplicates, the longest blocked send and the time from the kill until a send begun after it
is confirmed. Pass/fail: nothing confirmed is lost, no send fails, and no send blocks longer
than 15 s (the issue's acceptance bound); the times are figures, printed in a table at the
end of the run (terminal summary) and written to `rabbitmq_failover_matrix.md` under
pytest's base temporary directory.

Also here, on the same cluster: a send that timed out on a dead path (a frozen node) does
not make the next send wait on that path, and when no address takes a connection `send`
fails at once naming each address and what it answered, until one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    RMQ,
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
from tests.support.rabbit_node import free_port
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

SEND_TIMEOUT = 60.0  # as in the issue: a send stuck on a dead path would show as such
BLOCKED_BOUND = 15.0  # the acceptance: no send blocked longer than this
PROGRESS_TIMEOUT = 60.0  # bound on "the stream makes progress" (a hang guard)
DRAIN_TIMEOUT = 60.0
TEST_TIMEOUT = 180.0
PREFETCH = 20
BEFORE, WHILE_DOWN, AFTER = 300, 200, 100  # confirmed before the kill, while down, after
TABLE_FILE = "rabbitmq_failover_matrix.md"


# --- ledger ----------------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every send (when it began and returned, and whether confirmed) and every handling."""

    confirmed: list[str] = field(default_factory=list)
    not_confirmed: list[str] = field(default_factory=list)  # the PublishErrors' texts
    handled: list[str] = field(default_factory=list)
    sends: list[tuple[float, float, bool]] = field(default_factory=list)
    in_flight: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def handle(self, ident: str) -> None:
        self.handled.append(ident)
        self._changed.set()

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

    @property
    def longest_send(self) -> float:
        return max((returned - began for began, returned, _ in self.sends), default=0.0)

    def back_after(self, killed_at: float) -> float | None:
        """Seconds from the kill until a send begun after it was confirmed."""
        returns = [returned for began, returned, ok in self.sends if ok and began >= killed_at]
        return min(returns) - killed_at if returns else None

    async def more_confirmed(self, count: int) -> None:
        target = len(self.confirmed) + count
        await self.until(lambda: len(self.confirmed) >= target, PROGRESS_TIMEOUT)

    async def more_handled(self, count: int) -> None:
        target = len(set(self.handled)) + count
        await self.until(lambda: len(set(self.handled)) >= target, PROGRESS_TIMEOUT)


async def stream(
    producer: Producer[Tick], ledger: Ledger, stop: asyncio.Event, *, workers: int = 4
) -> None:
    """Send from `workers` paced loops until `stop`: confirms are pending at any moment."""
    seqs = iter(range(1_000_000))

    async def send(seq: int) -> None:
        began = time.monotonic()
        ledger.in_flight += 1
        ledger._changed.set()
        ok = False
        try:
            ledger.confirmed.append(await producer.send(Tick(seq=seq)))
            ok = True
        except PublishError as exc:
            ledger.not_confirmed.append(str(exc))
        finally:
            ledger.in_flight -= 1
            ledger.sends.append((began, time.monotonic(), ok))
            ledger._changed.set()

    async def loop() -> None:
        for seq in seqs:
            if stop.is_set():
                return
            await send(seq)
            await asyncio.sleep(0.02)

    await asyncio.gather(*(loop() for _ in range(workers)))


# --- the table -------------------------------------------------------------------------------


@dataclass
class Row:
    placement: str
    killed: str
    sent: int
    confirmed: int
    handled: int
    lost: int
    duplicates: int
    longest: float
    back_after: float | None
    moved: str


HEADER = (
    "| placement (P, C, L) | node SIGKILLed | sent | confirmed | handled | lost | duplicates "
    "| longest blocked send | sends go through again after | afterwards |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def table(rows: list[Row]) -> str:
    lines = [HEADER]
    for r in rows:
        back = f"{r.back_after:.2f} s" if r.back_after is not None else "-"
        lines.append(
            f"| {r.placement} | {r.killed} | {r.sent:,} | {r.confirmed:,} | {r.handled:,} "
            f"| {r.lost} | {r.duplicates} | {r.longest:.2f} s | {back} | {r.moved} |"
        )
    return "\n".join(lines)


class _Summary:
    """A plugin that prints the table in pytest's terminal summary (no -s needed)."""

    def __init__(self, text: str, path: Path) -> None:
        self.text, self.path = text, path

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.section("RabbitMQ failover matrix (issue #20)")
        terminalreporter.write_line(self.text)
        terminalreporter.write_line(f"(also in {self.path})")


@pytest.fixture(scope="module")
def matrix_rows(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Row]]:
    rows: list[Row] = []
    yield rows
    if not rows:
        return
    order = [p.label for p in PLACEMENTS]
    rows.sort(key=lambda r: order.index(r.placement))
    text = table(rows)
    path = tmp_path_factory.getbasetemp() / TABLE_FILE
    path.write_text(text + "\n")
    request.config.pluginmanager.register(_Summary(text, path), "rabbitmq-failover-matrix")


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


@pytest.fixture
async def endpoints(cluster: RabbitCluster, queue_name: str) -> AsyncIterator[list[object]]:
    """Producers and consumers a test opened: closed, and the queue deleted, afterwards."""
    opened: list[object] = []
    yield opened
    for endpoint in reversed(opened):
        assert isinstance(endpoint, RabbitMQProducer | RabbitMQConsumer)
        with contextlib.suppress(Exception):
            await endpoint.close()
    live = [url for node, url in zip(cluster.nodes, cluster.urls, strict=True) if node.running]
    with contextlib.suppress(Exception):
        await delete_queues(live[0], [queue_name])


def where(cluster: RabbitCluster, endpoint: RabbitMQProducer[Tick] | RabbitMQConsumer[Tick]) -> int:
    """The node an endpoint's (shared) connection is on now."""
    connection = endpoint._link.connection
    assert connection is not None
    return cluster.node_of(connection.url)


# --- the matrix ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    id: str
    label: str
    producer: int
    consumer: int
    leader: int

    @property
    def shared(self) -> int:
        """The node to kill: the one two or three of them share, else the leader's."""
        nodes = [self.producer, self.consumer, self.leader]
        return max(set(nodes), key=lambda n: (nodes.count(n), n == self.leader))

    def roles(self, node: int) -> str:
        names = [("P", self.producer), ("C", self.consumer), ("L", self.leader)]
        return "+".join(name for name, at in names if at == node)


PLACEMENTS = [
    Placement("all-on-one", "all on one node", producer=0, consumer=0, leader=0),
    Placement("PC-shared", "P = C, L apart", producer=1, consumer=1, leader=2),
    Placement("PL-shared", "P = L, C apart", producer=2, consumer=0, leader=2),
    Placement("CL-shared", "C = L, P apart", producer=1, consumer=0, leader=0),
    Placement("all-apart", "all apart", producer=0, consumer=1, leader=2),
]


@pytest.mark.parametrize("placement", PLACEMENTS, ids=lambda p: p.id)
async def test_failover_matrix(
    cluster: RabbitCluster,
    endpoints: list[object],
    queue_name: str,
    placement: Placement,
    matrix_rows: list[Row],
) -> None:
    p, c, lead, dead = placement.producer, placement.consumer, placement.leader, placement.shared
    # Declared first from the leader's node: the quorum leader starts there (the default
    # queue-leader-locator, client-local).
    async with PRODUCERS[RMQ](Queue(queue_name, Tick), url=cluster.url_of(lead)):
        pass
    ledger, stop = Ledger(), asyncio.Event()
    consumer = CONSUMER_LOOPS[RMQ](
        Queue(queue_name, Tick),
        url=cluster.order_from(c),
        limits=Limits(max_in_flight=PREFETCH),
        retry=RetryPolicy(delay=0.05),
        shutdown_timeout=10,
    )

    @consumer()
    async def handle(msg: Tick) -> None:
        ledger.handle(current_metadata().id)

    producer = PRODUCERS[RMQ](
        Queue(queue_name, Tick), url=cluster.order_from(p), send_timeout=SEND_TIMEOUT
    )
    endpoints += [consumer, producer]
    await consumer.start()
    await producer.a_init()
    assert isinstance(producer, RabbitMQProducer)
    assert isinstance(consumer, RabbitMQConsumer)
    assert await asyncio.to_thread(cluster.leader_of, queue_name) == lead
    assert (where(cluster, producer), where(cluster, consumer)) == (p, c)

    killed_at: list[float] = []
    after: list[str] = []

    async def scenario() -> None:
        try:
            await ledger.more_confirmed(BEFORE)
            await ledger.more_handled(BEFORE // 2)
            beams = await asyncio.to_thread(cluster.beams, dead)
            await ledger.until(lambda: ledger.in_flight > 0, 10)  # a confirm pending
            cluster.signal(beams)
            killed_at.append(time.monotonic())
            await cluster.akill(dead)
            # Through the other nodes while the killed one stays down.
            await ledger.more_confirmed(WHILE_DOWN)
            await ledger.more_handled(WHILE_DOWN // 2)
            assert not cluster.nodes[dead].running
            leader = await asyncio.to_thread(cluster.leader_of, queue_name)
            after.append(
                f"P on {where(cluster, producer) + 1}, C on {where(cluster, consumer) + 1}, "
                f"L on {'-' if leader is None else leader + 1}"
            )
            await cluster.astart_node(dead)  # rejoins from its data folder
            await ledger.more_confirmed(AFTER)
        finally:
            stop.set()

    async with asyncio.timeout(TEST_TIMEOUT):
        await asyncio.gather(stream(producer, ledger, stop), scenario())
        with contextlib.suppress(TimeoutError):  # the assertion below names what is missing
            await ledger.until(lambda: not ledger.lost(), DRAIN_TIMEOUT)
    members = await asyncio.to_thread(cluster.running_members)
    row = Row(
        placement=placement.label,
        killed=f"{dead + 1} ({placement.roles(dead)})",
        sent=len(ledger.sends),
        confirmed=len(ledger.confirmed),
        handled=len(set(ledger.handled)),
        lost=len(ledger.lost()),
        duplicates=ledger.duplicates,
        longest=ledger.longest_send,
        back_after=ledger.back_after(killed_at[0]),
        moved=after[0] if after else "-",
    )
    matrix_rows.append(row)
    summary = table([row])
    print(f"\n{summary}")
    assert len(members) == 3, f"the restarted node did not rejoin: {members}"
    assert ledger.lost() == set(), summary
    assert ledger.not_confirmed == [], f"{summary}\n{ledger.not_confirmed[:3]}"
    assert row.longest <= BLOCKED_BOUND, summary
    assert row.back_after is not None, summary


# --- a dead path is left; no node at all fails fast ------------------------------------------


async def test_a_send_that_timed_out_on_a_frozen_node_does_not_make_the_next_wait_there(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    """Node 1 freezes (SIGSTOP: its sockets stay open, nothing answers, no error comes).

    The first send waits out its send_timeout there. The next send must not wait on that
    same channel and connection: it finds the connection cannot open a channel within
    connect_timeout, leaves it, and is confirmed through another node.
    """
    async with PRODUCERS[RMQ](Queue(queue_name, Tick), url=cluster.url_of(2)):
        pass  # leader on node 3, so the queue itself keeps working
    producer = RabbitMQProducer(
        Queue(queue_name, Tick), url=cluster.order_from(0), send_timeout=12, connect_timeout=2
    )
    endpoints.append(producer)
    await producer.send(Tick(seq=0))
    assert where(cluster, producer) == 0
    frozen = await asyncio.to_thread(cluster.freeze, 0)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            with pytest.raises(PublishError, match="not confirmed"):
                await producer.send(Tick(seq=1))
            ident = await producer.send(Tick(seq=2))
            moved_to = where(cluster, producer)
    finally:
        cluster.thaw(frozen)
    assert ident
    assert moved_to != 0


async def test_no_node_takes_the_message_send_fails_at_once_naming_each_address(
    cluster: RabbitCluster, endpoints: list[object], queue_name: str
) -> None:
    """Every address refuses: `send` says so, each address with its answer, at once.

    The addresses: two proxies in front of nodes 1 and 2 (paused: they reset every new
    connection) and a port nobody listens on. send_timeout is far longer than the test may
    take: a send that waited it out would time the test out instead. Once one proxy lets
    connections through again, sends go through it.
    """
    node_1, node_2 = (cluster.nodes[i] for i in (0, 1))
    async with (
        TcpProxy("127.0.0.1", node_1.port) as first,
        TcpProxy("127.0.0.1", node_2.port) as second,
    ):
        nobody = free_port()
        urls = [f"amqp://guest:guest@127.0.0.1:{port}/" for port in (first.port, second.port)]
        urls.append(f"amqp://guest:guest@127.0.0.1:{nobody}/")
        producer = RabbitMQProducer(Queue(queue_name, Tick), url=urls, send_timeout=600)
        endpoints.append(producer)
        await producer.send(Tick(seq=0))
        first.pause()
        second.pause()
        first.cut_all()
        async with asyncio.timeout(TEST_TIMEOUT):
            with pytest.raises(PublishError) as failed:
                await producer.send(Tick(seq=1))
            # And the next one too, while nothing changed.
            with pytest.raises(PublishError) as again:
                await producer.send(Tick(seq=2))
            second.resume()
            ident = None
            while ident is None:  # the reconnect loop reaches the resumed proxy in turn
                with contextlib.suppress(PublishError):
                    ident = await producer.send(Tick(seq=3))
    text = str(failed.value)
    print(f"\n{text}")
    assert "no RabbitMQ node can take it" in text
    for port in (first.port, second.port, nobody):
        assert f"127.0.0.1:{port}" in text
    assert "Connect call failed" in text or "refused" in text.lower()  # the free port's answer
    assert "600" in text
    assert "no RabbitMQ node can take it" in str(again.value)
    assert ident
