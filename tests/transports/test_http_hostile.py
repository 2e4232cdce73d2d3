"""Hostile input and exhaustion on the HTTP consumer (#15): each attack gets its answer, and
a normal request is served right after it.

Real servers on 127.0.0.1 port 0 and raw sockets (asyncio streams) for what no HTTP client
sends. Every wait is bounded by WAIT; no pass/fail threshold is a timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
import trustme

from streamtools import Limits, Queue
from streamtools.transports.http import HTTPConsumer
from tests.conftest import unique_name

WAIT = 30.0  # bound for every wait; never a pass/fail timing threshold


class Note(msgspec.Struct):
    n: int
    f: float = 0.0
    s: str = ""


Answer = tuple[int, dict[str, str], Any]


def request(
    body: bytes = b'{"n": 1}',
    *,
    path: str,
    headers: str = "",
    content_type: str = "application/json",
) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    )
    return head.encode() + body


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines[1:] if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    parsed = (
        msgspec.json.decode(body) if headers.get("content-type") == "application/json" else body
    )
    return status, headers, parsed


async def exchange(port: int, data: bytes) -> Answer:
    """Send `data` on a new connection and read one answer."""
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            return await read_answer(reader)
        finally:
            writer.close()


def assert_error(answer: Answer, status: int, error: str | None = None) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, answer
    assert headers["content-type"] == "application/json", answer
    assert isinstance(body, dict), answer
    assert set(body) >= {"error", "detail"}, answer
    if error is not None:
        assert body["error"] == error, answer
    return body


@pytest.fixture
def make() -> Callable[..., HTTPConsumer[Note]]:
    def factory(**settings: Any) -> HTTPConsumer[Note]:
        return HTTPConsumer(Queue(unique_name(), Note), host="127.0.0.1", port=0, **settings)

    return factory


@pytest.fixture
async def served(make: Callable[..., HTTPConsumer[Note]]) -> AsyncIterator[HTTPConsumer[Note]]:
    consumer = make(limits=Limits(max_message_size=64 * 1024))
    consumer.seen = []  # type: ignore[attr-defined]

    @consumer()
    async def handle(note: Note) -> None:
        consumer.seen.append(note)  # type: ignore[attr-defined]

    await consumer.start()
    yield consumer
    await consumer.close()


async def assert_serves(consumer: HTTPConsumer[Any], headers: str = "") -> None:
    """A normal request is answered 204."""
    answer = await exchange(consumer.port, request(path="/" + consumer.queue.name, headers=headers))
    assert answer[0] == 204, answer


def gzip_bomb(size: int) -> bytes:
    compress = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\0" * (1 << 20)
    return b"".join(compress.compress(chunk) for _ in range(size >> 20)) + compress.flush()


# -- item 4: aiohttp's parser errors as JSON --------------------------------------------------

PARSER_ERRORS = {
    "header over 8190 bytes": b"POST /q HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "more than 128 headers": b"POST /q HTTP/1.1\r\nHost: t\r\n"
    + b"".join(b"X-%d: 1\r\n" % i for i in range(130))
    + b"\r\n",
    "Content-Length with Transfer-Encoding": b"POST /q HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    "duplicate Content-Type": b"POST /q HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    "non-ASCII request line": "POST /q\u00e9 HTTP/1.1\r\nHost: t\r\n\r\n".encode(),
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("raw", PARSER_ERRORS.values(), ids=PARSER_ERRORS.keys())
async def test_a_request_aiohttp_cannot_parse_is_answered_json(
    served: HTTPConsumer[Note], raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        answer = await exchange(served.port, raw.replace(b"/q", b"/" + served.queue.name.encode()))
    assert_error(answer, 400, "malformed")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no log flood
    await assert_serves(served)


async def test_an_asterisk_target_is_400_json(served: HTTPConsumer[Note]) -> None:
    assert_error(await exchange(served.port, b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"), 400)
    await assert_serves(served)


@pytest.mark.parametrize("coding", ["br", "zstd", "gzip, gzip", "compress"])
async def test_an_unsupported_content_encoding_is_415_json(
    served: HTTPConsumer[Note], coding: str
) -> None:
    path = "/" + served.queue.name
    answer = await exchange(
        served.port, request(path=path, headers=f"Content-Encoding: {coding}\r\n")
    )
    assert_error(answer, 415, "unsupported_encoding")
    await assert_serves(served)
    assert len(served.seen) == 1  # type: ignore[attr-defined]


# -- item 2: compression bombs ----------------------------------------------------------------


@pytest.fixture
def inflaters(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the zlib decompressors made (aiohttp's and streamtools' both make them)."""
    made: list[int] = []
    real = zlib.decompressobj

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(zlib, "decompressobj", counting)
    return made


