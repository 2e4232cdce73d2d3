"""HTTP transport behaviour beyond the conformance suite: statuses, retries, TLS, stop.

Every test runs real aiohttp servers and clients on 127.0.0.1 (port 0 where possible).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any
from uuid import UUID, uuid4

import aiohttp
import msgspec
import pytest
import trustme
from aiohttp import web
from multidict import CIMultiDictProxy

from streamtools import (
    CONSUMER_LOOPS,
    HTTP,
    PRODUCERS,
    ConfigurationError,
    ConnectError,
    DeliveryError,
    EncodeError,
    Limits,
    Metadata,
    Queue,
    ReplyTimeoutError,
    RetryPolicy,
    current_metadata,
)
from streamtools._health import Answer, ServesPort
from streamtools.transports.http import (
    HTTPConsumer,
    HTTPProducer,
    headers_presets,
    register_headers_preset,
)
from tests.conftest import free_port, unique_name

WAIT = 30.0  # bound for every wait; never a pass/fail timing threshold


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Item(msgspec.Struct, kw_only=True):
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")]
    qty: Annotated[int, msgspec.Meta(ge=1)]


class Order(msgspec.Struct, kw_only=True):
    order_id: UUID
    items: Annotated[list[Item], msgspec.Meta(min_length=1)]
    note: str = ""


class Receipt(msgspec.Struct, kw_only=True):
    order_id: UUID
    total: int


class Everything(msgspec.Struct, kw_only=True):
    """One field of every kind a GET query has to carry."""

    ident: UUID
    at: Annotated[datetime, msgspec.Meta(tz=True)]
    day: date
    color: Color
    level: Level
    item: Item
    counts: list[int]
    words: list[str]
    ratio: float
    flag: bool
    text: str
    maybe_int: int | None = None
    maybe_text: str | None = None
    maybe_day: date | None = None
    maybe_items: list[Item] | None = None


def make_order(qty: int = 2, note: str = "") -> Order:
    return Order(order_id=uuid4(), items=[Item(sku="ABC-123", qty=qty)], note=note)


def order_json(qty: object = 2) -> bytes:
    return msgspec.json.encode(
        {"order_id": str(uuid4()), "items": [{"sku": "ABC-123", "qty": qty}]}
    )


@contextlib.asynccontextmanager
async def serving(consumer: HTTPConsumer[Any]) -> AsyncIterator[HTTPConsumer[Any]]:
    await consumer.start()
    try:
        yield consumer
    finally:
        async with asyncio.timeout(WAIT):
            await consumer.close()


@pytest.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


def order_consumer(queue_name: str, **settings: Any) -> HTTPConsumer[Order]:
    return HTTPConsumer(Queue(queue_name, Order), host="127.0.0.1", port=0, **settings)


def producer_for(
    consumer: HTTPConsumer[Any], *, attempts: int = 3, max_delay: float = 5.0, **settings: Any
) -> HTTPProducer[Order]:
    """A producer to `consumer` that sends again quickly (0.01 s), `attempts` more times."""
    return HTTPProducer(
        Queue(consumer.queue.name, Order),
        host="127.0.0.1",
        port=consumer.port,
        resend=RetryPolicy(attempts=attempts, delay=0.01, max_delay=max_delay),
        **settings,
    )


async def post(
    client: aiohttp.ClientSession,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> tuple[int, Any, CIMultiDictProxy[str]]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with client.request(method, url, data=body, headers=headers) as resp:
        raw = await resp.read()
        parsed = (
            msgspec.json.decode(raw) if raw and resp.content_type == "application/json" else raw
        )
        return resp.status, parsed, resp.headers


# -- round trips ------------------------------------------------------------------------


async def test_seed_style_get_send_reaches_a_get_handler(queue_name: str) -> None:
    got: list[tuple[object, Metadata]] = []
    done = asyncio.Event()
    consumer = CONSUMER_LOOPS[HTTP](queue_name, host="127.0.0.1", port=0)

    @consumer(method="GET")
    async def on_get(msg: object) -> None:
        got.append((msg, current_metadata()))
        done.set()

    async with serving(consumer):  # type: ignore[arg-type]
        port = consumer.port  # type: ignore[attr-defined]
        producer = PRODUCERS[HTTP](queue_name, port=port)
        await producer.a_init()
        try:
            msg = make_order(qty=3, note="a b&c=d")
            sent_id = await producer.send(
                msg,
                method="GET",
                endpoint=f"http://127.0.0.1:{port}/{queue_name}",
                header_tag="JSON",
            )
        finally:
            await producer.close()
        async with asyncio.timeout(WAIT):
            await done.wait()
    body, meta = got[0]
    assert body == msgspec.to_builtins(msg)
    assert meta.id == sent_id
    assert meta.type == "json"  # untyped queue


async def test_get_round_trip_carries_every_field_type(queue_name: str) -> None:
    queue = Queue(queue_name, Everything)
    consumer = HTTPConsumer(queue, host="127.0.0.1", port=0)
    received: list[Everything] = []

    @consumer(method="GET")
    async def echo(msg: Everything) -> Everything:
        received.append(msg)
        return msg

    full = Everything(
        ident=uuid4(),
        at=datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC),
        day=date(2026, 2, 28),
        color=Color.GREEN,
        level=Level.HIGH,
        item=Item(sku="XYZ-999", qty=7),
        counts=[1, 2, 3],
        words=["a b", "c&d=e", "ü", "null", "[1]"],
        ratio=0.25,
        flag=True,
        text="123",  # numeric-looking text stays a str
        maybe_int=5,
        maybe_text="null-ish",
        maybe_day=date(2020, 1, 1),
        maybe_items=[Item(sku="ABC-001", qty=1)],
    )
    sparse = msgspec.structs.replace(
        full, counts=[], words=[], flag=False, text="", maybe_int=None, maybe_day=None
    )
    async with serving(consumer), HTTPProducer(queue, host="127.0.0.1", port=consumer.port) as p:
        for msg in (full, sparse):
            reply = await p.request(msg, reply_type=Everything, method="GET")
            assert reply == msg
        # The msgpack preset asks for a msgpack reply to the same query.
        reply = await p.request(full, reply_type=Everything, method="GET", headers_tag="MSGPACK")
        assert reply == full
    assert received == [full, sparse, full]
    assert isinstance(received[0].ident, UUID)
    assert received[0].at.tzinfo is not None
    assert received[0].color is Color.GREEN
    assert received[0].level is Level.HIGH


async def test_get_query_written_by_hand_is_coerced(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = HTTPConsumer(Queue(queue_name, Everything), host="127.0.0.1", port=0)
    received: list[Everything] = []

    @consumer(method="GET")
    async def handle(msg: Everything) -> None:
        received.append(msg)

    ident = uuid4()
    query = {
        "ident": str(ident),
        "at": "2026-01-02T03:04:05Z",
        "day": "2026-01-02",
        "color": "red",
        "level": "1",
        "item": '{"sku":"ABC-123","qty":2}',
        "counts": "[4,5]",
        "words": "solo",  # a single plain value for a list field
        "ratio": "1.5",
        "flag": "false",
        "text": "hi",
        "maybe_int": "null",
    }
    async with serving(consumer):
        async with client.get(consumer.url, params=query) as resp:
            assert resp.status == 204
        # Repeated parameters fill a list field.
        async with client.get(consumer.url, params=[*query.items(), ("counts", "7")]) as resp:
            # Repeated values are taken as text each: "[4,5]" is no int.
            assert resp.status == 422
            assert (await resp.json())["path"] == "$.counts[0]"
        query.pop("counts")  # repeated parameters fill a list field
        async with client.get(
            consumer.url, params=[*query.items(), ("counts", "7"), ("counts", "8")]
        ) as resp:
            assert resp.status == 204
    assert received[0] == Everything(
        ident=ident,
        at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        day=date(2026, 1, 2),
        color=Color.RED,
        level=Level.LOW,
        item=Item(sku="ABC-123", qty=2),
        counts=[4, 5],
        words=["solo"],
        ratio=1.5,
        flag=False,
        text="hi",
    )
    assert received[1].counts == [7, 8]


@pytest.mark.parametrize(
    "options",
    [{}, {"headers_tag": "JSON"}, {"headers_tag": "MSGPACK"}, {"header_tag": "msgpack"}],
)
async def test_request_returns_the_typed_reply(queue_name: str, options: dict[str, Any]) -> None:
    consumer = order_consumer(queue_name)
    seen: list[Metadata] = []

    @consumer()
    async def handle(msg: Order) -> Receipt:
        seen.append(current_metadata())
        return Receipt(order_id=msg.order_id, total=sum(i.qty for i in msg.items))

    async with serving(consumer), producer_for(consumer) as producer:
        order = make_order(qty=4)
        receipt = await producer.request(order, reply_type=Receipt, **options)
    assert receipt == Receipt(order_id=order.order_id, total=4)
    tag = options.get("headers_tag", options.get("header_tag", "JSON")).upper()
    assert seen[0].content_type == headers_presets()[tag].content_type
    assert seen[0].type == "Order"
    assert seen[0].source == producer.source


async def test_request_to_a_handler_returning_none_reports_null(queue_name: str) -> None:
    consumer = order_consumer(queue_name)

    @consumer()
    async def handle(msg: Order) -> None:
        pass

    async with serving(consumer), producer_for(consumer) as producer:
        # 204 is a `null` reply, as a handler returning None gives on every transport.
        assert await producer.request(make_order(), reply_type=object) is None


async def test_cloudevents_headers_become_metadata(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name)
    seen: list[Metadata] = []

    @consumer()
    async def handle(msg: Order) -> None:
        seen.append(current_metadata())

    async with serving(consumer):
        async with producer_for(consumer) as producer:
            sent_id = await producer.send(make_order())
        # A foreign client (curl -H 'content-type: application/json' -d ...): no ce-* headers.
        status, _, _ = await post(client, consumer.url, order_json())
        assert status == 204
        status, _, _ = await post(
            client,
            consumer.url,
            order_json(),
            {
                "ce-id": "abc-1",
                "ce-type": "com.example.order",
                "ce-source": "/billing",
                "ce-time": "2026-01-01T00:00:00Z",
                "ce-specversion": "1.0",
            },
        )
        assert status == 204
    ours, foreign, explicit = seen
    assert ours.id == sent_id
    assert ours.type == "Order"
    assert ours.source == producer.source
    assert datetime.fromisoformat(ours.time).tzinfo is not None
    UUID(foreign.id)  # generated: a valid uuid
    assert foreign.type == "Order"
    assert foreign.specversion == "1.0"
    assert datetime.fromisoformat(foreign.time).tzinfo is not None
    assert (explicit.id, explicit.type, explicit.source, explicit.time) == (
        "abc-1",
        "com.example.order",
        "/billing",
        "2026-01-01T00:00:00Z",
    )


# -- bad input --------------------------------------------------------------------------


BAD_INPUT = [
    # (case id, method, path suffix, headers, body, status, expected error body subset)
    ("malformed-json", "POST", "", {}, b'{"order_id": ', 400, {"error": "malformed"}),
    ("empty-body", "POST", "", {}, b"", 400, {"error": "malformed"}),
    (
        "malformed-msgpack",
        "POST",
        "",
        {"Content-Type": "application/msgpack"},
        b"\xc1",
        400,
        {"error": "malformed"},
    ),
    (
        "bad-ce-id",
        "POST",
        "",
        {"ce-id": "x" * 300},
        order_json(),
        400,
        {
            "error": "malformed",
            "detail": "the ce-id header must be 1 to 256 visible ASCII characters",
        },
    ),
    (
        "get-repeated-scalar",
        "GET",
        "?note=a&note=b",
        {},
        None,
        400,
        {"error": "malformed", "detail": "query parameter 'note' is given 2 times"},
    ),
    (
        "schema-nested",
        "POST",
        "",
        {},
        order_json(qty=0),
        422,
        {"error": "validation", "path": "$.items[0].qty"},
    ),
    (
        "schema-type",
        "POST",
        "",
        {},
        order_json(qty="many"),
        422,
        {"error": "validation", "path": "$.items[0].qty"},
    ),
    ("schema-missing", "POST", "", {}, b'{"items": []}', 422, {"error": "validation"}),
    (
        "get-schema",
        "GET",
        "?order_id=nope&items=[]",
        {},
        None,
        422,
        {"error": "validation", "path": "$.order_id"},
    ),
    (
        "too-large",
        "POST",
        "",
        {},
        b" " * 2048 + order_json(),
        413,
        {"error": "too_large", "detail": "the request body is over the limit of 1024 bytes"},
    ),
    (
        "unsupported-type",
        "POST",
        "",
        {"Content-Type": "text/plain"},
        b"hi",
        415,
        {
            "error": "unsupported_media_type",
            "detail": "content type 'text/plain' is not supported; "
            "use application/json or application/msgpack",
        },
    ),
    ("unknown-queue", "POST", "-nope", {}, order_json(), 404, {"error": "not_found"}),
    ("wrong-method", "PUT", "", {}, order_json(), 405, {"error": "method_not_allowed"}),
    (
        "no-token",
        "POST",
        "",
        {"Authorization": ""},
        order_json(),
        401,
        {"error": "unauthorized", "detail": "missing or wrong bearer token"},
    ),
    (
        "wrong-token",
        "POST",
        "",
        {"Authorization": "Bearer nope"},
        order_json(),
        401,
        {"error": "unauthorized", "detail": "missing or wrong bearer token"},
    ),
    ("handler-raised", "POST", "", {"x-boom": "1"}, order_json(), 500, {"error": "handler_failed"}),
]


@pytest.mark.parametrize(
    ("method", "suffix", "headers", "body", "status", "expected"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
async def test_bad_input_gets_its_status_and_json_error_then_serving_goes_on(
    queue_name: str,
    client: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
    method: str,
    suffix: str,
    headers: dict[str, str],
    body: bytes | None,
    status: int,
    expected: dict[str, str],
) -> None:
    consumer = order_consumer(queue_name, token="s3cret", limits=Limits(max_message_size=1024))
    handled: list[Order] = []

    async def handle(msg: Order) -> None:
        if boom.is_set():
            raise RuntimeError("secret internal detail")
        handled.append(msg)

    boom = asyncio.Event()
    consumer()(handle)
    consumer(method="GET")(handle)
    auth = {"Authorization": "Bearer s3cret"}
    async with serving(consumer):
        if "x-boom" in headers:
            boom.set()
        got_status, got_body, got_headers = await post(
            client, consumer.url + suffix, body, {**auth, **headers}, method
        )
        boom.clear()
        assert got_status == status, got_body
        assert isinstance(got_body, dict)
        assert set(got_body) == {"error", "detail"} | ({"path"} if status == 422 else set())
        assert expected.items() <= got_body.items()
        assert got_headers["Content-Type"] == "application/json"
        if status == 405:
            assert got_headers["Allow"] == "GET, POST"
        if status == 401:
            assert got_headers["WWW-Authenticate"].startswith("Bearer")
        if status == 500:
            assert "secret internal detail" not in str(got_body)
            assert "Traceback" not in str(got_body)
            [record] = [r for r in caplog.records if r.name == "streamtools.http"]
            assert record.levelno == logging.ERROR
            assert record.message_id in got_body["detail"]  # type: ignore[attr-defined]
            assert record.exc_info is not None
        if status == 422 and method == "POST":
            assert "Item" in got_body["detail"] or "Order" in got_body["detail"]
        # The server still serves a good request afterwards.
        ok_status, _, _ = await post(client, consumer.url, order_json(), auth)
        assert ok_status == 204
    assert len(handled) == 1


async def test_expect_100_continue_is_answered(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name)
    consumer()(_noop)
    async with (
        serving(consumer),
        client.post(
            consumer.url,
            data=order_json(),
            headers={"Content-Type": "application/json"},
            expect100=True,
        ) as resp,
    ):
        assert resp.status == 204


async def test_busy_port_is_a_configuration_error(queue_name: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        consumer = HTTPConsumer(Queue(queue_name, Order), host="127.0.0.1", port=port)
        consumer()(_noop)
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            await consumer.start()
        await consumer.close()


async def test_streamed_body_over_the_limit_gets_413(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name, limits=Limits(max_message_size=1000))

    @consumer()
    async def handle(msg: Order) -> None:
        pass

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(100):
            yield b" " * 100  # chunked: no Content-Length to check up front

    async with serving(consumer):
        async with client.post(
            consumer.url, data=chunks(), headers={"Content-Type": "application/json"}
        ) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"] == "too_large"
        status, _, _ = await post(client, consumer.url, order_json())
        assert status == 204


@pytest.mark.parametrize(("size", "status"), [(900, 204), (1100, 413)])
async def test_chunked_body_that_arrived_whole_is_held_to_the_limit(
    queue_name: str, size: int, status: int
) -> None:
    consumer = order_consumer(queue_name, limits=Limits(max_message_size=1000))
    consumer()(_noop)
    body = order_json()
    body += b" " * (size - len(body))  # JSON allows trailing whitespace
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:500], body[500:]))
    async with serving(consumer):
        reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
        try:
            # One write: the whole body is there before the handler runs.
            writer.write(
                f"POST /{queue_name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n".encode()
                + chunked
                + b"0\r\n\r\n"
            )
            async with asyncio.timeout(WAIT):
                answer = await reader.read()
        finally:
            writer.close()
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())


async def _raw_exchange(port: int, head: str, body: bytes) -> bytes:
    """Send `head` (request line and headers) and `body` in one write; the whole answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        async with asyncio.timeout(WAIT):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked", "chunked-read-in-a-loop"])
