"""`streamtools.testing.TestClient`: handlers in-process under any transport name, and the
same tests with `real=True` against memory and RabbitMQ."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import msgspec
import pytest

from streamtools import (
    CONSUMER_LOOPS,
    HTTP,
    KAFKA,
    MEMORY,
    PRODUCERS,
    RMQ,
    ConfigurationError,
    ConsumerFactory,
    ConsumerRunner,
    HandleMsgs,
    HandlerFactory,
    Middleware,
    Queue,
    RetryPolicy,
    current_metadata,
)
from streamtools.testing import DeadLetter, TestClient
from streamtools.transports.memory import MemoryConsumer, MemoryProducer
from tests.conftest import unique_name
from tests.support.typecheck import mypy_strict


def _class(cls: object) -> object:
    return cls


class Order(msgspec.Struct, kw_only=True):
    id: int
    quantity: Annotated[int, msgspec.Meta(ge=1)]


class Shipped(msgspec.Struct, kw_only=True):
    order_id: int
    parcels: int


def queues() -> tuple[Queue[Order], Queue[Shipped]]:
    """Fresh queue names per test (RabbitMQ keeps queues between runs)."""
    name = unique_name("st-testclient")
    return Queue(f"{name}.orders", Order), Queue(f"{name}.shipped", Shipped)


def shipping_service(
    queue_type: str, orders: Queue[Order], shipped: Queue[Shipped], **settings: Any
) -> ConsumerFactory:
    """A service as services are written: transport by name, producer from the registry."""
    consumers = ConsumerFactory(queue_type, **settings)
    producer = PRODUCERS[queue_type](shipped)

    @consumers.route(orders)
    async def on_order(order: Order) -> None:
        await producer.send(Shipped(order_id=order.id, parcels=order.quantity))

    return consumers


# -- in-process: any transport name, no broker ------------------------------------------------


@pytest.mark.parametrize("queue_type", [RMQ, HTTP, KAFKA, "nats", "redis", MEMORY, "amqp"])
async def test_handler_publishes_are_captured_and_typed(queue_type: str) -> None:
    orders, shipped = queues()
    async with TestClient() as client:
        await client.start(shipping_service(queue_type, orders, shipped))
        first = await client.send(orders, Order(id=1, quantity=2))
        await client.send(orders, Order(id=2, quantity=5))

        published: list[Shipped] = client.published(shipped)
        assert published == [Shipped(order_id=1, parcels=2), Shipped(order_id=2, parcels=5)]
        # By a name no contract is registered for: raw JSON.
        assert client.published(shipped.name) == [msgspec.to_builtins(m) for m in published]
        assert client.published(orders) == []  # the test's own sends are not "published"
        assert client.attempts(first) == 1
        [meta, _] = client.published_metadata(shipped)
        assert meta.type == "Shipped"
        assert client.dead_letters(orders) == []


async def test_the_transport_name_resolves_to_in_process_classes_and_back() -> None:
    from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer

    async with TestClient():
        producer_cls = _class(PRODUCERS[RMQ])
        assert producer_cls is _class(PRODUCERS["rabbitmq"]) is _class(PRODUCERS["RMQIOHandler"])
        assert producer_cls is not RabbitMQProducer
        assert _class(CONSUMER_LOOPS[RMQ]) is not RabbitMQConsumer
        # The named transport's settings are taken (and not used); others are refused.
        PRODUCERS[RMQ]("anything", url="amqp://nowhere:1/")
        with pytest.raises(ConfigurationError, match="takes no setting colour"):
            PRODUCERS[RMQ]("anything", colour="blue")
    assert _class(PRODUCERS[RMQ]) is RabbitMQProducer
    assert _class(CONSUMER_LOOPS[RMQ]) is RabbitMQConsumer


async def test_the_registry_is_restored_after_an_exception() -> None:
    from streamtools.transports.memory import MemoryProducer

    inside: list[object] = []

    async def fail() -> None:
        async with TestClient():
            inside.append(PRODUCERS[MEMORY])
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await fail()
    assert inside
    assert inside[0] is not MemoryProducer
    assert _class(PRODUCERS[MEMORY]) is MemoryProducer
    assert not PRODUCERS._overrides
    assert not CONSUMER_LOOPS._overrides


async def test_an_invalid_message_is_dead_lettered_with_its_reason() -> None:
    orders, shipped = queues()
    async with TestClient() as client:
        await client.start(shipping_service(RMQ, orders, shipped))
        broken = await client.send(orders, Order(id=1, quantity=0), validate=False)
        wrong_shape = await client.send(orders, b'{"id": "one"}')

        assert client.published(shipped) == []
        dead: list[DeadLetter] = client.dead_letters(orders)
        assert [d.meta.id for d in dead] == [broken, wrong_shape]
        assert all(d.reason == "invalid" for d in dead)
        assert "quantity" in dead[0].error
        assert "`$.id`" in dead[1].error or "id" in dead[1].error
        assert dead[0].queue == orders.name
        assert msgspec.json.decode(dead[0].body) == {"id": 1, "quantity": 0}
        assert client.attempts(broken) == 0


async def test_a_failing_handler_is_retried_then_dead_lettered() -> None:
    orders, _ = queues()
    seen: list[int] = []
    async with TestClient() as client:
        consumer = CONSUMER_LOOPS[RMQ](orders, retry=RetryPolicy(attempts=3, delay=30))

        @consumer()
        async def fail(order: Order) -> None:
            seen.append(current_metadata().attempt)
            raise ValueError(f"no stock for {order.id}")

        await client.start(consumer)
        loop = asyncio.get_running_loop()
        started = loop.time()
        message_id = await client.send(orders, Order(id=9, quantity=1))

        assert loop.time() - started < 5  # delay=30 is the service's; the client's is 0
        assert seen == [1, 2, 3, 4]
        assert client.attempts(message_id) == 4
        [dead] = client.dead_letters(orders)
        assert (dead.reason, dead.attempts) == ("max-retries", 4)
        assert (dead.error_type, dead.error) == ("ValueError", "no stock for 9")


async def test_a_handler_that_recovers_is_not_dead_lettered() -> None:
    orders, _ = queues()
    failures = 2
    async with TestClient(retry_delay=0.01) as client:
        consumer = CONSUMER_LOOPS[KAFKA](orders)

        @consumer()
        async def flaky(order: Order) -> None:
            nonlocal failures
            if failures:
                failures -= 1
                raise ConnectionError("try again")

        await client.start(consumer)
        message_id = await client.send(orders, Order(id=1, quantity=1))
        assert client.attempts(message_id) == 3
        assert client.dead_letters(orders) == []


async def test_send_waits_for_what_the_handlers_send_on() -> None:
    """A chain of two services in one client: `send` returns when the last one is done."""
    orders, shipped = queues()
    delivered: list[Shipped] = []
    async with TestClient() as client:
        courier = CONSUMER_LOOPS[RMQ](shipped)

        @courier()
        async def deliver(msg: Shipped) -> None:
            await asyncio.sleep(0.05)
            delivered.append(msg)

        await client.start(shipping_service(RMQ, orders, shipped), courier)
        await client.send(orders, Order(id=3, quantity=1))
        assert delivered == [Shipped(order_id=3, parcels=1)]


async def test_handler_factory_and_handle_msgs() -> None:
    orders, shipped = queues()
    handled: list[Any] = []
    async with TestClient() as client:
        factory = HandlerFactory(
            {"orders": {"name": orders.name, "consumer_loop": RMQ, "producer": HTTP}}
        )
        pair = factory["orders"]

        @pair.consumer()
        async def on_order(order: Any) -> None:
            handled.append(order)

        notify = HandleMsgs(shipped, RMQ)

        @notify.consumer()
        async def on_shipped(msg: Shipped) -> None:
            pass

        await client.start(factory, notify)
        await pair.producer.send({"id": 1, "quantity": 1})
        await client.settled()
        await client.send(shipped, Shipped(order_id=1, parcels=1))
        assert handled == [{"id": 1, "quantity": 1}]
        assert client.published(orders.name) == [{"id": 1, "quantity": 1}]


async def test_a_consumer_started_by_the_test_itself_is_tracked() -> None:
    orders, _ = queues()
    handled: list[Order] = []
    async with TestClient() as client:
        consumer = CONSUMER_LOOPS["nats"](orders)

        @consumer()
        async def on_order(order: Order) -> None:
            await asyncio.sleep(0.02)
            handled.append(order)

        await consumer.start()
        await client.send(orders, Order(id=1, quantity=1))
        assert handled == [Order(id=1, quantity=1)]


async def test_consumers_built_before_the_client_are_rebuilt_in_process() -> None:
    """A factory and a runner made at import time, over RabbitMQ: no broker is reached."""
    orders, shipped = queues()
    handled: list[int] = []
    factory = ConsumerFactory(RMQ, url="amqp://nowhere.invalid:1/")

    @factory.route(orders)
    async def on_order(order: Order) -> None:
        handled.append(order.id)

    courier = CONSUMER_LOOPS[RMQ](shipped, url="amqp://nowhere.invalid:1/")

    @courier()
    async def on_shipped(msg: Shipped) -> None:
        handled.append(-msg.order_id)

    class Count(Middleware):
        calls = 0

        async def consume(self, msg: Any, meta: Any, call_next: Any) -> Any:
            Count.calls += 1
            return await call_next(msg, meta)

    started: list[str] = []
    runner = ConsumerRunner([courier], middlewares=[Count()])

    async def on_startup() -> None:
        started.append("up")

    runner.on_startup.append(on_startup)
    async with TestClient() as client:
        await client.start(factory, runner)
        assert started == ["up"]
        await client.send(orders, Order(id=1, quantity=1))
        await client.send(shipped, Shipped(order_id=2, parcels=1))
        assert handled == [1, -2]
        assert Count.calls == 1  # the runner's middleware came along
    assert not courier.serving  # the original was never started


async def test_clients_are_isolated() -> None:
    orders, _ = queues()
    handled: list[int] = []

    def consumer() -> Any:
        c = CONSUMER_LOOPS[MEMORY](orders)

        @c()
        async def on_order(order: Order) -> None:
            handled.append(order.id)

        return c

    async with TestClient() as first:
        await first.send(orders, Order(id=1, quantity=1))  # no consumer: it stays queued
    async with TestClient() as second:
        await second.start(consumer())
        await second.send(orders, Order(id=2, quantity=1))
        async with TestClient() as inner:  # nested: its own broker too
            await inner.send(orders, Order(id=3, quantity=1))
            producer = PRODUCERS[MEMORY](orders)
            await producer.send(Order(id=4, quantity=1))
            assert inner.published(orders) == [Order(id=4, quantity=1)]
            assert second.published(orders) == []
        await second.send(orders, Order(id=5, quantity=1))
    assert handled == [2, 5]


async def test_a_consumer_built_in_an_earlier_client_is_rebuilt_in_the_next() -> None:
    orders, _ = queues()
    handled: list[int] = []
    async with TestClient() as first:
        consumer = CONSUMER_LOOPS[RMQ](orders)

        @consumer()
        async def on_order(order: Order) -> None:
            handled.append(order.id)

    async with TestClient() as second:
        [rebuilt] = await second.start(consumer)
        assert rebuilt is not consumer
        message_id = await second.send(orders, Order(id=1, quantity=1))
        assert second.attempts(message_id) == 1
    assert first.attempts(message_id) == 0
    assert handled == [1]


async def test_a_batch_handler_in_process() -> None:
    from streamtools import Batch

    orders, _ = queues()
    batches: list[list[int]] = []
    async with TestClient() as client:
        consumer = CONSUMER_LOOPS[RMQ](orders)

        @consumer(batch=Batch(max_size=2, max_wait=0.05))
        async def on_orders(batch: list[Order]) -> None:
            batches.append([order.id for order in batch])

        await client.start(consumer)
        sends = [client.send(orders, Order(id=i, quantity=1)) for i in range(3)]
        await asyncio.gather(*sends)
        assert sorted(i for batch in batches for i in batch) == [0, 1, 2]
        assert max(len(batch) for batch in batches) == 2


async def test_send_times_out_on_a_stuck_handler() -> None:
    orders, _ = queues()
    release = asyncio.Event()
    async with TestClient(timeout=0.2) as client:
        consumer = CONSUMER_LOOPS[RMQ](orders, shutdown_timeout=1)

        @consumer()
        async def stuck(order: Order) -> None:
            await release.wait()

        await client.start(consumer)
        with pytest.raises(TimeoutError, match=r"not settled within 0\.2 s"):
            await client.send(orders, Order(id=1, quantity=1))
        release.set()


async def test_the_client_must_be_open_and_is_opened_once() -> None:
    client = TestClient()
    orders, _ = queues()
    with pytest.raises(ConfigurationError, match="not open"):
        await client.send(orders, Order(id=1, quantity=1))
    async with client:
        pass
    with pytest.raises(ConfigurationError, match="not open"):
        await client.send(orders, Order(id=1, quantity=1))
    with pytest.raises(ConfigurationError, match="opened once"):
        await client.__aenter__()


def test_import_streamtools_does_not_import_the_testing_module() -> None:
    import subprocess
    import sys

    code = "import sys, streamtools; print('streamtools.testing' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


# -- real=True: the same test against the transport itself ---------------------------------


async def run_shipping(client: TestClient, queue_type: str, **settings: Any) -> None:
    """One test body for in-process and real runs: handled, invalid, failing."""
    orders, shipped = queues()
    attempts: list[int] = []
    consumers = ConsumerFactory(queue_type, retry=RetryPolicy(attempts=1, delay=0.05), **settings)
    producer = PRODUCERS[queue_type](shipped, **settings)
    # In-process, or the transport itself with real=True.
    assert isinstance(producer, MemoryProducer) == (not client.real or queue_type == MEMORY)

    @consumers.route(orders)
    async def on_order(order: Order) -> None:
        if order.id < 0:
            attempts.append(current_metadata().attempt)
            raise ValueError("negative id")
        await producer.send(Shipped(order_id=order.id, parcels=order.quantity))

    try:
        await client.start(consumers)
        await client.send(orders, Order(id=1, quantity=2))
        assert client.published(shipped) == [Shipped(order_id=1, parcels=2)]

        invalid = await client.send(orders, Order(id=2, quantity=0), validate=False)
        failing = await client.send(orders, Order(id=-1, quantity=1))
        assert attempts == [1, 2]
        assert client.attempts(failing) == 2
        dead = {d.meta.id: d for d in client.dead_letters(orders)}
        assert dead.keys() == {invalid, failing}
        assert dead[invalid].reason == "invalid"
        assert (dead[failing].reason, dead[failing].attempts) == ("max-retries", 2)
        assert client.published(shipped) == [Shipped(order_id=1, parcels=2)]
    finally:
        if client.real and queue_type == RMQ:
            from tests.support.queues import delete_queues

            url = settings.get("url")
            assert isinstance(url, str)
            await delete_queues(url, [orders.name, shipped.name])


@pytest.fixture
def rmq_env(rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RMQ_URL", rabbitmq_url)
    return rabbitmq_url


async def test_in_process_run() -> None:
    async with TestClient() as client:
        await run_shipping(client, RMQ, url="amqp://nowhere.invalid:1/")


async def test_real_memory_run() -> None:
    async with TestClient(real=True) as client:
        assert issubclass(PRODUCERS[MEMORY], MemoryProducer)  # type: ignore[arg-type]
        await run_shipping(client, MEMORY)


async def test_real_rabbitmq_run(rmq_env: str) -> None:
    async with TestClient(real=True, timeout=30) as client:
        await run_shipping(client, RMQ, url=rmq_env)


async def test_real_memory_leaves_memory_consumers_real() -> None:
    orders, _ = queues()
    async with TestClient(real=True) as client:
        consumer = CONSUMER_LOOPS[MEMORY](orders)
        assert isinstance(consumer, MemoryConsumer)

        @consumer()
        async def on_order(order: Order) -> None:
            pass

        await client.start(consumer)
        message_id = await client.send(orders, Order(id=1, quantity=1))
        assert client.attempts(message_id) == 1


def test_published_is_typed_by_the_queue(tmp_path: Path) -> None:
    case = tmp_path / "case_published.py"
    case.write_text(
        "from examples.contracts import BILLING_INVOICED, InvoiceIssued, OrderCreated\n"
        "from streamtools.testing import TestClient\n"
        "def check(client: TestClient) -> None:\n"
        "    reveal_type(client.published(BILLING_INVOICED))\n"
        "    ok: list[InvoiceIssued] = client.published(BILLING_INVOICED)\n"
        "    wrong: list[OrderCreated] = client.published(BILLING_INVOICED)\n"
    )
    stdout, _ = mypy_strict(case)
    lines = stdout.splitlines()
    assert any(
        ":4: note: Revealed type is" in line
        and "list[examples.contracts" in line
        and "InvoiceIssued]" in line
        for line in lines
    ), stdout
    assert [line.split(":")[1] for line in lines if ": error:" in line] == ["6"], stdout