async def test_refused_gzip_bombs_are_never_inflated(
    make: Callable[..., HTTPConsumer[Note]], inflaters: list[int]
) -> None:
    consumer = make(token="s3cret")

    @consumer()
    async def handle(note: Note) -> None:
        return None

    bomb = gzip_bomb(64 << 20)
    async with consumer:
        await consumer.start()
        path = "/" + consumer.queue.name
        refused = request(bomb, path=path, headers="Content-Encoding: gzip\r\n")
        answers = await asyncio.gather(*(exchange(consumer.port, refused) for _ in range(5)))
        for answer in answers:
            assert_error(answer, 401, "unauthorized")
        assert inflaters == []  # authentication came first; the lingering read did not inflate
        await assert_serves(consumer, "Authorization: Bearer s3cret\r\n")


async def test_an_accepted_gzip_bomb_is_inflated_no_further_than_the_limit(
    served: HTTPConsumer[Note],
) -> None:
    path = "/" + served.queue.name
    answer = await exchange(
        served.port, request(gzip_bomb(64 << 20), path=path, headers="Content-Encoding: gzip\r\n")
    )
    assert_error(answer, 413, "too_large")
    await assert_serves(served)


@pytest.mark.parametrize(
    ("coding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
async def test_compressed_bodies_within_the_limit_are_served(
    served: HTTPConsumer[Note], coding: str, wbits: int
) -> None:
    compress = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = compress.compress(b'{"n": 7}') + compress.flush()
    path = "/" + served.queue.name
    answer = await exchange(
        served.port, request(body, path=path, headers=f"Content-Encoding: {coding}\r\n")
    )
    assert answer[0] == 204, answer
    assert served.seen == [Note(7)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "body", [b"not gzip at all", gzip.compress(b'{"n": 1}')[:-6]], ids=["garbage", "cut"]
)
async def test_a_broken_gzip_body_is_400(served: HTTPConsumer[Note], body: bytes) -> None:
    path = "/" + served.queue.name
    answer = await exchange(
        served.port, request(body, path=path, headers="Content-Encoding: gzip\r\n")
    )
    assert_error(answer, 400, "malformed")
    await assert_serves(served)


# -- hostile bodies that pass today: pinned -------------------------------------------------------

BODIES: dict[str, tuple[bytes, str, int, str]] = {
    "msgpack array length bomb": (
        b"\xdd\xff\xff\xff\xff",
        "application/msgpack",
        422,
        "validation",
    ),
    "msgpack str length bomb": (
        b"\x81\xa1n\xdb\xff\xff\xff\xff",
        "application/msgpack",
        400,
        "malformed",
    ),
    "msgpack map length bomb": (
        b"\xdf\xff\xff\xff\xff\xa1n",
        "application/msgpack",
        400,
        "malformed",
    ),
    "1e400 for an int": (b'{"n": 1e400}', "application/json", 422, "validation"),
    "1e400 for a float": (b'{"n": 1, "f": 1e400}', "application/json", 422, "validation"),
    "10**5000": (b'{"n": 1' + b"0" * 5000 + b"}", "application/json", 422, "validation"),
    "invalid UTF-8": (b'{"n": 1, "s": "\xff\xfe"}', "application/json", 400, "malformed"),
    "a UTF-8 BOM": (b'\xef\xbb\xbf{"n": 1}', "application/json", 400, "malformed"),
    "nested 1000 deep": (b"[" * 1000 + b"]" * 1000, "application/json", 422, "validation"),
    "nested 30000 deep": (b"[" * 30_000 + b"]" * 30_000, "application/json", 422, "validation"),
}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"), BODIES.values(), ids=BODIES.keys()
)
async def test_a_hostile_body_is_refused_and_the_server_serves_on(
    served: HTTPConsumer[Note], body: bytes, content_type: str, status: int, error: str
) -> None:
    path = "/" + served.queue.name
    answer = await exchange(served.port, request(body, path=path, content_type=content_type))
    assert_error(answer, status, error)
    await assert_serves(served)
    assert len(served.seen) == 1  # type: ignore[attr-defined]


async def test_duplicate_keys_take_the_last_value(served: HTTPConsumer[Note]) -> None:
    path = "/" + served.queue.name
    answer = await exchange(served.port, request(b'{"n": 1, "n": 2}', path=path))
    assert answer[0] == 204
    assert served.seen == [Note(2)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "trick", ["/{q}/../{q}", "/%2e%2e/{q}", "//{q}", "/{q}/", "/./{q}", "/{q}%00", "/{q};x"]
)
async def test_a_path_trick_reaches_no_queue(served: HTTPConsumer[Note], trick: str) -> None:
    path = trick.format(q=served.queue.name)
    assert_error(await exchange(served.port, request(path=path)), 404, "not_found")
    await assert_serves(served)
    assert len(served.seen) == 1  # type: ignore[attr-defined]


# -- item 2: slow clients, connection and in-flight limits ----------------------------------------


async def test_half_open_clients_are_bounded_by_the_limit_and_the_header_timeout(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(max_connections=8, header_timeout=0.3)

    @consumer()
    async def handle(note: Note) -> None:
        return None

    async with consumer:
        await consumer.start()
        streams = []
        async with asyncio.timeout(WAIT):
            for _ in range(12):
                reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
                writer.write(b"POST /" + consumer.queue.name.encode() + b" HTTP/1.1\r\nHost: t\r\n")
                streams.append((reader, writer))
            answers = [await read_answer(reader) for reader, _ in streams]
            for reader, _ in streams:
                assert await reader.read() == b""  # and the connection is closed
        for _, writer in streams:
            writer.close()
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [408] * 8 + [503] * 4  # the limit refused 4 at once
        for answer in answers:
            assert_error(answer, answer[0], "timeout" if answer[0] == 408 else "unavailable")
            assert answer[1]["connection"] == "close"
        await assert_serves(consumer)


async def test_a_silent_connection_is_closed_after_the_header_timeout(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(header_timeout=0.2)

    @consumer()
    async def handle(note: Note) -> None:
        return None

    async with consumer:
        await consumer.start()
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
            assert_error(await read_answer(reader), 408, "timeout")
            assert await reader.read() == b""
            writer.close()
        await assert_serves(consumer)


async def test_a_slow_body_is_408_and_an_idle_keep_alive_connection_closes(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(body_timeout=0.2, keepalive_timeout=0.2)

    @consumer()
    async def handle(note: Note) -> None:
        return None

    async with consumer:
        await consumer.start()
        path = "/" + consumer.queue.name
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
            writer.write(request(b'{"n": 1}' + b" " * 92, path=path)[:-50])  # 50 bytes short
            assert_error(await read_answer(reader), 408, "timeout")
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
            writer.write(request(path=path))
            assert (await read_answer(reader))[0] == 204
            assert await reader.read() == b""  # idle past keepalive_timeout: closed
            writer.close()
        await assert_serves(consumer)


async def test_handlers_in_flight_are_bounded_even_when_their_clients_left(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(limits=Limits(max_in_flight=3))
    gate = asyncio.Event()
    started: list[int] = []
    three = asyncio.Event()

    @consumer()
    async def handle(note: Note) -> None:
        started.append(note.n)
        if len(started) == 3:
            three.set()
        await gate.wait()

    async with consumer:
        await consumer.start()
        path = "/" + consumer.queue.name
        async with asyncio.timeout(WAIT):
            for _ in range(3):  # clients that send and leave
                _, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
                writer.write(request(path=path))
                await writer.drain()
                writer.close()
            await three.wait()
            answer = await exchange(consumer.port, request(path=path))
            assert_error(answer, 503, "overloaded")
            assert answer[1]["retry-after"] == "1"
            gate.set()
            # The count drops as each request's answer is made; no event marks it.
            while consumer._active:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await assert_serves(consumer)
        assert len(started) == 4


async def test_accept_errors_are_logged_once_per_interval(
    served: HTTPConsumer[Note], caplog: pytest.LogCaptureFixture
) -> None:
    from streamtools.transports.http import _connection

    loop = asyncio.get_running_loop()
    _connection._throttle._last = float("-inf")  # a fresh interval, whatever ran before
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        for _ in range(50):
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": OSError(24, "")}
            )
    records = [r for r in caplog.records if "accept()" in r.getMessage()]
    assert len(records) == 1
    await assert_serves(served)


# -- item 3: graceful shutdown ---------------------------------------------------------------------


async def test_close_answers_every_request_it_read_and_closes_keep_alive_connections(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(shutdown_timeout=WAIT)
    gate = asyncio.Event()
    started = asyncio.Event()

    @consumer()
    async def handle(note: Note) -> None:
        if note.n == 2:
            started.set()
            await gate.wait()

    await consumer.start()
    path = "/" + consumer.queue.name
    async with asyncio.timeout(WAIT):
        idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", consumer.port)
        idle_writer.write(request(path=path))
        assert (await read_answer(idle_reader))[0] == 204  # now idle, kept alive
        reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
        # One handled (and held), three pipelined behind it.
        writer.write(request(b'{"n": 2}', path=path) + request(path=path) * 3)
        await started.wait()
        closing = asyncio.create_task(consumer.close())
        await asyncio.sleep(0)  # close() runs up to its drain: intake stopped
        assert consumer._draining
        writer.write(request(path=path))  # read during the drain
        await asyncio.sleep(0.05)
        gate.set()
        answers = [await read_answer(reader) for _ in range(5)]
        assert await reader.read() == b""
        assert await idle_reader.read() == b""  # the idle connection closed without an answer
        await closing
    writer.close()
    idle_writer.close()
    assert [status for status, _, _ in answers] == [204, 503, 503, 503, 503]
    for answer in answers[1:]:
        assert_error(answer, 503, "unavailable")
        assert answer[1]["retry-after"] == "1"
    assert answers[-1][1]["connection"] == "close"  # after the last request it had read


async def test_a_handler_swallowing_cancellation_gets_its_request_answered_503(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(shutdown_timeout=0.1)
    started = asyncio.Event()
    release = asyncio.Event()

    @consumer()
    async def handle(note: Note) -> None:
        started.set()
        try:
            await asyncio.sleep(WAIT * 10)
        except asyncio.CancelledError:
            await release.wait()  # ignores its cancellation

    await consumer.start()
    async with asyncio.timeout(WAIT):
        reader, writer = await asyncio.open_connection("127.0.0.1", consumer.port)
        writer.write(request(path="/" + consumer.queue.name))
        await started.wait()
        await consumer.close()  # returns while the handler still runs
        answer = await read_answer(reader)
    release.set()
    writer.close()
    assert_error(answer, 503, "unavailable")
    assert answer[1]["connection"] == "close"


# -- item 5: /healthz behind a token ---------------------------------------------------------------


async def test_healthz_tells_a_client_without_the_token_the_status_only(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    consumer = make(token="s3cret")

    @consumer()
    async def handle(note: Note) -> None:
        return None

    async with consumer:
        await consumer.start()
        probe = b"GET /healthz HTTP/1.1\r\nHost: t\r\n%s\r\n"
        status, _, body = await exchange(consumer.port, probe % b"")
        assert (status, body) == (200, {"status": "ok"})
        status, _, body = await exchange(consumer.port, probe % b"Authorization: Bearer wrong\r\n")
        assert (status, body) == (200, {"status": "ok"})
        status, _, body = await exchange(consumer.port, probe % b"Authorization: Bearer s3cret\r\n")
        assert (status, body) == (200, {"status": "ok", "queues": [consumer.queue.name]})
        await assert_serves(consumer, "Authorization: Bearer s3cret\r\n")


class Tree(msgspec.Struct):
    node: Any = None


async def test_a_get_query_nested_too_deep_is_a_clean_400() -> None:
    """JSON 1,500 levels deep in a query parameter: refused as malformed (400) like the same
    body in a POST, never a 500 with a traceback; the next GET is served."""
    consumer = HTTPConsumer(Queue(unique_name(), Tree), host="127.0.0.1", port=0)
    seen: list[Tree] = []

    @consumer(method="GET")
    async def handle(tree: Tree) -> None:
        seen.append(tree)

    await consumer.start()
    try:
        deep = "[" * 1500 + "]" * 1500
        path = f"/{consumer.queue.name}?node={deep}"
        head = f"GET {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n".encode()
        assert_error(await exchange(consumer.port, head), 400, "malformed")
        fine = f"GET /{consumer.queue.name}?node=[1] HTTP/1.1\r\nHost: t\r\n\r\n".encode()
        assert (await exchange(consumer.port, fine))[0] == 204
        assert seen == [Tree([1])]
    finally:
        await consumer.close()


# -- item 7: close() under a keep-alive load -------------------------------------------------------


CLIENTS = 200
SEEN_CLOSED = 3.0  # after close() returns, each client's pending read ends within this: no hang
YIELDS = 6


@dataclass(eq=False)
class KeepAliveClient:
    """One keep-alive client of the load: its requests (by message number) and what it saw."""

    sent: list[int] = field(default_factory=list)
    answered: dict[int, int] = field(default_factory=dict)  # message number -> status
    connections: int = 0
    ended: float | None = None  # loop time it saw its last connection end (EOF, reset, refused)


async def keep_alive_client(
    port: int, path: str, number: int, client: KeepAliveClient, returned: asyncio.Event
) -> None:
    """Requests one after another on a keep-alive connection, as aiohttp's client sends
    them: a new connection when the server ends one (after `Connection: close`, EOF or a
    reset), until a connection is refused or close() returned; then the last pending read
    (an answer, then EOF) ends the client."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionError:  # refused: the server stopped listening
            break
        client.connections += 1
        try:
            while not returned.is_set():
                n = number * 1_000_000 + len(client.sent)
                writer.write(request(b'{"n": %d}' % n, path=path))
                client.sent.append(n)
                try:
                    status, headers, _ = await read_answer(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                client.answered[n] = status
                if headers.get("connection") == "close":
                    break
            with contextlib.suppress(ConnectionError):
                while await reader.read(65536):  # nothing else may come; then EOF
                    pass
        finally:
            writer.close()
        if returned.is_set():
            break
    client.ended = loop.time()


async def test_close_under_a_keep_alive_load_closes_every_connection_at_once(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    """200 keep-alive clients send requests one after another (each reconnecting when the
    server ends its connection) while close() runs: after it returns, no client waits on an
    open connection (each sees its answer, then EOF, a reset or a refusal, within
    SEEN_CLOSED), and every request the handler saw was answered (the ones cut without an
    answer were never handled)."""
    consumer = make(shutdown_timeout=WAIT)
    handled: set[int] = set()
    running = asyncio.Event()  # the load runs: 4 requests a client handled
    loop = asyncio.get_running_loop()

    @consumer()
    async def handle(note: Note) -> None:
        handled.add(note.n)
        if len(handled) >= 4 * CLIENTS:
            running.set()
        # One in 20 slower: close() drains them while the other clients, answered 503 with
        # `Connection: close`, connect again and again.
        await asyncio.sleep(0.05 if len(handled) % 20 == 0 else 0.005)

    await consumer.start()
    path = "/" + consumer.queue.name
    clients = [KeepAliveClient() for _ in range(CLIENTS)]
    returned = asyncio.Event()
    tasks = []
    try:
        async with asyncio.timeout(WAIT):
            for number, client in enumerate(clients):  # one by one: a storm of connects
                # overflows the listen backlog (refused)
                tasks.append(
                    asyncio.create_task(
                        keep_alive_client(consumer.port, path, number, client, returned)
                    )
                )
                await asyncio.sleep(0.001)
            await running.wait()
            started = loop.time()
            await consumer.close()
            closed = loop.time()
            returned.set()
        done, hung = await asyncio.wait(tasks, timeout=SEEN_CLOSED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    answered_ok = {n for c in clients for n, status in c.answered.items() if status == 204}
    cut = [n for c in clients for n in c.sent if n not in c.answered]
    seen = [c.ended - started for c in clients if c.ended is not None]
    figures = {
        "close() took": round(closed - started, 3),
        "hung": len(hung),
        "cut": len(cut),
        "handled, unanswered": len(handled - answered_ok),
        "answered 503": sum(s == 503 for c in clients for s in c.answered.values()),
        "connections": sum(c.connections for c in clients),
        "last end seen, s after close() started": round(max(seen, default=0.0), 3),
    }
    print(figures)
    for task in done:
        task.result()  # no client failed otherwise
    assert not hung, figures
    assert handled == answered_ok, figures  # nothing handled without its answer
    assert all(status in (204, 503) for c in clients for status in c.answered.values())


async def test_a_client_connecting_as_close_begins_sees_its_connection_end_at_once(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    """Clients that connect, and send a request, in the last loop iterations before close():
    each gets an answer or sees its connection end, at once. (asyncio makes an accepted
    connection's transport one iteration after accept(); the listening socket closed in
    between used to leave the accepted socket open and unread: CPython gh-109564.)"""
    consumer = make()
    handled: list[int] = []

    @consumer()
    async def handle(note: Note) -> None:
        handled.append(note.n)

    await consumer.start()
    path = "/" + consumer.queue.name
    sockets = []
    try:
        for n in range(YIELDS):  # one connection per loop iteration before close()
            sock = socket.create_connection(("127.0.0.1", consumer.port), timeout=WAIT)
            sock.sendall(request(b'{"n": %d}' % n, path=path))
            sockets.append(sock)
            await asyncio.sleep(0)
        await consumer.close()
        ends: list[bytes | str] = []
        for sock in sockets:
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
            try:
                async with asyncio.timeout(SEEN_CLOSED):  # the bound of "no hang"
                    ends.append(await reader.read())  # the answer, if any, then EOF
            except TimeoutError:
                ends.append("hung")
            except ConnectionError as exc:
                ends.append(type(exc).__name__)
            finally:
                writer.close()
    finally:
        for sock in sockets:
            sock.close()
    assert "hung" not in ends, ends
    for n, end in enumerate(ends):
        assert isinstance(end, str) or end == b"" or end.startswith(b"HTTP/1.1 "), ends
        if n in handled:  # handled: answered
            assert isinstance(end, bytes), ends
            assert end.startswith(b"HTTP/1.1 204 "), ends


async def test_a_tls_handshake_ending_after_close_sees_its_connection_end_at_once(
    make: Callable[..., HTTPConsumer[Note]],
) -> None:
    """A TLS connection accepted before close() whose handshake ends after it: closed at
    once (not left to the header timeout)."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    consumer = make(ssl=server_ctx)

    @consumer()
    async def handle(note: Note) -> None:
        return None

    await consumer.start()
    sock = socket.create_connection(("127.0.0.1", consumer.port), timeout=WAIT)
    try:
        await asyncio.sleep(0.05)  # accepted meanwhile (else the handshake below fails)
        await consumer.close()
        sock.setblocking(False)
        async with asyncio.timeout(WAIT):
            reader, writer = await asyncio.open_connection(
                sock=sock, ssl=client_ctx, server_hostname="127.0.0.1"
            )
        try:
            async with asyncio.timeout(SEEN_CLOSED):  # the bound of "no hang"
                assert await reader.read() == b""
        finally:
            writer.close()
    finally:
        sock.close()
