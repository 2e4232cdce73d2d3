"""NATS JetStream cases: streamtools vs raw nats-py (and FastStream) on the same server.

The server is `NATS_URL` (default nats://127.0.0.1:4222); benchmarks.transports skips these
cases when it does not answer. Every stream is named `st-bench-nats-<case>-<random>`, made
by a streamtools producer (file storage, work-queue retention, a two-minute duplicate
window: what streamtools declares) and deleted with its `.dlq` stream at the end of the case.

Publish: every side waits for each message's PubAck (JetStream stored it), 256 in flight.
streamtools gathers 256 `send`s per window; raw nats-py gathers 256 `js.publish(subject,
body, headers=...)`, each awaiting its PubAck, with the body the Struct encoded by msgspec
and the same headers streamtools sends: `ce-id`, `ce-type`, `ce-source`, `ce-specversion`,
`ce-time`, `Content-Type` and `Nats-Msg-Id` (the message id, for JetStream's duplicate
detection), built by streamtools' own metadata and header helpers, so the raw side pays no
more than streamtools for them. The stream is purged after every run (untimed). No target:
the ratios are reported.

Consume+ack: each contender has its own stream, prefilled (untimed, before every run) with
the same messages as a streamtools producer writes them; the clock runs from starting the
consumer (connected, durable declared) until it has handled them all. streamtools: a
`NATSConsumer` with `max_in_flight` 128, acking each settled message. Raw nats-py: a pull
subscription on a durable consumer (explicit acks), `fetch(128)`, decoding each message
into the Struct with msgspec and `await msg.ack()` for each, then the next fetch. FastStream:
`NatsBroker` with its msgspec serializer, a JetStream pull subscriber (`PullSub(128)`,
durable) on the existing stream (`JStream(declare=False)`), `AckPolicy.ACK` (acked after the
handler). After each run the stream must be empty (work-queue retention removes what was
acked): streamtools leaving messages fails the case, a contender's leftovers are a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from urllib.parse import urlsplit

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from benchmarks.common import PREFETCH, WINDOW, Done, orders, windows
from benchmarks.harness import Case, Contender
from examples.contracts import OrderCreated
from streamtools import Limits
from streamtools._codec import default_source, new_metadata
from streamtools.transports.nats import NATSConsumer, NATSProducer
from streamtools.transports.nats._streams import stream_name
from streamtools.transports.nats._wire import message_headers

NATS_URL = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderCreated)


def reachable(timeout: float = 1.0) -> bool:
    """Whether the first server of NATS_URL accepts a TCP connection."""
    parts = urlsplit(NATS_URL.split(",")[0].strip())
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), timeout):
            return True
    except OSError:
        return False


def unique(case: str) -> str:
    return f"st-bench-nats-{case}-{uuid.uuid4().hex[:10]}"


class _Admin:
    """A plain nats-py connection for declaring, purging, checking and deleting streams."""

    def __init__(self) -> None:
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None

    async def open(self) -> JetStreamContext:
        self.nc = await nats.connect(NATS_URL)
        self.js = self.nc.jetstream()
        return self.js

    def require(self) -> JetStreamContext:
        assert self.js is not None
        return self.js

    async def messages(self, queue: str) -> int:
        info = await self.require().stream_info(stream_name(queue))
        return info.state.messages

    async def purge(self, queue: str) -> None:
        await self.require().purge_stream(stream_name(queue))

    async def close(self, queues: list[str]) -> None:
        js = self.js
        if js is None:  # setup failed before connecting: connect just to delete
            with contextlib.suppress(Exception):
                js = await self.open()
        if js is not None:
            for queue in queues:
                for name in (queue, f"{queue}.dlq"):
                    with contextlib.suppress(nats.js.errors.NotFoundError):
                        await js.delete_stream(stream_name(name))
        if self.nc is not None:
            await self.nc.close()
        self.nc = self.js = None


async def _declare(queue: str) -> None:
    """The stream (and its .dlq) as streamtools declares them."""
    async with NATSProducer(queue, message_type=OrderCreated, servers=NATS_URL):
        pass


# --- publish ---------------------------------------------------------------------------------


def publish_cases(count: int) -> list[Case]:
    msgs = orders(count)
    queue = unique("publish")
    admin = _Admin()
    state: dict[str, object] = {}

    async def setup() -> None:
        await admin.open()
        await _declare(queue)
        producer = NATSProducer(queue, message_type=OrderCreated, servers=NATS_URL)
        await producer.a_init()
        state["producer"] = producer
        # The raw side: one nats-py connection and its JetStream context, as streamtools has.
        nc = await nats.connect(NATS_URL)
        state["nc"] = nc
        state["js"] = nc.jetstream(timeout=30.0)

    async def teardown() -> None:
        producer = state.pop("producer", None)
        if isinstance(producer, NATSProducer):
            await producer.close()
        nc = state.pop("nc", None)
        if isinstance(nc, NATS):
            await nc.close()
        await admin.close([queue])

    async def finish(elapsed: float) -> tuple[int, float]:
        stored = await admin.messages(queue)
        if stored != count:
            raise RuntimeError(f"{stored} of {count} messages stored")
        await admin.purge(queue)  # untimed: every run starts on an empty stream
        return count, elapsed

    async def st_concurrent() -> tuple[int, float]:
        producer = state["producer"]
        assert isinstance(producer, NATSProducer)
        started = time.perf_counter()
        await windows(count, WINDOW, lambda i: producer.send(msgs[i]))
        return await finish(time.perf_counter() - started)

    async def raw_gathered() -> tuple[int, float]:
        js = state["js"]
        assert isinstance(js, JetStreamContext)
        source = default_source()

        async def send(i: int) -> None:
            # The encoded Struct with the headers streamtools sends; awaits the PubAck.
            headers = message_headers(new_metadata("OrderCreated", source))
            await js.publish(queue, _encoder.encode(msgs[i]), headers=headers)

        started = time.perf_counter()
        await windows(count, WINDOW, send)
        return await finish(time.perf_counter() - started)

    return [
        Case(
            f"nats publish, PubAck awaited: concurrent send, {WINDOW} in flight",
            Contender("streamtools gather(send)", st_concurrent),
            [Contender(f"nats-py js.publish gather({WINDOW}), same ce- headers", raw_gathered)],
            setup=setup,
            teardown=teardown,
        )
    ]


# --- consume + ack ---------------------------------------------------------------------------


def consume_cases(count: int) -> list[Case]:
    queues = {name: unique(f"consume-{name}") for name in ("st", "raw", "fs")}
    msgs = orders(count)
    admin = _Admin()

    async def setup() -> None:
        await admin.open()
        for queue in queues.values():
            await _declare(queue)

    async def teardown() -> None:
        await admin.close(list(queues.values()))

    async def fill(queue: str) -> None:
        # Untimed: the same messages, as a streamtools producer writes them.
        async with NATSProducer(queue, message_type=OrderCreated, servers=NATS_URL) as producer:
            for start in range(0, count, 1024):
                await producer.send_many(msgs[start : start + 1024])

    async def check_empty(queue: str, who: str) -> None:
        # Acks are published without waiting for the server: poll a moment for the last.
        left = 0
        for _ in range(100):
            left = await admin.messages(queue)
            if not left:
                return
            await asyncio.sleep(0.1)
        if who == "streamtools":
            raise RuntimeError(f"{who} left {left} messages unacked in {queue}")
        print(f"  warning: {who} left {left} of {count} messages unacked in {queue}")
        await admin.purge(queue)

    async def st_consume() -> tuple[int, float]:
        queue = queues["st"]
        await fill(queue)
        done = Done(count)
        consumer = NATSConsumer(
            queue,
            message_type=OrderCreated,
            servers=NATS_URL,
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
        await check_empty(queue, "streamtools")
        return count, elapsed

    async def raw_consume() -> tuple[int, float]:
        queue = queues["raw"]
        await fill(queue)
        done = Done(count)
        nc = await nats.connect(NATS_URL)
        try:
            js = nc.jetstream()
            # A durable pull consumer (explicit acks, nats-py's defaults), made on first use.
            subscription = await js.pull_subscribe(queue, durable="raw", stream=stream_name(queue))

            async def loop() -> None:
                while True:
                    try:
                        batch = await subscription.fetch(PREFETCH, timeout=1.0)
                    except nats.errors.TimeoutError:
                        continue
                    for msg in batch:
                        _decoder.decode(msg.data)
                        await msg.ack()
                        done.hit()

            started = time.perf_counter()
            task = asyncio.create_task(loop())
            try:
                await done.wait("nats-py pull consumer")
                elapsed = time.perf_counter() - started
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            await nc.flush()  # the last acks out before the connection closes
        finally:
            await nc.close()
        await check_empty(queue, "nats-py")
        return count, elapsed

    async def fs_consume() -> tuple[int, float]:
        from fast_depends.msgspec import MsgSpecSerializer
        from faststream import AckPolicy
        from faststream.nats import JStream, NatsBroker, PullSub

        queue = queues["fs"]
        await fill(queue)
        done = Done(count)
        # logger=None: FastStream's default logs two lines per message.
        broker = NatsBroker(NATS_URL, logger=None, serializer=MsgSpecSerializer())

        @broker.subscriber(
            queue,
            stream=JStream(stream_name(queue), declare=False),  # the stream streamtools made
            pull_sub=PullSub(batch_size=PREFETCH, timeout=1.0),
            durable="fs",
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
        await check_empty(queue, "FastStream")
        return count, elapsed

    return [
        Case(
            f"nats consume+ack: {count:,} queued, {PREFETCH} in flight",
            Contender("streamtools consumer", st_consume),
            [
                Contender(f"nats-py pull fetch({PREFETCH}), ack each", raw_consume),
                Contender("FastStream JetStream pull subscriber (msgspec)", fs_consume),
            ],
            setup=setup,
            teardown=teardown,
        )
    ]