@pytest.mark.parametrize(("extra", "status"), [(0, 204), (1, 413)])
async def test_a_body_of_exactly_max_message_size_passes_one_more_byte_is_413(
    queue_name: str, framing: str, extra: int, status: int
) -> None:
    limit = 1000
    consumer = order_consumer(queue_name, limits=Limits(max_message_size=limit))
    consumer()(_noop)
    body = order_json()
    body += b" " * (limit + extra - len(body))  # JSON allows trailing whitespace
    assert len(body) == limit + extra
    head = (
        f"POST /{queue_name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
    )
    if framing == "content-length":
        head += f"Content-Length: {len(body)}\r\n\r\n"
    else:  # no Content-Length: the limit is checked on the bytes read
        if framing == "chunked-read-in-a-loop":
            # Expecting 100-continue, the body is read chunk by chunk even when it is all
            # there already: the streaming reader's count is checked too.
            head += "Expect: 100-continue\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    async with serving(consumer):
        answer = await _raw_exchange(consumer.port, head, body)
    answer = answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()), answer[:200]


async def test_413_is_answered_before_the_upload_is_complete(queue_name: str) -> None:
    # The headers announce 100 MB; 100 bytes (under the limit) follow, and then nothing.
    # Only a server that refuses on the Content-Length answers: one that reads first
    # waits for the rest of the body, which never comes (and the bounded read fails).
    consumer = order_consumer(queue_name, limits=Limits(max_message_size=1000))
    consumer()(_noop)
    async with serving(consumer):
        reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
        try:
            writer.write(
                f"POST /{queue_name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode()
                + b" " * 100
            )
            await writer.drain()
            async with asyncio.timeout(WAIT):
                status_line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    assert status_line.split()[1] == b"413"


