"""HandleMsgs, HandlerFactory, ConsumerFactory and ConsumerRunner, mostly on memory.

The same helpers over HTTP and RabbitMQ, and in separate processes, are in test_services.py.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from examples.contracts import ORDERS_CREATED, Customer, LineItem, OrderCreated
from streamtools import (
    CONSUMER_LOOPS,
    HTTP,
    MEMORY,
    PRODUCERS,
    ConfigurationError,
    ConsumerFactory,
    ConsumerRunner,
    DeliveryError,
    HandleMsgs,
    HandlerFactory,
    OutsideHandlerError,
    Queue,
    StreamtoolsError,
    UnknownQueueError,
    current_metadata,
)
from streamtools._health import Answer, ServesPort, serve_endpoints
from streamtools.transports.memory import MemoryConsumer
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
        ({"name": "q", "consumer_loop": "NoSuchHandler", "producer": MEMORY}, "unknown consumer"),
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


# -- errors are StreamtoolsErrors --------------------------------------------------------


def test_a_handler_factory_miss_is_a_streamtools_error_and_a_key_error() -> None:
    factory = HandlerFactory(
        {"queue_1": {"name": "q1", "consumer_loop": MEMORY, "producer": MEMORY}}
    )
    with pytest.raises(UnknownQueueError) as info:
        factory["queue_9"]
    assert isinstance(info.value, StreamtoolsError)
    assert isinstance(info.value, KeyError)
    assert str(info.value) == "no messages queue 'queue_9'; configured: queue_1"
    assert factory.get("queue_9") is None  # Mapping.get still works: it catches KeyError


def test_current_metadata_outside_a_handler_is_a_streamtools_error_and_a_lookup_error() -> None:
    with pytest.raises(
        OutsideHandlerError, match="only available inside a message handler"
    ) as info:
        current_metadata()
    assert isinstance(info.value, StreamtoolsError)
    assert isinstance(info.value, LookupError)


class _FailingStart(MemoryConsumer[Any]):
    """A consumer whose start raises an error with required keyword fields."""

    async def _start(self) -> None:
        raise DeliveryError("upstream refused", status=503, body={"error": "busy"})


async def test_runner_reraises_a_start_error_as_it_is_with_a_note() -> None:
    failing = _FailingStart(Queue(unique_name(), Ping))
    runner = ConsumerRunner(consumers=[failing], handlers={failing.queue.name: _ignore})
    with pytest.raises(DeliveryError) as info:  # not a TypeError from rebuilding it
        async with asyncio.timeout(10):
            await runner.serve()
    assert (info.value.status, info.value.body) == (503, {"error": "busy"})
    assert str(info.value) == "upstream refused"
    assert info.value.__notes__ == [f"{failing!r} cannot start"]
    assert failing.closed


def test_run_prints_the_start_error_with_its_consumer(capsys: pytest.CaptureFixture[str]) -> None:
    failing = _FailingStart(Queue(unique_name(), Ping))
    runner = ConsumerRunner(consumers=[failing], handlers={failing.queue.name: _ignore})
    with pytest.raises(SystemExit) as info:
        runner.run()
    assert info.value.code == 1
    assert capsys.readouterr().err == f"error: {failing!r} cannot start: upstream refused\n"


async def _ignore(msg: Ping) -> None:
    pass


# -- routes only record ------------------------------------------------------------------


def test_importing_a_service_module_reads_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PORT", "not-a-port")
    monkeypatch.delitem(sys.modules, "tests.services.lazy_routes_service", raising=False)
    service = importlib.import_module("tests.services.lazy_routes_service")
    consumers = service.consumers
    assert consumers.handlers == {"lazy.pings": service.on_ping}
    # The broken setting is reported when the consumers are built: when the runner needs them.
    with pytest.raises(
        ConfigurationError, match="HTTP_PORT must be a port number, got 'not-a-port'"
    ):
        ConsumerRunner(consumers=consumers.instances, handlers=consumers.handlers)
    monkeypatch.setenv("HTTP_PORT", "0")
    built = consumers.instances
    assert list(built) == ["lazy.pings"]
    assert [r.options for r in built["lazy.pings"].routes] == [{}, {"method": "GET"}]
    assert consumers.instances is built  # built once
    assert not built["lazy.pings"].serving


def test_a_routed_handler_must_be_async() -> None:
    consumers = ConsumerFactory(MEMORY)

    def not_async(msg: Ping) -> None:
        pass

    with pytest.raises(ConfigurationError, match="must be an async def"):
        consumers.route(Queue(unique_name(), Ping))(not_async)  # type: ignore[arg-type]


# -- the runner's /healthz -----------------------------------------------------------------


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, bytes]:
    """A raw HTTP/1.1 exchange, so the test needs no transport's client library."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_runner_serves_healthz_itself_when_no_consumer_serves_a_port() -> None:
    consumer = CONSUMER_LOOPS[MEMORY](Queue(unique_name(), Ping))
    runner = ConsumerRunner(
        consumers=[consumer], handlers={consumer.queue.name: _ignore}, port=0, host="127.0.0.1"
    )
    serving = asyncio.create_task(runner.serve())
    await eventually(lambda: consumer.serving, "serving")
    assert runner.health_port
    status, body = await _get(runner.health_port, "/healthz")
    assert status == 200
    assert msgspec.json.decode(body) == {
        "status": "ok",
        "consumers": [
            {
                "queue": consumer.queue.name,
                "transport": "streamtools.memory",
                "connected": True,
                "consuming": True,
                "in_flight": 0,
            }
        ],
    }
    assert await _get(runner.health_port, "/healthz", "HEAD") == (200, b"")
    assert (await _get(runner.health_port, "/elsewhere"))[0] == 404
    assert (await _get(runner.health_port, "/healthz", "POST"))[0] == 405
    runner.stop()
    async with asyncio.timeout(10):
        await serving
    with pytest.raises(ConnectionRefusedError):
        await _get(runner.health_port, "/healthz")  # stopped with the runner


