"""Core behaviour independent of a transport: registry, contracts, codec, lifecycle."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import msgspec
import pytest

from examples import contracts as generated
from streamtools import (
    CONSUMER_LOOPS,
    MEMORY,
    PRODUCERS,
    ConfigurationError,
    DecodeError,
    EncodeError,
    Limits,
    Queue,
    UnknownTransportError,
    ValidationError,
    current_metadata,
    register_contracts,
)
from streamtools._codec import MSGPACK, codec_for
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.conftest import eventually, unique_name


class Point(msgspec.Struct, kw_only=True):
    x: Annotated[int, msgspec.Meta(ge=0)]
    at: Annotated[datetime, msgspec.Meta(tz=True)]


def test_registry_resolves_names_and_aliases() -> None:
    classes: list[object] = [PRODUCERS[MEMORY], PRODUCERS["memory"], PRODUCERS["MEMORY"]]
    assert classes == [MemoryProducer] * 3
    consumers: list[object] = [CONSUMER_LOOPS["memory"]]
    assert consumers == [MemoryConsumer]
    assert "rabbitmq" in PRODUCERS
    assert sorted(PRODUCERS) == [
        "HTTPHandler",
        "KafkaHandler",
        "MemoryHandler",
        "NATSHandler",
        "RMQIOHandler",
        "RedisHandler",
    ]


def test_unknown_transport_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        PRODUCERS["ZeroMQHandler"]
    assert isinstance(info.value, UnknownTransportError)
    assert isinstance(info.value, ConfigurationError)
    message = str(info.value)
    assert "'ZeroMQHandler'" in message
    for name in (
        "HTTPHandler",
        "KafkaHandler",
        "MemoryHandler",
        "RMQIOHandler",
        "rabbitmq",
        "kafka",
    ):
        assert name in message


def test_bare_name_uses_the_generated_contract() -> None:
    producer = PRODUCERS[MEMORY]("orders.created")
    assert producer.queue is generated.ORDERS_CREATED
    assert producer.queue.message_type is generated.OrderCreated
    untyped = PRODUCERS[MEMORY](unique_name())
    assert untyped.queue.message_type is object


def test_message_type_must_match_the_contract() -> None:
    with pytest.raises(ConfigurationError, match="carries OrderCreated, not Point"):
        MemoryProducer[Any](generated.ORDERS_CREATED, message_type=Point)


def test_a_queue_carries_one_message_type() -> None:
    name = unique_name()
    register_contracts({name: Queue(name, Point)})
    register_contracts({name: Queue(name, Point)})  # the same again is fine
    with pytest.raises(ConfigurationError, match="carries one message type"):
        register_contracts({name: Queue(name, generated.OrderCreated)})


@pytest.mark.parametrize("name", ["", "my payments queue", "1orders", "orders.", "a" * 201, "ü"])
def test_queue_name_rule_is_one_for_every_transport(name: str) -> None:
    # The rule codegen applies to x-queue, at run time: a name is a ConfigurationError
    # (and a ValueError) before any transport sees it.
    with pytest.raises(ConfigurationError, match="is not a queue name"):
        Queue(name, Point)
    for transport in ("MemoryHandler", "HTTPHandler", "RMQIOHandler"):
        with pytest.raises(ValueError, match="is not a queue name"):
            CONSUMER_LOOPS[transport](name)
        with pytest.raises(ValueError, match="is not a queue name"):
            PRODUCERS[transport](name)


def test_codec_round_trip_keeps_real_types() -> None:
    codec = codec_for(generated.OrderCreated)
    assert codec_for(generated.OrderCreated) is codec  # cached: one per type
    order = generated.OrderCreated(
        order_id=uuid4(),
        customer=generated.Customer(id=uuid4(), email="a@example.com", name="A"),
        items=[generated.LineItem(sku="ABC-1234", quantity=2, unit_price=9.5)],
        currency="EUR",
        created_at=datetime.now(UTC),
    )
    decoded = codec.decode(codec.encode(order))
    assert decoded == order
    assert isinstance(decoded.order_id, UUID)
    assert decoded.created_at.tzinfo is not None
    assert b"note" not in codec.encode(order)  # optional fields left out


def test_codec_errors_say_what_failed() -> None:
    codec = codec_for(Point)
    with pytest.raises(DecodeError, match="malformed application/json body"):
        codec.decode(b"{not json")
    with pytest.raises(ValidationError) as info:
        codec.decode(b'{"x": -1, "at": "2026-01-01T00:00:00Z"}')
    assert info.value.path == "$.x"
    with pytest.raises(ValidationError, match="timezone"):
        codec.decode(b'{"x": 1, "at": "2026-01-01T00:00:00"}')
    with pytest.raises(EncodeError, match="cannot encode Point"):
        codec.encode(Point(x=1, at=object()))  # type: ignore[arg-type]
    packed = codec_for(Point, MSGPACK)
    point = Point(x=3, at=datetime.now(UTC))
    assert packed.decode(packed.encode(point)) == point


async def test_send_validates_unless_told_not_to() -> None:
    broker = MemoryBroker()
    queue = Queue(unique_name(), Point)
    async with MemoryProducer(queue, broker=broker) as producer:
        with pytest.raises(ValidationError, match=r"validate=False"):
            await producer.send(Point(x=-5, at=datetime.now(UTC)))
        assert broker.depth(queue.name) == 0
        trusting = MemoryProducer(queue, broker=broker, validate=False)
        await trusting.send(Point(x=-5, at=datetime.now(UTC)))
        await trusting.close()
    assert broker.depth(queue.name) == 1


async def test_unknown_send_option_is_a_configuration_error() -> None:
    async with MemoryProducer(Queue(unique_name(), Point), broker=MemoryBroker()) as producer:
        with pytest.raises(ConfigurationError, match="takes no options, got method"):
            await producer.send(Point(x=1, at=datetime.now(UTC)), method="GET")


def test_handler_registration_errors() -> None:
    consumer = MemoryConsumer(Queue(unique_name(), Point))
    with pytest.raises(ConfigurationError, match="no handler option method; accepted: batch"):
        consumer(method="GET")

    def sync_handler(msg: Point) -> None:
        pass

    with pytest.raises(ConfigurationError, match="must be an async def"):
        consumer()(sync_handler)  # type: ignore[arg-type]

    @consumer()
    async def first(msg: Point) -> None:
        pass

    with pytest.raises(ConfigurationError, match="already has a handler"):

        @consumer()
        async def second(msg: Point) -> None:
            pass


async def test_start_without_handler_says_what_to_do() -> None:
    consumer = MemoryConsumer(Queue(unique_name(), Point))
    with pytest.raises(ConfigurationError, match=r"decorate an async function with @consumer\(\)"):
        await consumer.start()


async def test_closed_endpoint_cannot_reopen() -> None:
    producer = MemoryProducer(Queue(unique_name(), Point))
    await producer.a_init()
    await producer.close()
    with pytest.raises(ConfigurationError, match="is closed; create a new one"):
        await producer.a_init()


def test_current_metadata_outside_a_handler() -> None:
    with pytest.raises(LookupError, match="only available inside a message handler"):
        current_metadata()


async def test_bounded_queue_makes_send_wait() -> None:
    broker = MemoryBroker(max_queue_size=2)
    queue = Queue(unique_name(), Point)
    async with MemoryProducer(queue, broker=broker) as producer:
        await producer.send(Point(x=1, at=datetime.now(UTC)))
        await producer.send(Point(x=2, at=datetime.now(UTC)))
        blocked = asyncio.create_task(producer.send(Point(x=3, at=datetime.now(UTC))))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        consumer = MemoryConsumer(queue, broker=broker)
        seen: list[int] = []

        @consumer()
        async def handle(msg: Point) -> None:
            seen.append(msg.x)

        await consumer.start()
        async with asyncio.timeout(10):
            await blocked
        await eventually(lambda: len(seen) == 3, "3 messages")
        await consumer.close()
    assert seen == [1, 2, 3]


async def test_max_in_flight_bounds_concurrent_handlers() -> None:
    broker = MemoryBroker()
    queue = Queue(unique_name(), Point)
    consumer = MemoryConsumer(queue, broker=broker, limits=Limits(max_in_flight=3))
    running = 0
    peak = 0
    done = 0

    @consumer()
    async def handle(msg: Point) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        done += 1

    await consumer.start()
    async with MemoryProducer(queue, broker=broker) as producer:
        for i in range(20):
            await producer.send(Point(x=i, at=datetime.now(UTC)))
    await eventually(lambda: done == 20, "20 messages")
    await consumer.close()
    assert peak == 3


async def test_close_waits_for_in_flight_handlers() -> None:
    broker = MemoryBroker()
    queue = Queue(unique_name(), Point)
    consumer = MemoryConsumer(queue, broker=broker)
    entered = asyncio.Event()
    finished: list[int] = []

    @consumer()
    async def handle(msg: Point) -> None:
        entered.set()
        await asyncio.sleep(0.2)
        finished.append(msg.x)

    await consumer.start()
    async with MemoryProducer(queue, broker=broker) as producer:
        await producer.send(Point(x=1, at=datetime.now(UTC)))
    async with asyncio.timeout(10):
        await entered.wait()
    await consumer.close()
    assert finished == [1]
    assert broker.depth(queue.name) == 0


async def test_shutdown_timeout_puts_the_message_back() -> None:
    broker = MemoryBroker()
    queue = Queue(unique_name(), Point)
    consumer = MemoryConsumer(queue, broker=broker, shutdown_timeout=0.1)
    entered = asyncio.Event()

    @consumer()
    async def handle(msg: Point) -> None:
        entered.set()
        await asyncio.sleep(30)

    await consumer.start()
    async with MemoryProducer(queue, broker=broker) as producer:
        await producer.send(Point(x=1, at=datetime.now(UTC)))
    async with asyncio.timeout(10):
        await entered.wait()
        await consumer.close()
    await eventually(lambda: broker.depth(queue.name) == 1, "the message back in the queue")
    assert broker.depth(queue.name) == 1


def test_untyped_producer_is_any() -> None:
    producer: Any = PRODUCERS[MEMORY](unique_name())
    assert producer.queue.message_type is object


@pytest.mark.parametrize("depth", [1000, 5000])
def test_json_nested_past_the_recursion_limit_is_malformed_not_an_internal_error(
    depth: int,
) -> None:
    body = b"[" * depth + b"]" * depth
    with pytest.raises(DecodeError, match="nested too deeply"):
        codec_for(object).decode(body)
    with pytest.raises(DecodeError):
        codec_for(dict[str, object]).decode(b'{"a":' * depth + b"1" + b"}" * depth)


@pytest.mark.parametrize("value", ["\ud800 lone surrogate", 2**80])
def test_values_that_cannot_be_encoded_are_encode_errors(value: object) -> None:
    # JSON cannot carry a lone surrogate; msgpack has no integer past 64 bits.
    content_type = "application/json" if isinstance(value, str) else MSGPACK
    with pytest.raises(EncodeError, match="cannot encode"):
        codec_for(object, content_type).encode({"v": value})