async def test_healthz_lists_the_queues_served(client: aiohttp.ClientSession) -> None:
    port = free_port()
    names = sorted(unique_name("st-health") for _ in range(2))
    consumers = [HTTPConsumer(Queue(n, Order), host="127.0.0.1", port=port) for n in names]
    for c in consumers:
        c()(_noop)
    async with (
        serving(consumers[0]),
        serving(consumers[1]),
        client.get(f"http://127.0.0.1:{port}/healthz") as resp,
    ):
        assert resp.status == 200
        assert await resp.json() == {"status": "ok", "queues": names}


async def _noop(msg: Order) -> None:
    pass


async def test_a_mounted_endpoint_is_answered_on_the_consumers_port(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name)
    consumer()(_noop)
    assert consumer.capabilities.serves_port
    served: ServesPort = consumer  # the runner's view of it: mypy checks the Protocol
    served.mount("/metrics", lambda: Answer(200, b"n 1\n", "text/plain; version=0.0.4"))
    with pytest.raises(ConfigurationError, match="cannot mount"):
        served.mount(f"/{queue_name}", lambda: Answer(200, b"{}"))
    async with serving(consumer):
        async with client.get(f"http://127.0.0.1:{consumer.port}/metrics") as resp:
            assert (resp.status, await resp.read()) == (200, b"n 1\n")
            assert resp.headers["Content-Type"] == "text/plain; version=0.0.4"
        async with client.post(f"http://127.0.0.1:{consumer.port}/metrics") as resp:
            assert (resp.status, resp.headers["Allow"]) == (405, "GET")