async def test_the_runners_own_server_answers_head_and_refuses_garbage() -> None:
    port, stop = await serve_endpoints(
        {"/metrics": lambda: Answer(200, b"n 1\n", "text/plain")}, host="127.0.0.1", port=0
    )
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"HEAD /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            head = await reader.read()
        writer.close()
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Type: text/plain\r\n" in head
        assert b"Content-Length: 4\r\n" in head  # the GET's length, without the body
        assert head.endswith(b"\r\n\r\n")
        assert (await _get(port, "/metrics"))[1] == b"n 1\n"
        status, _ = await _get(port, "not http at all")
        assert status == 400
    finally:
        await stop()


async def test_runner_with_port_0_puts_port_serving_consumers_and_healthz_on_one_port() -> None:
    consumers = ConsumerFactory(HTTP, host="127.0.0.1")
    names = [unique_name(), unique_name()]
    for name in names:
        consumers.route(Queue(name, Ping))(_ignore)
    memory = CONSUMER_LOOPS[MEMORY](Queue(unique_name(), Ping))
    memory()(_ignore)
    runner = ConsumerRunner(
        consumers=[*consumers.instances.values(), memory], port=0, host="127.0.0.1"
    )
    serving = asyncio.create_task(runner.serve())
    await eventually(lambda: all(c.serving for c in runner.consumers), "serving")
    port = runner.health_port
    assert port
    assert [c.port for c in consumers.instances.values() if isinstance(c, ServesPort)] == [
        port,
        port,
    ]
    status, body = await _get(port, "/healthz")
    report = msgspec.json.decode(body)
    assert status == 200
    assert [c["queue"] for c in report["consumers"]] == [*names, memory.queue.name]
    async with PRODUCERS[HTTP](Queue(names[1], Ping), host="127.0.0.1", port=port) as producer:
        await producer.send(Ping(n=1))  # the queue is served on that same port
    runner.stop()
    async with asyncio.timeout(10):
        await serving
