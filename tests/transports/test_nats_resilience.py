"""Failure tests of the NATS JetStream transport: a consumer process SIGKILLed mid-backlog.

The transport promises that a returned `send` means JetStream stored the message (PubAck)
and that a message is acknowledged only once settled, so a killed member's unacknowledged
messages are redelivered (after `ack_wait`) to the others and never lost. The test keeps a
ledger of every id whose `send` returned and checks that consumers handled all of them;
duplicates are fine (at-least-once) and counted. The figures (sent, acknowledged, handled,
lost, duplicates) are printed and repeated in the assertion messages. The server restart is
in test_nats.py (test_server_restart_loses_nothing_confirmed_and_consuming_resumes).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.js.errors
import pytest

from streamtools import Limits, Queue, RetryPolicy, current_metadata
from streamtools.transports.nats import NATSConsumer, NATSProducer
from streamtools.transports.nats._streams import stream_name
from tests.conftest import unique_name
from tests.support.consumer_child import Tick, kill_midway
from tests.support.tcp_proxy import TcpProxy
from tests.transports.test_rabbitmq_resilience import Ledger, send_through_cuts

pytestmark = pytest.mark.slow

SERVERS = "nats://127.0.0.1:4222"
DRAIN_TIMEOUT = 60.0  # bound on "every acknowledged message is handled eventually"
ACK_WAIT = 3.0  # the killed member's messages go to the other after this


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    """A unique queue on the shared server; its streams are deleted afterwards."""
    name = unique_name("st-nats-res")
    yield name
    nc = await nats.connect(SERVERS)
    try:
        for subject in (name, f"{name}.dlq"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(stream_name(subject))
    finally:
        await nc.close()


def figures(ledger: Ledger, label: str, *also_handled: list[str]) -> str:
    """sent / acknowledged / handled / lost / duplicates, counting every handler run."""
    runs = [*ledger.handled, *(ident for more in also_handled for ident in more)]
    distinct = set(runs)
    return (
        f"{label}: sent {len(ledger.confirmed) + ledger.not_confirmed}, "
        f"acknowledged {len(ledger.confirmed)}, handled {len(distinct)}, "
        f"duplicates {len(runs) - len(distinct)}, lost {len(ledger.lost(*also_handled))}"
    )


async def test_sigkilled_consumer_then_another_member_finishes_with_nothing_lost(
    queue: str, tmp_path: Path
) -> None:
    journal, log = tmp_path / "journal", tmp_path / "child.log"
    ledger = Ledger()  # handled: by the second member
    async with NATSProducer(Queue(queue, Tick), servers=SERVERS) as producer:
        for first in range(0, 200, 50):
            ledger.confirmed.extend(
                await producer.send_many([Tick(seq=s) for s in range(first, first + 50)])
            )
    assert len(ledger.confirmed) == 200, figures(ledger, "sigkill")

    argv = ["-m", "tests.support.nats_child", SERVERS, queue, str(journal)]
    argv += ["--max-in-flight", "20", "--sleep", "0.3", "--ack-wait", str(ACK_WAIT)]
    started, finished = await kill_midway(argv, journal, log, done=10, inflight=5, timeout=60)
    unfinished = set(started) - set(finished)

    consumer = NATSConsumer(
        Queue(queue, Tick),
        servers=SERVERS,
        limits=Limits(max_in_flight=20),
        retry=RetryPolicy(attempts=3, delay=0.05),
        ack_wait=ACK_WAIT,
        shutdown_timeout=10,
    )

    @consumer()
    async def handle(msg: Tick) -> None:
        ledger.handle(current_metadata().id)

    try:
        await consumer.start()
        with contextlib.suppress(TimeoutError):  # the assertions below name what is missing
            await ledger.until(lambda: not ledger.lost(finished), DRAIN_TIMEOUT)
            await ledger.until(lambda: unfinished <= set(ledger.handled), DRAIN_TIMEOUT)
        await asyncio.sleep(ACK_WAIT)  # room for a stray redelivery to show as a duplicate
    finally:
        await consumer.close()

    again = set(finished) & set(ledger.handled)
    summary = (
        f"{figures(ledger, 'NATS sigkill mid-backlog', finished)}; the killed member finished "
        f"{len(set(finished))} and had {len(unfinished)} started but unfinished; the second "
        f"member handled {len(set(ledger.handled))} (of which the killed one had finished "
        f"{len(again)})"
    )
    print(f"\n{summary}")
    assert unfinished, "the child was killed with no handler running: the test proved nothing"
    assert ledger.lost(finished) == set(), summary
    assert unfinished - set(ledger.handled) == set(), f"not redelivered; {summary}"
    # Acknowledged only after the handler: what the killed member finished and acknowledged
    # is not handled again, except those whose ack the kill cut off.
    assert len(again) <= 20, summary


async def test_cut_connections_lose_nothing_confirmed(queue: str) -> None:
    """Producer and consumer talk to the shared server through a TCP proxy whose connections
    are reset eight times while 8 loops send, then refused for 2.5 s: every send that
    returned is handled (nats-py reconnects; a send retried over the cut keeps its
    Nats-Msg-Id, so JetStream stores it once)."""
    ledger = Ledger()
    async with TcpProxy("127.0.0.1", 4222) as proxy:
        servers = f"nats://127.0.0.1:{proxy.port}"
        consumer = NATSConsumer(
            Queue(queue, Tick),
            servers=servers,
            limits=Limits(max_in_flight=20),
            retry=RetryPolicy(attempts=3, delay=0.05),
            ack_wait=ACK_WAIT,
            shutdown_timeout=10,
        )

        @consumer()
        async def handle(msg: Tick) -> None:
            ledger.handle(current_metadata().id)

        producer = NATSProducer(Queue(queue, Tick), servers=servers, send_timeout=20)
        try:
            async with asyncio.timeout(180):
                cuts = await send_through_cuts(proxy, producer, consumer, ledger)
        finally:
            await producer.close()
            await consumer.close()
    summary = ledger.summary("NATS cut connections")
    print(f"\n{summary}; connections cut per cut: {cuts}; refused while paused: {proxy.refused}")
    assert cuts[0] >= 1, "the first cut should hit a live connection"
    assert proxy.accepted > 2, "nobody reconnected through the proxy"
    assert ledger.lost() == set(), summary