# -- one server for many consumers -------------------------------------------------------


async def test_consumers_on_one_port_share_one_server(client: aiohttp.ClientSession) -> None:
    port = free_port()
    shared = unique_name("st-shared")
    other = unique_name("st-other")
    got: list[str] = []
    posts = HTTPConsumer(Queue(shared, Order), host="127.0.0.1", port=port)
    gets = HTTPConsumer(Queue(shared, Order), host="127.0.0.1", port=port)
    third = HTTPConsumer(Queue(other, Order), host="127.0.0.1", port=port)

    @posts(method="POST")
    async def on_post(msg: Order) -> None:
        got.append("post")

    @gets(method="GET")
    async def on_get(msg: Order) -> None:
        got.append("get")

    third()(_noop)
    async with serving(posts), serving(gets), serving(third):
        assert posts.port == gets.port == third.port == port
        async with HTTPProducer(Queue(shared, Order), host="127.0.0.1", port=port) as producer:
            await producer.send(make_order())
            await producer.send(make_order(), method="GET")
        # A fourth consumer on the same queue and method is refused.
        clash = HTTPConsumer(Queue(shared, Order), host="127.0.0.1", port=port)
        clash()(_noop)
        with pytest.raises(ConfigurationError, match="already served"):
            await clash.start()
        await clash.close()
        await third.close()
        status, body, _ = await post(client, f"http://127.0.0.1:{port}/{other}", order_json())
        assert (status, body["error"]) == (404, "not_found")
        status, _, _ = await post(client, f"http://127.0.0.1:{port}/{shared}", order_json())
        assert status == 204  # the others still serve
    assert got == ["post", "get", "post"]
    # The last one out stopped the server.
    with pytest.raises(aiohttp.ClientConnectionError):
        await post(client, f"http://127.0.0.1:{port}/{shared}", order_json())


