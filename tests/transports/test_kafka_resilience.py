"""Failure tests of the Kafka transport: a killed consumer, cut connections, a rebalance.

The transport promises that a returned `send` means the broker acknowledged the record
(acks=all) and that offsets are committed only for settled records, so a crash, a cut
connection or a rebalance redelivers and never loses. Each test keeps a ledger of every id
whose `send` returned and checks that consumers handled all of them; duplicates are fine
(at-least-once) and counted. The figures (sent, acknowledged, handled, lost, duplicates) are
printed and repeated in the assertion messages.

Cut connections go through a TcpProxy in front of a private Tansu broker that advertises the
proxy's address (else clients would bypass the proxy after bootstrap); the killed consumer is
a child process (tests.support.kafka_child). Tansu keeps no data across restarts, so there is
no broker-restart test here.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamtools import (
    CONSUMER_LOOPS,
    KAFKA,
    PRODUCERS,
    Consumer,
    Limits,
    Producer,
    PublishError,
    Queue,
    RetryPolicy,
    current_metadata,
)
from tests.conftest import free_port, unique_name
from tests.support import TcpProxy
from tests.support.consumer_child import Tick, kill_midway
from tests.support.kafka_broker import TansuBroker
from tests.transports.test_kafka import assigned, delete_topics, wait_until
from tests.transports.test_rabbitmq_resilience import (
    Ledger,
    confirmed_at_least,
    send_batch,
    send_until,
)

pytestmark = pytest.mark.slow

DRAIN_TIMEOUT = 90.0  # bound on "every acknowledged message is handled eventually"
TEST_TIMEOUT = 180.0
# A short session: a killed or cut-off member's partitions move on sooner.
CONSUMER = {"session_timeout": 6, "shutdown_timeout": 10, "connect_timeout": 10}


# --- helpers ---------------------------------------------------------------------------------


def figures(ledger: Ledger, label: str, *also_handled: list[str]) -> str:
    """sent / acknowledged / handled / lost / duplicates, counting every handler run."""
    runs = [*ledger.handled, *(ident for more in also_handled for ident in more)]
    distinct = set(runs)
    # A send that raised PublishError may still have been stored ("may or may not"): counted.
    unacknowledged = len(distinct - set(ledger.confirmed))
    return (
        f"{label}: sent {len(ledger.confirmed) + ledger.not_confirmed}, "
        f"acknowledged {len(ledger.confirmed)}, not acknowledged {ledger.not_confirmed}, "
        f"handled {len(distinct)} (of which unacknowledged sends {unacknowledged}), "
        f"duplicates {len(runs) - len(distinct)}, lost {len(ledger.lost(*also_handled))}"
    )


def kafka_consumer(
    topic: str,
    servers: str,
    ledger: Ledger,
    *,
    group: str | None = None,
    fail_first: bool = False,
    **settings: Any,
) -> Consumer[Tick]:
    """A consumer that records the id of every message its handler finished.

    With `fail_first`, the handler raises the first time it sees each id, so every message
    also goes through the retry path (a copy produced to the topic's tail after the backoff).
    """
    failed_once: set[str] = set()
    consumer = CONSUMER_LOOPS[KAFKA](
        Queue(topic, Tick),
        bootstrap_servers=servers,
        group=group,
        **{
            "limits": Limits(max_in_flight=20),
            "retry": RetryPolicy(attempts=3, delay=0.05),
            **CONSUMER,
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


def kafka_producer(topic: str, servers: str, **settings: Any) -> Producer[Tick]:
    return PRODUCERS[KAFKA](
        Queue(topic, Tick),
        bootstrap_servers=servers,
        **{"send_timeout": 30, "connect_timeout": 10, **settings},
    )


async def until_handled(ledger: Ledger, *also_handled: list[str]) -> None:
    """Wait (bounded) until every acknowledged id was handled; the caller asserts."""
    with contextlib.suppress(TimeoutError):  # the assertion that follows names what is missing
        await ledger.until(lambda: not ledger.lost(*also_handled), DRAIN_TIMEOUT)


@pytest.fixture
async def topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A unique topic on the shared broker, deleted (with its .dlq) afterwards."""
    name = unique_name("st-kafka-res")
    yield name
    await delete_topics(kafka_bootstrap, [name])


@pytest.fixture
async def proxied_broker() -> AsyncIterator[tuple[TcpProxy, TansuBroker]]:
    """A private Tansu behind a TcpProxy, advertising the proxy's address: (proxy, broker)."""
    broker_port = free_port()
    async with TcpProxy("127.0.0.1", broker_port) as proxy:
        broker = TansuBroker(broker_port, advertised_port=proxy.port)
        await asyncio.to_thread(broker.start)
        try:
            yield proxy, broker
        finally:
            await asyncio.to_thread(broker.stop)


# --- 1. a consumer process killed mid-backlog ---------------------------------------------------


async def test_sigkilled_consumer_then_another_member_finishes_with_nothing_lost(
    kafka_bootstrap: str, topic: str, tmp_path: Path
) -> None:
    journal, log = tmp_path / "journal", tmp_path / "child.log"
    group = f"{topic}-group"
    ledger = Ledger()  # handled: by the second member
    async with kafka_producer(topic, kafka_bootstrap) as producer:
        for first in range(0, 200, 50):
            ledger.confirmed.extend(
                await producer.send_many([Tick(seq=s) for s in range(first, first + 50)])
            )
    assert len(ledger.confirmed) == 200, figures(ledger, "sigkill")

    started, finished = await kill_midway(
        [
            "-m",
            "tests.support.kafka_child",
            kafka_bootstrap,
            topic,
            group,
            str(journal),
            "--max-in-flight",
            "20",
            "--sleep",
            "0.3",
        ],
        journal,
        log,
        done=10,
        inflight=5,
        timeout=60,  # a group join takes seconds
    )
    unfinished = set(started) - set(finished)

    consumer = kafka_consumer(topic, kafka_bootstrap, ledger, group=group)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            await consumer.start()
            await until_handled(ledger, finished)
            # Redeliveries of the unfinished ones: wait for them too (asserted below).
            with contextlib.suppress(TimeoutError):
                await ledger.until(lambda: unfinished <= set(ledger.handled), DRAIN_TIMEOUT)
    finally:
        await consumer.close()

    again = set(finished) & set(ledger.handled)
    label = "sigkill mid-backlog"
    summary = (
        f"{figures(ledger, label, finished)}; the killed member finished {len(set(finished))} "
        f"and had {len(unfinished)} started but unfinished; the second member handled "
        f"{len(set(ledger.handled))} (of which the killed one had finished {len(again)})"
    )
    print(f"\n{summary}")
    assert unfinished, "the child was killed with no handler running: the test proved nothing"
    assert ledger.lost(finished) == set(), summary
    # Committed before the handler finished would mean never redelivered: each must come again.
    assert unfinished - set(ledger.handled) == set(), f"not redelivered; {summary}"


# --- 2. connections cut through a proxy mid-stream --------------------------------------------


@pytest.mark.parametrize("fail_first", [False, True], ids=["handler-ok", "handler-fails-once"])
async def test_cut_connections_lose_nothing_acknowledged(
    proxied_broker: tuple[TcpProxy, TansuBroker], fail_first: bool
) -> None:
    proxy, broker = proxied_broker
    ledger = Ledger()
    cuts: list[int] = []
    impatient_error: list[BaseException] = []
    topic = unique_name("st-kafka-cut")
    servers = broker.bootstrap_servers
    consumer = kafka_consumer(topic, servers, ledger, fail_first=fail_first)
    producer = kafka_producer(topic, servers)
    # Its send while the broker is unreachable must fail with PublishError after 2 s.
    impatient = kafka_producer(topic, servers, send_timeout=2)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            await producer.a_init()
            await impatient.a_init()
            await consumer.start()
            await wait_until(lambda: assigned(consumer) > 0, "the consumer's partitions")
            stop = asyncio.Event()

            async def cutter() -> None:
                try:
                    await confirmed_at_least(ledger, 40)
                    for _ in range(6):
                        cuts.append(proxy.cut_all())
                        await asyncio.sleep(random.uniform(0.3, 0.6))
                    # Then unreachable for a while: reconnects are refused too.
                    proxy.pause()
                    cuts.append(proxy.cut_all())
                    try:
                        ledger.confirm(await impatient.send(Tick(seq=-1)))
                    except PublishError as exc:
                        ledger.not_confirmed += 1
                        impatient_error.append(exc)
                    await asyncio.sleep(0.5)
                    proxy.resume()
                    await confirmed_at_least(ledger, len(ledger.confirmed) + 20)
                finally:
                    stop.set()

            await asyncio.gather(
                send_until(producer, ledger, stop, limit=5_000, workers=8, pause=0.02), cutter()
            )
            # Sent after the last cut: only reach the handler if both sides came back.
            await send_batch(producer, ledger, 30, first=10_000)
            await until_handled(ledger)
    finally:
        await impatient.close()
        await producer.close()
        await consumer.close()
    label = f"cut connections ({'handler fails once' if fail_first else 'handler ok'})"
    summary = (
        f"{figures(ledger, label)}; connections cut per cut: {cuts}; "
        f"refused while paused: {proxy.refused}; accepted: {proxy.accepted}"
    )
    print(f"\n{summary}")
    assert cuts[0] >= 1, f"the first cut should hit live connections; {summary}"
    assert proxy.refused > 0, f"nobody tried to reconnect while the proxy refused; {summary}"
    assert impatient_error, f"a send while the broker was unreachable did not fail; {summary}"
    assert "not acknowledged" in str(impatient_error[0])
    assert ledger.lost() == set(), summary


# --- 3. a rebalance while handlers run ------------------------------------------------------------


async def test_rebalance_while_handlers_run_loses_nothing(kafka_bootstrap: str, topic: str) -> None:
    ledger = Ledger()
    group = f"{topic}-group"
    by_member: dict[str, list[str]] = {"first": [], "second": []}

    def member(name: str) -> Consumer[Tick]:
        consumer = CONSUMER_LOOPS[KAFKA](
            Queue(topic, Tick),
            bootstrap_servers=kafka_bootstrap,
            group=group,
            **{
                "limits": Limits(max_in_flight=16),
                "retry": RetryPolicy(attempts=3, delay=0.05),
                **CONSUMER,
            },
        )

        @consumer()
        async def handle(msg: Tick) -> None:
            await asyncio.sleep(random.uniform(0.01, 0.08))  # handlers are running at the join
            ident = current_metadata().id
            by_member[name].append(ident)
            ledger.handle(ident)

        return consumer

    first, second = member("first"), member("second")
    producer = kafka_producer(topic, kafka_bootstrap, partitions=6)
    at_join: dict[str, int] = {}
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            await producer.a_init()  # 6 partitions: the join moves some to the second member
            await first.start()
            await wait_until(lambda: assigned(first) == 6, "the first member's 6 partitions")
            stop = asyncio.Event()

            async def joiner() -> None:
                try:
                    await ledger.until(lambda: len(ledger.handled) >= 60, 60)
                    at_join.update(in_flight=first._inflight, handled=len(ledger.handled))
                    await second.start()
                    await wait_until(
                        lambda: assigned(second) > 0 and assigned(first) + assigned(second) == 6,
                        "the partitions shared by both members",
                    )
                    await wait_until(
                        lambda: len(by_member["second"]) >= 30, "the second member's work"
                    )
                    at_join.update(first_after=assigned(first), second_after=assigned(second))
                finally:
                    stop.set()

            await asyncio.gather(
                send_until(producer, ledger, stop, limit=20_000, workers=4, pause=0.01), joiner()
            )
            await send_batch(producer, ledger, 30, first=30_000)
            await until_handled(ledger)
    finally:
        await producer.close()
        await asyncio.gather(first.close(), second.close())
    summary = (
        f"{figures(ledger, 'rebalance')}; handled by the first member "
        f"{len(by_member['first'])}, by the second {len(by_member['second'])}; at the join "
        f"{at_join.get('in_flight')} handlers were running, {at_join.get('handled')} done; "
        f"partitions after: first {at_join.get('first_after')}, "
        f"second {at_join.get('second_after')}"
    )
    print(f"\n{summary}")
    assert at_join.get("in_flight", 0) > 0, f"no handler ran when the member joined; {summary}"
    assert by_member["second"], f"the second member got nothing; {summary}"
    assert ledger.lost() == set(), summary


async def test_a_handler_slower_than_the_rebalance_does_not_hold_the_group(
    kafka_bootstrap: str, topic: str
) -> None:
    # The group waits for a member's revoke at most its rebalance timeout (the session
    # timeout). A member whose revoke waited for a stuck handler longer than that would be
    # dropped from the group (or hold it up): it waits until then, commits what is settled
    # and rejoins, and the stuck handler's record goes to the partition's owner again.
    group = f"{topic}-group"
    release = asyncio.Event()
    calls: list[tuple[str, int]] = []

    def member(name: str) -> Consumer[Tick]:
        consumer = CONSUMER_LOOPS[KAFKA](
            Queue(topic, Tick),
            bootstrap_servers=kafka_bootstrap,
            group=group,
            session_timeout=4,  # the rebalance timeout too
            shutdown_timeout=60,  # longer: it must not be what bounds the revoke
            connect_timeout=10,
        )

        @consumer()
        async def handle(msg: Tick) -> None:
            calls.append((name, msg.seq))
            if len(calls) == 1:
                await release.wait()  # the first delivery is stuck until the test ends

        return consumer

    first, second = member("first"), member("second")
    producer = kafka_producer(topic, kafka_bootstrap, partitions=2)
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            await producer.a_init()
            await first.start()
            await wait_until(lambda: assigned(first) == 2, "the first member's 2 partitions")
            await producer.send(Tick(seq=1))
            await wait_until(lambda: len(calls) == 1, "the first delivery")
            await second.start()
            # Well within the shutdown timeout (60 s) the group is shared, the stuck handler
            # still running, and its record delivered again.
            await wait_until(
                lambda: assigned(first) == 1 and assigned(second) == 1 and len(calls) >= 2,
                "both members in the group and the stuck record delivered again",
                timeout=20,
            )
            assert not release.is_set()
            assert calls[1][1] == 1
    finally:
        release.set()
        await producer.close()
        await asyncio.gather(first.close(), second.close())
