"""A fault test of the Redis transport: a consumer process SIGKILLed mid-backlog, then the
server (a private one, `appendonly yes`, `appendfsync always`) SIGKILLed and restarted while
a producer goes on sending; another consumer then handles everything.

The ledger: every id whose `send` returned (acknowledged by XADD) must be handled by the
killed consumer (finished) or the second one; duplicates are fine (at-least-once) and
counted. The figures are printed as a table row.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    REDIS,
    Limits,
    Queue,
    RetryPolicy,
    current_metadata,
)
from tests.conftest import unique_name
from tests.support.consumer_child import Tick, kill_midway
from tests.support.redis_node import RedisNode
from tests.support.tcp_proxy import TcpProxy
from tests.transports.test_rabbitmq_resilience import Ledger, send_through_cuts


async def test_sigkilled_consumer_and_restarted_server_lose_nothing(tmp_path: Path) -> None:
    node = RedisNode()
    await asyncio.to_thread(node.start)
    try:
        name = unique_name("st-redis-fault")
        acknowledged: list[str] = []
        async with PRODUCERS[REDIS](Queue(name, Tick), url=node.url, send_timeout=60) as p:
            acknowledged += await p.send_many([Tick(seq=i) for i in range(300)])
            started, finished = await kill_midway(
                [
                    "-m",
                    "tests.support.redis_child",
                    node.url,
                    name,
                    str(tmp_path / "journal"),
                    "--max-in-flight",
                    "20",
                    "--sleep",
                    "0.2",
                    "--claim-idle",
                    "2",
                ],
                tmp_path / "journal",
                tmp_path / "child.log",
                done=40,
                inflight=10,
                timeout=60,
            )
            await asyncio.to_thread(node.kill)
            restart = asyncio.create_task(asyncio.to_thread(node.start))
            sent = 300
            for i in range(300, 400):  # through the outage: each waits for the server
                sent += 1
                acknowledged.append(await p.send(Tick(seq=i)))
            await restart
        handled: list[str] = []
        consumer = CONSUMER_LOOPS[REDIS](
            Queue(name, Tick), url=node.url, claim_idle=2.0, limits=Limits(max_in_flight=50)
        )

        @consumer()
        async def handle(msg: Tick) -> None:
            handled.append(current_metadata().id)

        await consumer.start()
        try:
            async with asyncio.timeout(90):
                while not set(acknowledged) <= set(handled) | set(finished):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        finally:
            await consumer.close()
        done = set(handled) | set(finished)
        lost = set(acknowledged) - done
        duplicates = len(handled) + len(finished) - len(done)
        print(
            "\n| fault | sent | acknowledged | handled | lost | duplicates |\n"
            f"| consumer SIGKILLed mid-backlog, then the server SIGKILLed and restarted | "
            f"{sent} | {len(acknowledged)} | {len(done)} | {len(lost)} | {duplicates} |"
        )
        assert set(started) - set(finished), "killed with nothing in flight"
        assert not lost
    finally:
        await asyncio.to_thread(node.cleanup)


async def test_cut_connections_lose_nothing_confirmed() -> None:
    """Producer and consumer reach the shared server through a TCP proxy whose connections are
    reset eight times while 8 loops send, then refused for 2.5 s: every send that returned
    (XADD answered) is handled. A send whose answer the cut lost is sent again, so it may be
    stored twice: a duplicate, never a loss."""
    name = unique_name("st-redis-cut")
    ledger = Ledger()
    try:
        async with TcpProxy("127.0.0.1", 6379) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}/0"
            consumer = CONSUMER_LOOPS[REDIS](
                Queue(name, Tick),
                url=url,
                claim_idle=2.0,
                limits=Limits(max_in_flight=20),
                retry=RetryPolicy(attempts=3, delay=0.05),
                shutdown_timeout=10,
            )

            @consumer()
            async def handle(msg: Tick) -> None:
                ledger.handle(current_metadata().id)

            producer = PRODUCERS[REDIS](Queue(name, Tick), url=url, send_timeout=20)
            try:
                async with asyncio.timeout(180):
                    cuts = await send_through_cuts(proxy, producer, consumer, ledger)
            finally:
                await producer.close()
                await consumer.close()
    finally:
        client = redis.asyncio.Redis(host="127.0.0.1", port=6379)
        await client.delete(name, f"{name}.dlq")
        await client.aclose()
    summary = ledger.summary("Redis cut connections")
    print(f"\n{summary}; connections cut per cut: {cuts}; refused while paused: {proxy.refused}")
    assert cuts[0] >= 1, "the first cut should hit a live connection"
    assert proxy.accepted > 2, "nobody reconnected through the proxy"
    assert ledger.lost() == set(), summary