def test_handler_options_are_checked(queue_name: str) -> None:
    consumer = order_consumer(queue_name)
    consumer(method="get")(_noop)
    consumer(method="POST")(_noop)
    with pytest.raises(ConfigurationError, match="already has a GET handler"):
        consumer(method="GET")(_noop)
    with pytest.raises(ConfigurationError, match="method must be 'POST' or 'GET'"):
        consumer(method="DELETE")(_noop)
    with pytest.raises(ConfigurationError, match="accepted: method"):
        consumer(verb="GET")(_noop)


# -- idempotent receive and producer retries --------------------------------------------


async def test_resent_message_id_is_answered_as_before_without_rerunning(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name)
    calls: list[UUID] = []

    @consumer()
    async def handle(msg: Order) -> Receipt:
        calls.append(msg.order_id)
        if msg.note == "fail":
            raise RuntimeError("no")
        return Receipt(order_id=msg.order_id, total=len(calls))

    async with serving(consumer):
        body = order_json()
        first = await post(client, consumer.url, body, {"ce-id": "m-1"})
        again = await post(client, consumer.url, body, {"ce-id": "m-1"})
        assert first[0] == again[0] == 200
        assert first[1] == again[1]
        assert again[2]["x-streamtools-duplicate"] == "true"
        failing = msgspec.json.encode({**msgspec.json.decode(body), "note": "fail"})
        assert (await post(client, consumer.url, failing, {"ce-id": "m-2"}))[0] == 500
        assert (await post(client, consumer.url, failing, {"ce-id": "m-2"}))[0] == 500
        # Bad input never reached the handler: it is not remembered.
        assert (await post(client, consumer.url, b"{", {"ce-id": "m-3"}))[0] == 400
        assert (await post(client, consumer.url, body, {"ce-id": "m-3"}))[0] == 200
    assert len(calls) == 3


async def test_concurrent_duplicate_waits_for_the_first(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name)
    entered = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    @consumer()
    async def handle(msg: Order) -> Receipt:
        nonlocal calls
        calls += 1
        entered.set()
        await release.wait()
        return Receipt(order_id=msg.order_id, total=calls)

    async with serving(consumer):
        body = order_json()
        first = asyncio.create_task(post(client, consumer.url, body, {"ce-id": "same"}))
        async with asyncio.timeout(WAIT):
            await entered.wait()
        second = asyncio.create_task(post(client, consumer.url, body, {"ce-id": "same"}))
        async with asyncio.timeout(WAIT):
            while consumer._inflight < 2:  # noqa: ASYNC110 - no event marks a waiting duplicate
                await asyncio.sleep(0.01)
        release.set()
        async with asyncio.timeout(WAIT):
            (s1, b1, h1), (s2, b2, h2) = await asyncio.gather(first, second)
    assert (s1, s2) == (200, 200)
    assert b1 == b2
    assert "x-streamtools-duplicate" not in h1
    assert h2["x-streamtools-duplicate"] == "true"
    assert calls == 1


