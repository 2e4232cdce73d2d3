"""Middleware on the memory transport: order, failures, short-circuits, factories and runners.

The conformance suite runs a middleware on every transport; these pin the rules once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import pytest

from streamtools import (
    ConfigurationError,
    ConsumeNext,
    ConsumerFactory,
    ConsumerRunner,
    Limits,
    Metadata,
    Middleware,
    PublishNext,
    Queue,
    RetryPolicy,
    ValidationError,
    current_metadata,
)
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.conftest import eventually, unique_name


class Order(msgspec.Struct, frozen=True):
    sku: str
    quantity: int = msgspec.field(default=1)
    tenant: str = ""


class Reply(msgspec.Struct):
    total: int


class Recording(Middleware):
    """Records where it ran, in a shared journal, and goes on."""

    def __init__(self, name: str, journal: list[str]) -> None:
        self.name = name
        self.journal = journal

    async def publish(
        self, msg: Any, meta: Metadata, options: Mapping[str, object], call_next: PublishNext
    ) -> Any:
        self.journal.append(f"{self.name} publish in")
        result = await call_next(msg, meta, options)
        self.journal.append(f"{self.name} publish out")
        return result

    async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
        self.journal.append(f"{self.name} consume in")
        result = await call_next(msg, meta)
        self.journal.append(f"{self.name} consume out")
        return result


def queue() -> Queue[Order]:
    return Queue(unique_name("st-mw"), Order)


async def test_order_is_the_list_order_outermost_first() -> None:
    broker, q = MemoryBroker(), queue()
    journal: list[str] = []
    consumer = MemoryConsumer(
        q, broker=broker, middlewares=[Recording("a", journal), Recording("b", journal)]
    )
    done = asyncio.Event()

    @consumer()
    async def handle(msg: Order) -> None:
        journal.append("handler")
        done.set()

    producer = MemoryProducer(
        q, broker=broker, middlewares=[Recording("x", journal), Recording("y", journal)]
    )
    await consumer.start()
    try:
        await producer.send(Order("ABC"))
        await asyncio.wait_for(done.wait(), 10)
        await eventually(lambda: len(journal) == 9, "the consume chain to unwind")
    finally:
        await consumer.close()
    assert journal == [
        "x publish in",
        "y publish in",
        "y publish out",
        "x publish out",
        "a consume in",
        "b consume in",
        "handler",
        "b consume out",
        "a consume out",
    ]


async def test_a_consume_middleware_sees_the_decoded_message_and_its_metadata() -> None:
    broker, q = MemoryBroker(), queue()
    seen: list[tuple[Order, str, str]] = []

    class Look(Middleware):
        async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
            seen.append((msg, meta.id, current_metadata().id))
            return await call_next(msg, meta)

    consumer = MemoryConsumer(q, broker=broker, middlewares=[Look()])

    @consumer()
    async def handle(msg: Order) -> None:
        pass

    await consumer.start()
    try:
        sent = await MemoryProducer(q, broker=broker).send(Order("ABC", 2))
        await eventually(lambda: bool(seen), "the middleware")
    finally:
        await consumer.close()
    assert seen == [(Order("ABC", 2), sent, sent)]


async def test_a_raising_consume_middleware_is_a_handler_failure_retried_then_dead_lettered() -> (
    None
):
    broker, q = MemoryBroker(), queue()
    calls: list[int] = []

    class Refuse(Middleware):
        async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
            calls.append(meta.attempt)
            raise PermissionError("tenant not allowed")

    consumer = MemoryConsumer(
        q,
        broker=broker,
        retry=RetryPolicy(attempts=2, delay=0.0),
        middlewares=[Refuse()],
    )
    handled: list[Order] = []

    @consumer()
    async def handle(msg: Order) -> None:
        handled.append(msg)

    dead: list[Metadata] = []
    dlq = MemoryConsumer(Queue(f"{q.name}.dlq", Order), broker=broker)

    @dlq()
    async def collect(msg: Order) -> None:
        dead.append(current_metadata())

    await consumer.start()
    await dlq.start()
    try:
        await MemoryProducer(q, broker=broker).send(Order("ABC"))
        await eventually(lambda: bool(dead), "the dead letter")
    finally:
        await consumer.close()
        await dlq.close()
    assert calls == [1, 2, 3]
    assert not handled
    assert dead[0].headers["x-death-reason"] == "max-retries"
    assert dead[0].headers["x-error-type"] == "PermissionError"


async def test_returning_without_call_next_settles_the_message_as_handled() -> None:
    broker, q = MemoryBroker(), queue()
    skipped: list[str] = []

    class SkipTest(Middleware):
        async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
            if msg.sku.startswith("TEST"):
                skipped.append(msg.sku)
                return None  # settled: neither retried nor dead-lettered
            return await call_next(msg, meta)

    consumer = MemoryConsumer(q, broker=broker, middlewares=[SkipTest()])
    handled: list[str] = []

    @consumer()
    async def handle(msg: Order) -> None:
        handled.append(msg.sku)

    await consumer.start()
    try:
        producer = MemoryProducer(q, broker=broker)
        await producer.send(Order("TEST-1"))
        await producer.send(Order("REAL-1"))
        await eventually(lambda: handled == ["REAL-1"], "the real order")
    finally:
        await consumer.close()
    assert skipped == ["TEST-1"]
    assert broker.depth(q.name) == 0
    assert broker.depth(f"{q.name}.dlq") == 0


async def test_a_publish_middleware_may_change_the_message_which_is_then_validated() -> None:
    broker = MemoryBroker()
    q: Queue[Order] = queue()

    class Stamp(Middleware):
        def __init__(self, tenant: str) -> None:
            self.tenant = tenant

        async def publish(
            self, msg: Any, meta: Metadata, options: Mapping[str, object], call_next: PublishNext
        ) -> Any:
            return await call_next(msg_with(msg, self.tenant), meta, options)

    def msg_with(msg: Order, tenant: str) -> Order:
        return msgspec.structs.replace(msg, tenant=tenant)

    consumer = MemoryConsumer(q, broker=broker)
    got: list[Order] = []

    @consumer()
    async def handle(msg: Order) -> None:
        got.append(msg)

    await consumer.start()
    try:
        sent = await MemoryProducer(q, broker=broker, middlewares=[Stamp("acme")]).send(
            Order("ABC")
        )
        await eventually(lambda: bool(got), "the stamped order")
    finally:
        await consumer.close()
    assert isinstance(sent, str)
    assert got == [Order("ABC", tenant="acme")]


class Limited(msgspec.Struct, frozen=True):
    sku: str
    quantity: Annotated[int, msgspec.Meta(ge=1)] = 1


async def test_what_a_publish_middleware_passes_on_is_validated() -> None:
    class Breaks(Middleware):
        async def publish(
            self, msg: Any, meta: Metadata, options: Mapping[str, object], call_next: PublishNext
        ) -> Any:
            return await call_next(msgspec.structs.replace(msg, quantity=-1), meta, options)

    q: Queue[Limited] = Queue(unique_name("st-mw"), Limited)
    producer = MemoryProducer(q, broker=MemoryBroker(), middlewares=[Breaks()])
    with pytest.raises(ValidationError, match="quantity"):
        await producer.send(Limited(sku="ABC", quantity=1))


async def test_request_passes_through_both_chains() -> None:
    broker, q = MemoryBroker(), queue()
    journal: list[str] = []
    consumer = MemoryConsumer(q, broker=broker, middlewares=[Recording("c", journal)])

    @consumer()
    async def handle(msg: Order) -> Reply:
        return Reply(total=msg.quantity * 10)

    await consumer.start()
    try:
        producer = MemoryProducer(q, broker=broker, middlewares=[Recording("p", journal)])
        reply = await producer.request(Order("ABC", 3), reply_type=Reply, timeout=10)
    finally:
        await consumer.close()
    assert reply == Reply(total=30)
    assert journal == [
        "p publish in",
        "c consume in",
        "c consume out",
        "p publish out",
    ]


async def test_send_many_runs_each_message_through_the_publish_middlewares() -> None:
    broker, q = MemoryBroker(), queue()
    journal: list[str] = []
    producer = MemoryProducer(q, broker=broker, middlewares=[Recording("p", journal)])
    ids = await producer.send_many([Order("A"), Order("B"), Order("C")])
    assert len(set(ids)) == 3
    assert journal.count("p publish in") == 3
    assert broker.depth(q.name) == 3


async def test_factory_and_runner_middlewares_wrap_each_consumers_own() -> None:
    journal: list[str] = []
    broker = MemoryBroker()
    q = queue()
    factory = ConsumerFactory("memory", middlewares=[Recording("factory", journal)], broker=broker)
    done = asyncio.Event()

    @factory.route(q.name, message_type=Order)
    async def handle(msg: Order) -> None:
        journal.append("handler")
        done.set()

    runner = ConsumerRunner(
        factory.instances, middlewares=[Recording("runner", journal)], metrics=False
    )
    task = asyncio.create_task(runner.serve())
    try:
        await eventually(lambda: all(c.serving for c in runner.consumers), "serving")
        await MemoryProducer(q, broker=broker).send(Order("ABC"))
        await asyncio.wait_for(done.wait(), 10)
        await eventually(lambda: len(journal) == 5, "the chain to unwind")
    finally:
        runner.stop()
        await task
    assert journal == [
        "runner consume in",
        "factory consume in",
        "handler",
        "factory consume out",
        "runner consume out",
    ]


def test_a_middleware_must_be_a_middleware() -> None:
    with pytest.raises(ConfigurationError, match=r"is not a streamtools\.Middleware"):
        MemoryConsumer("orders", middlewares=[object()])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="must be a list of Middleware"):
        MemoryProducer("orders", middlewares=Middleware())  # type: ignore[arg-type]


async def test_without_middleware_the_direct_path_is_kept() -> None:
    producer = MemoryProducer(queue(), broker=MemoryBroker(), middlewares=[Middleware()])
    consumer = MemoryConsumer(queue(), middlewares=[Middleware()], limits=Limits())
    # A middleware that overrides nothing builds no chain: no cost per message.
    assert producer._publish is None
    assert consumer.middlewares
    assert not consumer._chains
