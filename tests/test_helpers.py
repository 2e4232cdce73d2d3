"""HandleMsgs, HandlerFactory, ConsumerFactory and ConsumerRunner on the memory transport.

The same helpers over HTTP and RabbitMQ, and in separate processes, are in test_services.py.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from examples.contracts import ORDERS_CREATED, Customer, LineItem, OrderCreated
from streamtools import (
    CONSUMER_LOOPS,
    MEMORY,
    PRODUCERS,
    ConfigurationError,
    ConsumerFactory,
    ConsumerRunner,
    HandleMsgs,
    HandlerFactory,
    Queue,
    current_metadata,
)
from tests.conftest import eventually, unique_name


class Ping(msgspec.Struct, kw_only=True):
    n: int


async def test_handle_msgs_pairs_a_consumer_and_producer_on_one_queue() -> None:
    pair = HandleMsgs(Queue(unique_name(), Ping), MEMORY)
    assert pair.consumer.queue is pair.producer.queue
    got: list[int] = []

    @pair.consumer()
    async def handle(msg: Ping) -> None:
        got.append(msg.n)

    await pair.a_init()
    await pair.consumer.start()
    await pair.producer.send(Ping(n=1))
    await eventually(lambda: got == [1], "the message")
    await pair.close()


def test_handle_msgs_needs_transports() -> None:
    with pytest.raises(ConfigurationError, match="needs queue_type="):
        HandleMsgs("queue_1")


async def test_handler_factory_takes_the_seed_dict_shape() -> None:
    names = {key: unique_name() for key in ("queue_1", "queue_2")}
    factory = HandlerFactory(
        {
            "queue_1": {"name": names["queue_1"], "consumer_loop": MEMORY, "producer": MEMORY},
            "queue_2": {"name": names["queue_2"], "consumer_loop": "memory", "producer": "memory"},
        }
    )
    assert set(factory) == {"queue_1", "queue_2"}
    got: dict[str, list[object]] = {"queue_1": [], "queue_2": []}
    for key in factory:

        @factory[key].consumer()
        async def handle(msg: Any, key: str = key) -> None:
            got[key].append(msg)

        await factory[key].consumer.start()
    await factory.a_init()
    await factory["queue_1"].producer.send({"hello": 1})
    await factory["queue_2"].producer.send({"hello": 2})
    await eventually(lambda: got == {"queue_1": [{"hello": 1}], "queue_2": [{"hello": 2}]}, "both")
    await factory.close()


def test_handler_factory_uses_the_generated_contract_for_a_known_name() -> None:
    factory = HandlerFactory(
        {"orders": {"name": "orders.created", "consumer_loop": MEMORY, "producer": MEMORY}}
    )
    assert factory["orders"].queue is ORDERS_CREATED


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "q", "consumer_loop": "KafkaHandler", "producer": MEMORY}, "unknown consumer"),
        ({"name": "q", "consumer_loop": MEMORY}, "missing producer"),
        ({"name": "q", "consumer_loop": MEMORY, "producer": MEMORY, "port": 1}, "unknown key port"),
        ({"name": "", "consumer_loop": MEMORY, "producer": MEMORY}, "name must be a string"),
        (
            {
                "name": "q",
                "consumer_loop": MEMORY,
                "producer": MEMORY,
                "consumer_settings": {"no_such_setting": 1},
            },
            "no_such_setting",
        ),
    ],
)
def test_malformed_config_names_the_entry_and_the_problem(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        HandlerFactory({"bad_entry": entry})
    assert "messages queue 'bad_entry'" in str(info.value)


def test_unknown_queue_lists_the_configured_ones() -> None:
    factory = HandlerFactory(
        {"queue_1": {"name": "q1", "consumer_loop": MEMORY, "producer": MEMORY}}
    )
    with pytest.raises(KeyError, match="no messages queue 'queue_9'; configured: queue_1"):
        factory["queue_9"]


def make_order() -> OrderCreated:
    return OrderCreated(
        order_id=uuid.uuid4(),
        customer=Customer(id=uuid.uuid4(), email="a@example.com", name="A"),
        items=[LineItem(sku="ABC-1234", quantity=1, unit_price=1.0)],
        currency="EUR",
        created_at=datetime.now(UTC),
    )


async def test_consumer_factory_records_routes_and_the_runner_serves_them() -> None:
    consumers = ConsumerFactory(MEMORY)
    raw_name = unique_name()
    typed: list[OrderCreated] = []
    raw: list[object] = []

    @consumers.route(ORDERS_CREATED)
    async def on_order(msg: OrderCreated) -> None:
        typed.append(msg)

    @consumers.route(raw_name)
    async def on_raw(msg: Any) -> None:
        raw.append((msg, current_metadata().type))

    assert set(consumers.instances) == {"orders.created", raw_name}
    assert consumers.handlers == {"orders.created": on_order, raw_name: on_raw}
    assert not any(c.serving for c in consumers.instances.values())  # nothing started yet

    runner = ConsumerRunner(consumers=consumers.instances, handlers=consumers.handlers)
    serving = asyncio.create_task(runner.serve())
    await eventually(lambda: all(c.serving for c in consumers.instances.values()), "serving")
    async with PRODUCERS[MEMORY](ORDERS_CREATED) as orders, PRODUCERS[MEMORY](raw_name) as other:
        order = make_order()
        await orders.send(order)
        await other.send([1, 2])
    await eventually(lambda: len(typed) == 1 and len(raw) == 1, "both routes")
    runner.stop()
    async with asyncio.timeout(10):
        await serving
    assert typed == [order]
    assert raw == [([1, 2], "json")]
    assert all(c.closed for c in consumers.instances.values())


async def test_runner_registers_handlers_on_bare_consumers() -> None:
    consumer = CONSUMER_LOOPS[MEMORY](Queue(unique_name(), Ping))

    async def handle(msg: Ping) -> None:
        pass

    runner = ConsumerRunner(consumers=[consumer], handlers={consumer.queue.name: handle})
    assert consumer.routes[0].handler is handle
    serving = asyncio.create_task(runner.serve())
    await eventually(lambda: consumer.serving, "serving")
    runner.stop()
    async with asyncio.timeout(10):
        await serving


def test_runner_without_handler_is_a_configuration_error() -> None:
    consumer = CONSUMER_LOOPS[MEMORY](Queue(unique_name(), Ping))
    with pytest.raises(ConfigurationError, match="has no handler; route one"):
        ConsumerRunner(consumers=[consumer])
    with pytest.raises(ConfigurationError, match="at least one consumer"):
        ConsumerRunner(consumers=[])