async def test_the_same_id_from_two_sources_is_two_messages(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    # CloudEvents: source + id identify an event; two producers may pick the same id.
    consumer = order_consumer(queue_name)
    calls: list[str] = []

    @consumer()
    async def handle(msg: Order) -> Receipt:
        calls.append(current_metadata().source)
        return Receipt(order_id=msg.order_id, total=len(calls))

    async with serving(consumer):
        body = order_json()
        a = await post(client, consumer.url, body, {"ce-id": "7", "ce-source": "//billing"})
        b = await post(client, consumer.url, body, {"ce-id": "7", "ce-source": "//shipping"})
        again = await post(client, consumer.url, body, {"ce-id": "7", "ce-source": "//billing"})
    assert calls == ["//billing", "//shipping"]
    assert (a[1]["total"], b[1]["total"], again[1]["total"]) == (1, 2, 1)
    assert "x-streamtools-duplicate" not in b[2]
    assert again[2]["x-streamtools-duplicate"] == "true"


class Blob(msgspec.Struct, kw_only=True):
    data: str


async def test_dedup_cache_is_bounded_in_bytes(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    # Room for two 10 kB replies and a small one: the third large reply evicts the least
    # recently used entry by bytes, far below the window of 10,000 entries.
    consumer = order_consumer(queue_name, dedup_max_bytes=25_000)
    calls: list[str] = []

    @consumer()
    async def handle(msg: Order) -> Blob | None:
        calls.append(current_metadata().id)
        return Blob(data="x" * 10_000) if msg.note == "big" else None

    small = order_json()
    big = msgspec.json.encode({**msgspec.json.decode(order_json()), "note": "big"})

    async def send(mid: str, body: bytes) -> tuple[int, bool]:
        status, _, headers = await post(client, consumer.url, body, {"ce-id": mid})
        return status, headers.get("x-streamtools-duplicate") == "true"

    async with serving(consumer):
        assert await send("small", small) == (204, False)
        assert await send("big-0", big) == (200, False)
        assert await send("big-1", big) == (200, False)
        assert await send("small", small) == (204, True)  # remembered, and now recent
        assert await send("big-2", big) == (200, False)  # over 25 kB: big-0 goes
        assert await send("big-2", big) == (200, True)
        assert await send("small", small) == (204, True)
        assert await send("big-0", big) == (200, False)  # forgotten: handled again
    assert calls == ["small", "big-0", "big-1", "big-2", "big-0"]


@contextlib.asynccontextmanager
async def front(
    target: str, answer: Callable[[int], Awaitable[int | None]]
) -> AsyncIterator[tuple[str, list[str]]]:
    """A test-only reverse proxy: forwards each request to `target`, then answers with
    `await answer(n)` (a status) for the n-th request, or with the target's own answer."""
    seen: list[str] = []
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        seen.append(request.headers.get("ce-id", ""))
        body = await request.read()
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with session.request(request.method, target, data=body, headers=headers) as resp:
            reply = await resp.read()
            status, content_type = resp.status, resp.headers.get("Content-Type")
        override = await answer(len(seen))
        if override is not None:
            return web.json_response(
                {"error": "proxy", "detail": "upstream hiccup"}, status=override
            )
        return web.Response(
            status=status,
            body=reply,
            headers={"Content-Type": content_type} if content_type else None,
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        # runner.addresses, not site.port: TCPSite.port is aiohttp 3.14+ (make test-min)
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/q", seen
    finally:
        await runner.cleanup()
        await session.close()


async def test_retry_after_503_keeps_the_id_and_the_handler_runs_once(queue_name: str) -> None:
    consumer = order_consumer(queue_name)
    calls: list[str] = []

    @consumer()
    async def handle(msg: Order) -> Receipt:
        calls.append(current_metadata().id)
        return Receipt(order_id=msg.order_id, total=1)

    async def first_fails(n: int) -> int | None:
        return 503 if n == 1 else None  # the first attempt was handled, but its answer is lost

    async with (
        serving(consumer),
        front(consumer.url, first_fails) as (url, seen),
        producer_for(consumer, attempts=3) as producer,
    ):
        order = make_order()
        receipt = await producer.request(order, reply_type=Receipt, endpoint=url)
        sent_id = await producer.send(make_order(), endpoint=url)
    assert receipt == Receipt(order_id=order.order_id, total=1)
    assert len(seen) == 3
    assert seen[0] == seen[1] != seen[2] == sent_id
    assert calls == [seen[0], sent_id]


async def test_persistent_503_raises_delivery_error_after_the_retries(queue_name: str) -> None:
    consumer = order_consumer(queue_name)
    consumer()(_noop)

    async def always(n: int) -> int:
        return 503

    async with (
        serving(consumer),
        front(consumer.url, always) as (url, seen),
        producer_for(consumer, attempts=2) as producer,
    ):
        with pytest.raises(DeliveryError) as info:
            await producer.send(make_order(), endpoint=url)
    assert info.value.status == 503
    assert info.value.body == {"error": "proxy", "detail": "upstream hiccup"}
    assert len(seen) == 3
    assert len(set(seen)) == 1


async def test_client_errors_are_not_retried(queue_name: str) -> None:
    consumer = order_consumer(queue_name)
    consumer()(_noop)
    async with serving(consumer), producer_for(consumer, attempts=3) as producer:
        with pytest.raises(DeliveryError) as info:
            await producer.send(make_order(), endpoint=consumer.url + "-missing")
    assert info.value.status == 404
    assert isinstance(info.value.body, dict)
    assert info.value.body["error"] == "not_found"


async def test_no_server_raises_connection_error_naming_host_and_port() -> None:
    port = free_port()
    producer = HTTPProducer(
        Queue("nobody", Order),
        host="127.0.0.1",
        port=port,
        resend=RetryPolicy(attempts=2, delay=0.01),
    )
    async with producer:
        with pytest.raises(ConnectError, match=f"127.0.0.1:{port}") as info:
            await producer.send(make_order())
    assert isinstance(info.value.__cause__, aiohttp.ClientConnectionError)


# -- token and TLS ------------------------------------------------------------------------


async def test_token_from_keyword_or_environment(
    queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMTOOLS_HTTP_TOKEN", "from-env")
    consumer = order_consumer(queue_name)  # token from the environment
    consumer()(_noop)
    async with serving(consumer):
        async with producer_for(consumer) as producer:  # also from the environment
            await producer.send(make_order())
        async with producer_for(consumer, token="wrong") as producer:
            with pytest.raises(DeliveryError) as info:
                await producer.send(make_order())
        monkeypatch.delenv("STREAMTOOLS_HTTP_TOKEN")
        async with producer_for(consumer) as producer:
            with pytest.raises(DeliveryError) as missing:
                await producer.send(make_order())
        async with producer_for(consumer, token="from-env") as producer:
            await producer.send(make_order())
    assert info.value.status == missing.value.status == 401


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def test_tls_round_trip_and_untrusted_certificate(
    queue_name: str, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_ctx, client_ctx = tls
    consumer = order_consumer(queue_name, ssl=server_ctx, token="t")

    @consumer()
    async def handle(msg: Order) -> Receipt:
        return Receipt(order_id=msg.order_id, total=9)

    async with serving(consumer):
        assert consumer.url.startswith("https://")
        async with producer_for(consumer, ssl=client_ctx, token="t") as producer:
            assert str(producer.endpoint).startswith("https://")
            order = make_order()
            assert await producer.request(order, reply_type=Receipt) == Receipt(
                order_id=order.order_id, total=9
            )
        async with producer_for(
            consumer, ssl=ssl.create_default_context(), attempts=3
        ) as untrusting:
            with pytest.raises(ConnectError, match="TLS"):
                await untrusting.send(make_order())


# -- graceful stop ------------------------------------------------------------------------


async def test_close_lets_in_flight_finish_and_refuses_new_requests(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name, shutdown_timeout=WAIT)
    entered = asyncio.Event()
    release = asyncio.Event()

    @consumer()
    async def handle(msg: Order) -> Receipt:
        entered.set()
        await release.wait()
        return Receipt(order_id=msg.order_id, total=1)

    await consumer.start()
    producer = producer_for(consumer, attempts=0)
    async with producer:
        order = make_order()
        in_flight = asyncio.create_task(producer.request(order, reply_type=Receipt))
        async with asyncio.timeout(WAIT):
            await entered.wait()
        closing = asyncio.create_task(consumer.close())
        async with asyncio.timeout(WAIT):
            while True:
                status, body, headers = await post(client, consumer.url, order_json())
                if status == 503:
                    break
                await asyncio.sleep(0.01)
        assert body == {
            "error": "unavailable",
            "detail": "the consumer is shutting down; retry on another instance",
        }
        assert headers["Retry-After"] == "1"
        async with client.get(f"http://127.0.0.1:{consumer.port}/healthz") as resp:
            assert resp.status == 503
        assert not closing.done()  # still draining the in-flight handler
        release.set()
        async with asyncio.timeout(WAIT):
            assert await in_flight == Receipt(order_id=order.order_id, total=1)
            await closing


async def test_close_cancels_a_handler_past_the_shutdown_timeout(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    consumer = order_consumer(queue_name, shutdown_timeout=0.1)
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    @consumer()
    async def handle(msg: Order) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    await consumer.start()
    request = asyncio.create_task(post(client, consumer.url, order_json()))
    async with asyncio.timeout(WAIT):
        await entered.wait()
        await consumer.close()
        status, body, _ = await request
    assert cancelled.is_set()
    assert (status, body["error"]) == (503, "unavailable")


async def test_early_413_to_a_client_still_uploading_does_not_stall_close(queue_name: str) -> None:
    # Lingering and shutdown bounds far above the wait below: only ending the lingering read
    # of the refused upload lets close() return in time.
    consumer = order_consumer(
        queue_name,
        limits=Limits(max_message_size=1000),
        lingering_time=600,
        shutdown_timeout=600,
    )
    consumer()(_noop)
    await consumer.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
    try:
        writer.write(
            f"POST /{queue_name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode()
            + b" " * 65536
        )
        await writer.drain()
        async with asyncio.timeout(WAIT):
            status_line = await reader.readline()
            assert status_line.split()[1] == b"413"
            writer.write(b" " * 65536)  # the client goes on uploading
            await writer.drain()
            await consumer.close()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


# -- configuration ------------------------------------------------------------------------


async def test_send_options_are_checked(queue_name: str) -> None:
    async with HTTPProducer(Queue(queue_name, Order), host="127.0.0.1", port=free_port()) as p:
        with pytest.raises(
            ConfigurationError, match="accepted: endpoint, header_tag, headers_tag, method"
        ):
            await p.send(make_order(), verb="GET")
        with pytest.raises(ConfigurationError, match="known: JSON, MSGPACK"):
            await p.send(make_order(), headers_tag="XML")
        with pytest.raises(ConfigurationError, match="'POST' or 'GET'"):
            await p.send(make_order(), method="PATCH")
        with pytest.raises(ConfigurationError, match="not both"):
            await p.send(make_order(), headers_tag="JSON", header_tag="MSGPACK")
        with pytest.raises(ConfigurationError, match="absolute http"):
            await p.send(make_order(), endpoint="ftp://x/y")


def test_settings_are_validated_with_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = Queue("q", Order)
    monkeypatch.setenv("HTTP_PORT", "eighty")
    with pytest.raises(ConfigurationError, match="HTTP_PORT must be a port number"):
        HTTPProducer(queue)
    monkeypatch.delenv("HTTP_PORT")
    # One message style for every transport's settings (streamtools._settings).
    with pytest.raises(
        ConfigurationError, match=r"^HTTPProducer: port must be an int in 1\.\.65535, got 0$"
    ):
        HTTPProducer(queue, port=0)
    with pytest.raises(ConfigurationError, match=r"^HTTPProducer: resend must be a RetryPolicy"):
        HTTPProducer(queue, resend=3)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigurationError, match=r"^HTTPProducer: send_timeout must be seconds > 0"
    ):
        HTTPProducer(queue, send_timeout=0)
    with pytest.raises(ConfigurationError, match=r"^HTTPConsumer: limits must be a Limits, got 5$"):
        HTTPConsumer(queue, limits=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"^HTTPConsumer: dedup_max_bytes must be an int"):
        HTTPConsumer(queue, dedup_max_bytes=0)
    with pytest.raises(ConfigurationError, match=r"^HTTPConsumer: lingering_time must be seconds"):
        HTTPConsumer(queue, lingering_time=float("nan"))
    with pytest.raises(ConfigurationError, match="reserved"):
        HTTPConsumer(Queue("healthz", Order))


def test_endpoint_defaults_from_keywords_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = Queue("orders.created", Order)
    monkeypatch.delenv("HTTP_HOST", raising=False)
    monkeypatch.delenv("HTTP_PORT", raising=False)
    assert str(HTTPProducer(queue).endpoint) == "http://localhost:8080/orders.created"
    monkeypatch.setenv("HTTP_HOST", "orders-svc")
    monkeypatch.setenv("HTTP_PORT", "9000")
    assert str(HTTPProducer(queue).endpoint) == "http://orders-svc:9000/orders.created"
    assert (
        str(HTTPProducer(queue, host="10.0.0.2", port=81).endpoint)
        == "http://10.0.0.2:81/orders.created"
    )
    consumer = HTTPConsumer(queue)
    assert (consumer.host, consumer.port) == ("orders-svc", 9000)


async def test_environment_host_and_port_pair_producer_and_consumer(
    queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("HTTP_PORT", str(free_port()))
    consumer = HTTPConsumer(Queue(queue_name, Order))

    @consumer()
    async def handle(msg: Order) -> Receipt:
        return Receipt(order_id=msg.order_id, total=0)

    async with serving(consumer), HTTPProducer(Queue(queue_name, Order)) as producer:
        order = make_order()
        assert (await producer.request(order, reply_type=Receipt)).order_id == order.order_id


async def test_registered_headers_preset_is_usable(
    queue_name: str, client: aiohttp.ClientSession
) -> None:
    preset = register_headers_preset("packed-v1", "application/msgpack", {"X-Schema": "v1"})
    assert headers_presets()["PACKED-V1"] is preset
    with pytest.raises(ConfigurationError, match="built in"):
        register_headers_preset("json", "application/json")
    with pytest.raises(ConfigurationError, match="set by the producer"):
        register_headers_preset("bad", "application/json", {"ce-id": "x"})
    with pytest.raises(ConfigurationError, match="content type must be one of"):
        register_headers_preset("xml", "application/xml")
    consumer = order_consumer(queue_name)
    seen: list[Metadata] = []

    @consumer()
    async def handle(msg: Order) -> Receipt:
        seen.append(current_metadata())
        return Receipt(order_id=msg.order_id, total=2)

    async with serving(consumer), producer_for(consumer) as producer:
        order = make_order()
        reply = await producer.request(order, reply_type=Receipt, headers_tag="packed-v1")
    assert reply.total == 2
    assert seen[0].content_type == "application/msgpack"


async def test_quiet_logs_on_success(queue_name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="streamtools")
    consumer = order_consumer(queue_name)
    consumer()(_noop)
    async with serving(consumer), producer_for(consumer) as producer:
        for _ in range(5):
            await producer.send(make_order())
    assert [r for r in caplog.records if r.name.startswith("streamtools")] == []


async def test_get_needs_an_object_message_of_bounded_size(queue_name: str) -> None:
    async with HTTPProducer(queue_name, host="127.0.0.1", port=free_port()) as producer:
        with pytest.raises(EncodeError, match="must encode as a JSON object"):
            await producer.send([1, 2, 3], method="GET")
        with pytest.raises(EncodeError, match="send it with method='POST'"):
            await producer.send({"blob": "x" * 10_000}, method="GET")


async def test_request_without_a_reply_in_time_raises_reply_timeout(queue_name: str) -> None:
    consumer = order_consumer(queue_name, shutdown_timeout=0.1)

    @consumer()
    async def handle(msg: Order) -> None:
        await asyncio.Event().wait()

    async with serving(consumer), producer_for(consumer) as producer:
        with pytest.raises(ReplyTimeoutError, match=r"within 0\.2 s .*may still be handled"):
            await producer.request(make_order(), reply_type=Receipt, timeout=0.2)


async def test_request_timeout_bounds_the_retries_too(queue_name: str) -> None:
    consumer = order_consumer(queue_name)
    consumer()(_noop)

    async def always(n: int) -> int:
        return 503

    async with (
        serving(consumer),
        front(consumer.url, always) as (url, seen),
        producer_for(consumer, attempts=1_000_000, max_delay=0.05) as producer,
    ):
        with pytest.raises(ReplyTimeoutError, match=r"within 0\.5 s \(retries included\)"):
            async with asyncio.timeout(WAIT):
                await producer.request(make_order(), reply_type=Receipt, timeout=0.5, endpoint=url)
    assert len(seen) > 1  # it was retrying when the time ran out
    assert len(set(seen)) == 1


# -- portability ----------------------------------------------------------------------------

_WITHOUT_FCNTL = """
import socket, sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
sys.modules["termios"] = None
import streamtools.transports.http
from streamtools.transports.http._connection import _unread_bytes
left, right = socket.socketpair()
right.sendall(b"unread")
print(_unread_bytes(left.fileno()))
"""


def test_the_http_transport_imports_without_fcntl_and_termios() -> None:
    # fcntl and termios are POSIX-only; the transport asks FIONREAD through them where it
    # needs it, and answers 0 (unknown) where they do not exist.
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_FCNTL], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
    # with them, the same bytes are counted
    with_fcntl = _WITHOUT_FCNTL.replace('sys.modules["fcntl"] = None', "").replace(
        'sys.modules["termios"] = None', ""
    )
    done = subprocess.run(
        [sys.executable, "-c", with_fcntl], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"
