"""Redis Streams cases: streamtools vs raw redis-py (and FastStream) on the same server.

The server is `REDIS_URL` (default redis://127.0.0.1:6379/0); benchmarks.transports skips
these cases when it does not answer. Every stream key is `st-bench-redis-<case>-<random>`,
deleted (with its `.dlq`) at the end of the case. Guarantees are the server's defaults for
everyone (the same server, the same persistence settings).

Publish: every side waits for each entry's XADD reply (the server added it), 256 in flight,
each entry the same fields streamtools writes: `body` (the Struct encoded by msgspec) and
`ce-id`, `ce-type`, `ce-source`, `ce-specversion`, `ce-time`, `content-type`, built by
streamtools' own metadata and field helpers, so the raw side pays no more than streamtools
for them. streamtools gathers 256 `send`s per window (its client: a pool of at most 32
connections). Raw redis-py, two ways a careful user writes it: a non-transactional
`pipeline()` of 256 XADDs per window, awaiting `execute()` (one connection, one round trip
per window: the leanest), and 256 `xadd` calls gathered on a client whose pool is bounded
to 32 connections as streamtools' is. The stream is deleted after every run (untimed). No
target: the ratios are reported.

Consume+ack: each contender has its own stream and consumer group (created at id 0),
prefilled (untimed, before every run) with the same messages; the clock runs from starting
the consumer until it has handled them all. streamtools: a `RedisConsumer` with
`max_in_flight` 128 (XREADGROUP COUNT up to 128, batched XACKs). Raw redis-py: XREADGROUP
COUNT 128 (BLOCK 1 s), decoding each entry's `body` into the Struct with msgspec, then one
XACK for the batch's ids, then the next read. FastStream: `RedisBroker` with its msgspec
serializer, a stream subscriber in a consumer group (`StreamSub(group=, consumer=,
max_records=128)`), `AckPolicy.ACK` (XACK after the handler); its stream is prefilled by
FastStream's own publisher (its envelope in `__data__`: FastStream reads no other format)
with the same body and the same CloudEvents headers. After each run nothing may be pending
in the group (streamtools leaving entries fails the case, a contender's is a warning) and
the stream is trimmed to empty (untimed), so every run reads a stream of the same size.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

import msgspec
import redis.asyncio

from benchmarks.common import PREFETCH, WINDOW, Done, orders, windows
from benchmarks.harness import Case, Contender
from examples.contracts import OrderCreated
from streamtools import Limits
from streamtools._codec import default_source, new_metadata
from streamtools.transports.redis import RedisConsumer, RedisProducer
from streamtools.transports.redis._wire import BINDING, BODY, entry_fields

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
POOL = 32  # streamtools' pool bound (streamtools.transports.redis._client.MAX_CONNECTIONS)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderCreated)


def reachable(timeout: float = 1.0) -> bool:
    """Whether the server of REDIS_URL accepts a TCP connection."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def unique(case: str) -> str:
    return f"st-bench-redis-{case}-{uuid.uuid4().hex[:10]}"


def _client(pool: int | None = None) -> redis.asyncio.Redis:
    if pool is None:
        return redis.asyncio.Redis.from_url(REDIS_URL)
    return redis.asyncio.Redis(
        connection_pool=redis.asyncio.BlockingConnectionPool.from_url(
            REDIS_URL, max_connections=pool
        )
    )


async def _delete(keys: list[str]) -> None:
    async with _client() as client:
        await client.delete(*keys, *(f"{key}.dlq" for key in keys))


# --- publish ---------------------------------------------------------------------------------


