"""RabbitMQ cases: streamtools vs raw aio-pika (and FastStream) on the same broker.

Equal guarantees everywhere: persistent messages, publisher confirms awaited, mandatory
publishes, quorum queues declared by streamtools (every contender uses queues with the same
arguments), consumers that ack only after the handler has seen the decoded Struct. The one
exception is the consume case's ceiling: a raw aiormq consumer with no_ack=True that only
counts, i.e. the broker's own delivery rate on the same kind of queue (issue #14's moonshot).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.abc
import msgspec

from benchmarks.common import (
    PREFETCH,
    RMQ_URL,
    WINDOW,
    Done,
    delete_queues,
    depth,
    orders,
    percentile,
    prefill,
    unique,
    windows,
    wire,
)
from benchmarks.harness import (
    RMQ_CONSUME,
    RMQ_CONSUME_NO_ACK,
    RMQ_LATENCY,
    RMQ_PUBLISH_CONCURRENT,
    RMQ_PUBLISH_MANY,
    RMQ_SEQUENTIAL,
    Case,
    Contender,
    Workload,
)
from examples.contracts import OrderCreated
from streamtools import Limits
from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(OrderCreated)


def _raw_message(order: OrderCreated) -> aio_pika.Message:
    # What a careful aio-pika user publishes: the encoded Struct, persistent, typed.
    return aio_pika.Message(
        _encoder.encode(order),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class _Publishers:
    """A streamtools producer and a raw aio-pika confirm channel on one queue."""

    def __init__(self, case: str) -> None:
        self.queue = unique(case)
        self.producer: RabbitMQProducer[OrderCreated] | None = None
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self.admin: aio_pika.abc.AbstractQueue | None = None

    async def setup(self) -> None:
        # The streamtools producer declares the (quorum) queue both publish to.
        self.producer = RabbitMQProducer(self.queue, message_type=OrderCreated, url=RMQ_URL)
        await self.producer.a_init()
        self.connection = await aio_pika.connect_robust(RMQ_URL)
        channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
        self.exchange = channel.default_exchange
        admin = await self.connection.channel()
        self.admin = await admin.declare_queue(self.queue, passive=True)

    async def teardown(self) -> None:
        if self.producer is not None:
            await self.producer.close()
        if self.connection is not None:
            await self.connection.close()
        await delete_queues([self.queue])

    async def purge(self) -> None:
        # Untimed: every run starts on an empty queue.
        assert self.admin is not None
        await self.admin.purge()

    async def raw_publish(self, order: OrderCreated) -> None:
        assert self.exchange is not None
        await self.exchange.publish(_raw_message(order), self.queue, mandatory=True)


def publish_cases(count_seq: int, count_batch: int) -> list[Case]:
    msgs = orders(max(count_seq, count_batch))
    seq = _Publishers("seq")

    async def st_sequential() -> tuple[int, float]:
        assert seq.producer is not None
        started = time.perf_counter()
        for order in msgs[:count_seq]:
            await seq.producer.send(order)
        elapsed = time.perf_counter() - started
        await seq.purge()
        return count_seq, elapsed

    async def raw_sequential() -> tuple[int, float]:
        started = time.perf_counter()
        for order in msgs[:count_seq]:
            await seq.raw_publish(order)
        elapsed = time.perf_counter() - started
        await seq.purge()
        return count_seq, elapsed

    batch = _Publishers("batch")

    async def st_concurrent() -> tuple[int, float]:
        producer = batch.producer
        assert producer is not None
        started = time.perf_counter()
        await windows(count_batch, WINDOW, lambda i: producer.send(msgs[i]))
        elapsed = time.perf_counter() - started
        await batch.purge()
        return count_batch, elapsed

    many = _Publishers("many")

    async def st_send_many() -> tuple[int, float]:
        producer = many.producer
        assert producer is not None
        started = time.perf_counter()
        for start in range(0, count_batch, WINDOW):
            await producer.send_many(msgs[start : start + WINDOW])
        elapsed = time.perf_counter() - started
        await many.purge()
        return count_batch, elapsed

    def raw_pipelined(publishers: _Publishers) -> Workload:
        async def run() -> tuple[int, float]:
            started = time.perf_counter()
            await windows(count_batch, WINDOW, lambda i: publishers.raw_publish(msgs[i]))
            elapsed = time.perf_counter() - started
            await publishers.purge()
            return count_batch, elapsed

        return run

    return [
        Case(
            "rabbitmq publish: sequential awaited send",
            Contender("streamtools send", st_sequential),
            [Contender("aio-pika publish, confirms", raw_sequential, target=RMQ_SEQUENTIAL)],
            setup=seq.setup,
            teardown=seq.teardown,
        ),
        Case(
            f"rabbitmq publish: concurrent send, {WINDOW} in flight",
            Contender("streamtools gather(send)", st_concurrent),
            [
                Contender(
                    f"aio-pika gather({WINDOW}) confirms",
                    raw_pipelined(batch),
                    target=RMQ_PUBLISH_CONCURRENT,
                )
            ],
            setup=batch.setup,
            teardown=batch.teardown,
        ),
        Case(
            f"rabbitmq publish: send_many({WINDOW})",
            Contender("streamtools send_many", st_send_many),
            [
                Contender(
                    f"aio-pika gather({WINDOW}) confirms",
                    raw_pipelined(many),
                    target=RMQ_PUBLISH_MANY,
                )
            ],
            setup=many.setup,
            teardown=many.teardown,
        ),
    ]


# --- consume + ack ---------------------------------------------------------------------------


def consume_cases(count: int) -> list[Case]:
    queues = {name: unique(f"consume-{name}") for name in ("st", "raw", "noack", "fs")}
    prepared = wire(orders(count))
    state: dict[str, Any] = {}

    async def setup() -> None:
        for queue in queues.values():
            producer = RabbitMQProducer(queue, message_type=OrderCreated, url=RMQ_URL)
            await producer.a_init()  # declares the quorum queue and its .dlq, as in production
            await producer.close()
        connection = await aio_pika.connect_robust(RMQ_URL)
        channel = await connection.channel(publisher_confirms=True)
        state["admin"] = connection
        state["fill"] = await channel.get_underlay_channel()

        async def purge(queue: str) -> None:
            purger = await connection.channel()
            await (await purger.declare_queue(queue, passive=True)).purge()
            await purger.close()

        state["admin_queue"] = purge

    async def teardown() -> None:
        if "admin" in state:
            await state["admin"].close()
        await delete_queues(list(queues.values()))

    async def fill(queue: str) -> None:
        await prefill(state["fill"], queue, prepared)

    async def check_empty(queue: str, who: str) -> None:
        # Unacked deliveries went back to the queue on close; a quorum queue applies the
        # last acks a moment after the client sent them, hence the short poll.
        left = 0
        for _ in range(100):
            left = await depth(state["admin"], queue)
            if not left:
                return
            await asyncio.sleep(0.1)
        if who == "streamtools":
            raise RuntimeError(f"{who} left {left} messages unacked in {queue}")
        # Seen (rarely) with aio-pika on this broker; not ours to fail the run for.
        print(f"  warning: {who} left {left} of {count} messages unacked in {queue}")
        await state["admin_queue"](queue)

    async def st_consume() -> tuple[int, float]:
        queue = queues["st"]
        await fill(queue)
        done = Done(count)
        consumer = RabbitMQConsumer(
            queue, message_type=OrderCreated, url=RMQ_URL, limits=Limits(max_in_flight=PREFETCH)
        )

        @consumer()
        async def handle(msg: OrderCreated) -> None:
            done.hit()

        await consumer.a_init()
        started = time.perf_counter()
        await consumer.start()
        await done.wait("streamtools consumer")
        elapsed = time.perf_counter() - started
        await consumer.close()
        await check_empty(queue, "streamtools")
        return count, elapsed

    async def raw_consume() -> tuple[int, float]:
        queue = queues["raw"]
        await fill(queue)
        done = Done(count)
        connection = await aio_pika.connect_robust(RMQ_URL)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=PREFETCH)
            amqp_queue = await channel.declare_queue(queue, passive=True)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                _decoder.decode(message.body)
                await message.ack()
                done.hit()

            started = time.perf_counter()
            await amqp_queue.consume(on_message)
            await done.wait("aio-pika consumer")
            elapsed = time.perf_counter() - started
        finally:
            await connection.close()
        await check_empty(queue, "aio-pika")
        return count, elapsed

    async def no_ack_consume() -> tuple[int, float]:
        # The broker's own delivery rate on the same kind of queue: no acks (so no prefetch
        # limit either), aiormq's consumer on the bare channel, a callback that only counts.
        # No client can consume with acks faster than this; the moonshot target is 0.9x.
        queue = queues["noack"]
        await fill(queue)
        done = Done(count)
        connection = await aio_pika.connect_robust(RMQ_URL)
        try:
            channel = await (await connection.channel()).get_underlay_channel()

            async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                done.hit()

            started = time.perf_counter()
            await channel.basic_consume(queue, on_message, no_ack=True)
            await done.wait("aiormq no-ack consumer")
            elapsed = time.perf_counter() - started
        finally:
            await connection.close()
        await check_empty(queue, "aiormq no-ack")
        return count, elapsed

    async def fs_consume() -> tuple[int, float]:
        from fast_depends.msgspec import MsgSpecSerializer
        from faststream import AckPolicy
        from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

        queue = queues["fs"]
        await fill(queue)
        done = Done(count)
        # logger=None: FastStream's default logs two lines per message, which would
        # measure the terminal rather than the library.
        broker = RabbitBroker(RMQ_URL, logger=None, serializer=MsgSpecSerializer())

        @broker.subscriber(
            RabbitQueue(queue, declare=False),  # passive: the quorum queue streamtools declared
            channel=Channel(prefetch_count=PREFETCH),
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
            f"rabbitmq consume+ack: {count:,} queued, prefetch {PREFETCH}",
            Contender("streamtools consumer", st_consume),
            [
                Contender("aio-pika consumer, ack each", raw_consume, target=RMQ_CONSUME),
                Contender(
                    "aiormq no_ack=True, counting only (broker's rate)",
                    no_ack_consume,
                    target=RMQ_CONSUME_NO_ACK,
                ),
                Contender("FastStream subscriber (msgspec)", fs_consume, goal=2.0),
            ],
            setup=setup,
            teardown=teardown,
        )
    ]


# --- end-to-end latency ----------------------------------------------------------------------


def latency_cases(count: int) -> list[Case]:
    msgs = orders(count)
    queues = {"st": unique("latency-st"), "raw": unique("latency-raw")}
    p99: dict[str, list[float]] = {"st": [], "raw": []}

    async def measure(send: Any, arrivals: asyncio.Queue[float], who: str) -> tuple[int, float]:
        latencies = []
        for order in msgs:
            started = time.perf_counter()
            await send(order)
            async with asyncio.timeout(30):
                seen = await arrivals.get()
            latencies.append(seen - started)
        p99[who].append(percentile(latencies, 99))
        return 1, percentile(latencies, 50)

    async def st_latency() -> tuple[int, float]:
        arrivals: asyncio.Queue[float] = asyncio.Queue()
        producer = RabbitMQProducer(queues["st"], message_type=OrderCreated, url=RMQ_URL)
        consumer = RabbitMQConsumer(
            queues["st"],
            message_type=OrderCreated,
            url=RMQ_URL,
            limits=Limits(max_in_flight=PREFETCH),
        )

        @consumer()
        async def handle(msg: OrderCreated) -> None:
            arrivals.put_nowait(time.perf_counter())

        async with producer:
            await consumer.start()
            try:
                return await measure(producer.send, arrivals, "st")
            finally:
                await consumer.close()

    async def raw_latency() -> tuple[int, float]:
        arrivals: asyncio.Queue[float] = asyncio.Queue()
        # One connection, two channels: what the streamtools producer and consumer of one
        # process share (a connection per process). Two services would use two connections,
        # which costs both sides alike (~300 us here).
        publisher = consumer = await aio_pika.connect_robust(RMQ_URL)
        try:
            publish_channel = await publisher.channel(publisher_confirms=True)
            consume_channel = await consumer.channel()
            await consume_channel.set_qos(prefetch_count=PREFETCH)
            amqp_queue = await consume_channel.declare_queue(queues["raw"], passive=True)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                _decoder.decode(message.body)
                arrivals.put_nowait(time.perf_counter())
                await message.ack()

            await amqp_queue.consume(on_message)

            async def send(order: OrderCreated) -> None:
                await publish_channel.default_exchange.publish(
                    _raw_message(order), queues["raw"], mandatory=True
                )

            return await measure(send, arrivals, "raw")
        finally:
            await publisher.close()

    async def setup() -> None:
        producer = RabbitMQProducer(queues["raw"], message_type=OrderCreated, url=RMQ_URL)
        await producer.a_init()  # the raw contender's queue: quorum, like streamtools'
        await producer.close()

    async def teardown() -> None:
        await delete_queues(list(queues.values()))

    ours = Contender("streamtools send -> handler", st_latency)
    theirs = Contender("aio-pika publish -> consumer", raw_latency, target=RMQ_LATENCY)
    # The p99 line reports the same runs as the p50 line: it has no runs of its own.
    ours_p99 = Contender(ours.name, st_latency, rates=p99["st"])
    theirs_p99 = Contender(theirs.name, raw_latency, rates=p99["raw"])
    return [
        Case(
            f"rabbitmq latency p50, 1 in flight ({count} msgs)",
            ours,
            [theirs],
            unit="s",
            lower_is_better=True,
            setup=setup,
            teardown=teardown,
        ),
        Case(
            "rabbitmq latency p99 (same runs)",
            ours_p99,
            [theirs_p99],
            unit="s",
            lower_is_better=True,
            rounds=0,
        ),
    ]