def publish_cases(count: int) -> list[Case]:
    msgs = orders(count)
    stream = unique("publish")
    state: dict[str, Any] = {}
    source = default_source()

    def fields(i: int) -> Any:
        # The entry streamtools writes: body and the CloudEvents fields.
        return entry_fields(_encoder.encode(msgs[i]), new_metadata("OrderCreated", source))

    async def setup() -> None:
        producer = RedisProducer(stream, message_type=OrderCreated, url=REDIS_URL)
        await producer.a_init()
        state["producer"] = producer
        state["plain"] = _client()
        state["pooled"] = _client(POOL)
        await state["plain"].ping()
        await state["pooled"].ping()

    async def teardown() -> None:
        if "producer" in state:
            await state.pop("producer").close()
        for name in ("plain", "pooled"):
            if name in state:
                await state.pop(name).aclose()
        await _delete([stream])

    async def finish(elapsed: float) -> tuple[int, float]:
        client = state["plain"]
        added = await client.xlen(stream)
        if added != count:
            raise RuntimeError(f"{added} of {count} entries added")
        await client.delete(stream)  # untimed: every run starts on an empty stream
        return count, elapsed

    async def st_concurrent() -> tuple[int, float]:
        producer: RedisProducer[OrderCreated] = state["producer"]
        started = time.perf_counter()
        await windows(count, WINDOW, lambda i: producer.send(msgs[i]))
        return await finish(time.perf_counter() - started)

    async def raw_pipelined() -> tuple[int, float]:
        client: redis.asyncio.Redis = state["plain"]
        started = time.perf_counter()
        for first in range(0, count, WINDOW):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(first, min(first + WINDOW, count)):
                    pipe.xadd(stream, fields(i))
                await pipe.execute()
        return await finish(time.perf_counter() - started)

    async def raw_gathered() -> tuple[int, float]:
        client: redis.asyncio.Redis = state["pooled"]

        async def send(i: int) -> None:
            await client.xadd(stream, fields(i))

        started = time.perf_counter()
        await windows(count, WINDOW, send)
        return await finish(time.perf_counter() - started)

    return [
        Case(
            f"redis publish, XADD replied: concurrent send, {WINDOW} in flight",
            Contender("streamtools gather(send)", st_concurrent),
            [
                Contender(f"redis-py pipeline({WINDOW}) XADD, same ce- fields", raw_pipelined),
                Contender(
                    f"redis-py gather({WINDOW}) XADD, pool of {POOL}, same ce- fields",
                    raw_gathered,
                ),
            ],
            setup=setup,
            teardown=teardown,
        )
    ]


# --- consume + ack ---------------------------------------------------------------------------


def consume_cases(count: int) -> list[Case]:
    streams = {name: unique(f"consume-{name}") for name in ("st", "raw", "fs")}
    groups = {name: f"{stream}-group" for name, stream in streams.items()}
    msgs = orders(count)
    source = default_source()
    state: dict[str, Any] = {}

    async def setup() -> None:
        client = state["admin"] = _client()
        for name, stream in streams.items():
            await client.xgroup_create(stream, groups[name], id="0", mkstream=True)

    async def teardown() -> None:
        if "admin" in state:
            await state.pop("admin").aclose()
        await _delete(list(streams.values()))

    async def fill(stream: str) -> None:
        # Untimed: the same messages, as a streamtools producer writes them.
        async with RedisProducer(stream, message_type=OrderCreated, url=REDIS_URL) as producer:
            for start in range(0, count, 1024):
                await producer.send_many(msgs[start : start + 1024])

    async def fill_faststream(stream: str) -> None:
        # FastStream reads only its own envelope: the same body and CloudEvents headers,
        # published by FastStream (untimed).
        from faststream.redis import RedisBroker

        broker = RedisBroker(REDIS_URL, logger=None)  # type: ignore[arg-type]
        await broker.connect()
        try:

            async def send(i: int) -> None:
                meta = new_metadata("OrderCreated", source)
                headers = BINDING.write(meta)
                await broker.publish(_encoder.encode(msgs[i]), stream=stream, headers=headers)

            await windows(count, 16, send)  # its pool has few connections
        finally:
            await broker.stop()

    async def check(name: str, who: str) -> None:
        client: redis.asyncio.Redis = state["admin"]
        stream, group = streams[name], groups[name]
        pending = 0
        for _ in range(100):  # the last batched XACK may still be on its way
            pending = (await client.xpending(stream, group))["pending"]
            if not pending:
                break
            await asyncio.sleep(0.1)
        if pending:
            if who == "streamtools":
                raise RuntimeError(f"{who} left {pending} entries unacked in {stream}")
            print(f"  warning: {who} left {pending} of {count} entries unacked in {stream}")
            ids = [
                p["message_id"] for p in await client.xpending_range(stream, group, "-", "+", count)
            ]
            if ids:
                await client.xack(stream, group, *ids)
        await client.xtrim(stream, maxlen=0)  # untimed: the next run reads the same size

    async def st_consume() -> tuple[int, float]:
        await fill(streams["st"])
        done = Done(count)
        consumer = RedisConsumer(
            streams["st"],
            message_type=OrderCreated,
            url=REDIS_URL,
            group=groups["st"],
            limits=Limits(max_in_flight=PREFETCH),
        )

        @consumer()
        async def handle(msg: OrderCreated) -> None:
            done.hit()

        await consumer.a_init()
        try:
            started = time.perf_counter()
            await consumer.start()
            await done.wait("streamtools consumer")
            elapsed = time.perf_counter() - started
        finally:
            await consumer.close()
        await check("st", "streamtools")
        return count, elapsed

    async def raw_consume() -> tuple[int, float]:
        stream, group = streams["raw"], groups["raw"]
        await fill(stream)
        done = Done(count)
        client = _client()
        try:
            await client.ping()

            async def loop() -> None:
                while True:
                    # RESP2 (redis-py's default): [[stream, [(id, fields), ...]]].
                    response: Any = await client.xreadgroup(
                        group, "raw", {stream: ">"}, count=PREFETCH, block=1000
                    )
                    for _stream, entries in response or ():
                        ids = []
                        for entry_id, fields in entries:
                            _decoder.decode(fields[BODY.encode()])
                            done.hit()
                            ids.append(entry_id)
                        if ids:
                            await client.xack(stream, group, *ids)

            started = time.perf_counter()
            task = asyncio.create_task(loop())
            try:
                await done.wait("redis-py XREADGROUP consumer")
                # The last batch's XACK: handled counts before its XACK, as in streamtools.
                elapsed = time.perf_counter() - started
                await asyncio.sleep(0.05)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        finally:
            await client.aclose()
        await check("raw", "redis-py")
        return count, elapsed

    async def fs_consume() -> tuple[int, float]:
        from fast_depends.msgspec import MsgSpecSerializer
        from faststream import AckPolicy
        from faststream.redis import RedisBroker, StreamSub

        stream, group = streams["fs"], groups["fs"]
        await fill_faststream(stream)
        done = Done(count)
        # logger=None: FastStream's default logs two lines per message.
        # (None turns it off at run time; its stub says LoggerProto.)
        broker = RedisBroker(
            REDIS_URL,
            logger=None,  # type: ignore[arg-type]
            serializer=MsgSpecSerializer(),
        )

        @broker.subscriber(
            stream=StreamSub(stream, group=group, consumer="fs", max_records=PREFETCH),
            ack_policy=AckPolicy.ACK,
        )
        async def handle(msg: OrderCreated) -> None:
            done.hit()

        await broker.connect()
        try:
            started = time.perf_counter()
            await broker.start()
            await done.wait("FastStream subscriber")
            elapsed = time.perf_counter() - started
        finally:
            await broker.stop()
        await check("fs", "FastStream")
        return count, elapsed

    return [
        Case(
            f"redis consume+ack: {count:,} queued, {PREFETCH} in flight",
            Contender("streamtools consumer (batched XACK)", st_consume),
            [
                Contender(f"redis-py XREADGROUP({PREFETCH}), XACK per batch", raw_consume),
                Contender("FastStream stream subscriber, group (msgspec)", fs_consume),
            ],
            setup=setup,
            teardown=teardown,
        )
    ]
