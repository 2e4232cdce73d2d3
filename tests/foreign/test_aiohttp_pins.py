"""Pins of the aiohttp hooks and private state `streamtools._foreign.aiohttp` relies on
(checked: aiohttp 3.14.5, and 3.13.4, the floor, by `make test-min`).

Each hook the HTTP transport overrides is pinned by its parameters and whether it is a
coroutine function; each private attribute it reads, on a real `web.Server` and connection on
a loopback socket (no mocks). A failure names the hook and the aiohttp version, so an upgrade
that changes one is found here, not as a hung `close()` or a wrong answer under load.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest
from aiohttp import web, web_protocol
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http import RawRequestMessage
from aiohttp.streams import StreamReader

from streamtools._foreign import aiohttp as foreign

VERSION = foreign.VERSION
EMPTY = inspect.Parameter.empty
POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
KEYWORD = inspect.Parameter.KEYWORD_ONLY
VAR_KEYWORD = inspect.Parameter.VAR_KEYWORD


def _where(hook: str) -> str:
    return f"aiohttp {VERSION}: {hook} changed; see streamtools._foreign.aiohttp"


def _shape(function: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


# hook -> (the function, the parameters we rely on, whether it is a coroutine function)
HOOKS: dict[str, tuple[Callable[..., Any], list[tuple[str, Any, Any]], bool]] = {
    # overridden by foreign.RequestHandler (its error hook)
    "RequestHandler.handle_error": (
        web_protocol.RequestHandler.handle_error,
        [
            ("self", POSITIONAL, EMPTY),
            ("request", POSITIONAL, EMPTY),
            ("status", POSITIONAL, 500),
            ("exc", POSITIONAL, None),
            ("message", POSITIONAL, None),
        ],
        False,
    ),
    # the asyncio protocol methods Connection refines (calling aiohttp's first or after)
    "RequestHandler.connection_made": (
        web_protocol.RequestHandler.connection_made,
        [("self", POSITIONAL, EMPTY), ("transport", POSITIONAL, EMPTY)],
        False,
    ),
    "RequestHandler.connection_lost": (
        web_protocol.RequestHandler.connection_lost,
        [("self", POSITIONAL, EMPTY), ("exc", POSITIONAL, EMPTY)],
        False,
    ),
    "RequestHandler.data_received": (
        web_protocol.RequestHandler.data_received,
        [("self", POSITIONAL, EMPTY), ("data", POSITIONAL, EMPTY)],
        False,
    ),
    # called by Connection (not overridden): closing now, or after the answer in progress
    "RequestHandler.force_close": (
        web_protocol.RequestHandler.force_close,
        [("self", POSITIONAL, EMPTY)],
        False,
    ),
    "RequestHandler.close": (
        web_protocol.RequestHandler.close,
        [("self", POSITIONAL, EMPTY)],
        False,
    ),
    # overridden by foreign.Server: the protocol factory and the two stop hooks
    "Server.__call__": (web.Server.__call__, [("self", POSITIONAL, EMPTY)], False),
    "Server.pre_shutdown": (web.Server.pre_shutdown, [("self", POSITIONAL, EMPTY)], False),
    "Server.shutdown": (
        web.Server.shutdown,
        [("self", POSITIONAL, EMPTY), ("timeout", POSITIONAL, None)],
        True,
    ),
    # overridden by foreign.ServerRunner
    "ServerRunner.cleanup": (web.ServerRunner.cleanup, [("self", POSITIONAL, EMPTY)], True),
    "ServerRunner.shutdown": (web.ServerRunner.shutdown, [("self", POSITIONAL, EMPTY)], True),
    # overridden by foreign.OneWriteResponse
    "StreamResponse.prepare": (
        web.StreamResponse.prepare,
        [("self", POSITIONAL, EMPTY), ("request", POSITIONAL, EMPTY)],
        True,
    ),
    # implemented by AnswerCounter (public API, pinned as the count of answers rests on it)
    "AbstractAccessLogger.__init__": (
        AbstractAccessLogger.__init__,
        [
            ("self", POSITIONAL, EMPTY),
            ("logger", POSITIONAL, EMPTY),
            ("log_format", POSITIONAL, EMPTY),
        ],
        False,
    ),
    "AbstractAccessLogger.log": (
        AbstractAccessLogger.log,
        [
            ("self", POSITIONAL, EMPTY),
            ("request", POSITIONAL, EMPTY),
            ("response", POSITIONAL, EMPTY),
            ("time", POSITIONAL, EMPTY),
        ],
        False,
    ),
    # called by foreign.ServerRunner.shutdown to end a refused body's read
    "StreamReader.feed_eof": (StreamReader.feed_eof, [("self", POSITIONAL, EMPTY)], False),
}


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_signature(hook: str) -> None:
    function, expected, coroutine = HOOKS[hook]
    assert _shape(function) == expected, _where(f"{hook} parameters {_shape(function)}")
    assert inspect.iscoroutinefunction(function) is coroutine, _where(
        f"{hook} is {'no longer' if coroutine else 'now'} a coroutine function"
    )


def test_request_handler_init_takes_the_manager_and_the_loop() -> None:
    # Connection passes the server positionally and Server.handler_kwargs() as keywords.
    hook = "RequestHandler.__init__"
    parameters = inspect.signature(web_protocol.RequestHandler.__init__).parameters
    names = list(parameters)
    assert names[:2] == ["self", "manager"], _where(f"{hook} parameters {names}")
    for name in ("loop", "access_log_class", "access_log", "keepalive_timeout"):
        assert name in parameters, _where(f"{hook} (no {name}=)")
        assert parameters[name].kind is KEYWORD, _where(f"{hook} ({name}= not keyword-only)")
    for name in ("lingering_time", "auto_decompress"):
        assert name in parameters, _where(f"{hook} (no {name}=)")


def test_server_runner_init_takes_the_server_and_a_shutdown_timeout() -> None:
    hook = "ServerRunner.__init__ / BaseRunner.__init__"
    runner = inspect.signature(web.ServerRunner.__init__).parameters
    assert list(runner)[:2] == ["self", "web_server"], _where(f"{hook} {list(runner)}")
    assert any(p.kind is VAR_KEYWORD for p in runner.values()), _where(hook)
    base = inspect.signature(web.BaseRunner.__init__).parameters
    assert "shutdown_timeout" in base, _where(f"{hook} (no shutdown_timeout=)")


def test_stream_response_private_state_has_the_defaults_prepare_relies_on() -> None:
    hook = "StreamResponse private state (_eof_sent, _payload_writer, _keep_alive, ...)"
    response = web.StreamResponse()
    assert response._eof_sent is False, _where(hook)
    assert response._payload_writer is None, _where(hook)
    assert response._keep_alive is None, _where(hook)
    assert response._body_length == 0, _where(hook)
    # `prepared` and `body_length` read the state OneWriteResponse.prepare sets
    response._eof_sent = True
    assert response.prepared, _where("StreamResponse.prepared no longer reads _eof_sent")
    response._body_length = 7
    assert response.body_length == 7, _where("StreamResponse.body_length no longer _body_length")
    assert "_req" in dir(web.StreamResponse) or hasattr(response, "_req"), _where(hook)


# -- a real server on a loopback socket -----------------------------------------------------


class _Handler(foreign.RequestHandler):
    __slots__ = ()


class _Server(foreign.Server):
    """foreign.Server recording the order of its stop hooks."""

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.events: list[str] = []
        self.made: list[_Handler] = []

    def make_protocol(self) -> asyncio.BaseProtocol:
        handler = _Handler(self, **self.handler_kwargs())
        self.made.append(handler)
        return handler

    def stop_connections(self) -> None:
        self.events.append("pre_shutdown")
        super().stop_connections()

    async def finish_connections(self, timeout: float | None) -> None:
        self.events.append(f"shutdown({timeout})")
        await super().finish_connections(timeout)


class _Runner(foreign.ServerRunner):
    async def shutdown(self) -> None:
        assert isinstance(self.server, _Server)
        self.server.events.append("runner.shutdown")
        await super().shutdown()


class _Counter(AbstractAccessLogger):
    answers: ClassVar[list[str]] = []

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.answers.append(request.path)


@asynccontextmanager
async def _serving(
    handler: Callable[[web.BaseRequest], Any],
) -> AsyncIterator[tuple[_Server, _Runner, web.TCPSite]]:
    server = _Server(
        handler, access_log=logging.getLogger("test.access"), access_log_class=_Counter
    )
    runner = _Runner(server, set(), shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield server, runner, site
    finally:
        await runner.cleanup()


async def _read_answers(reader: asyncio.StreamReader, count: int) -> bytes:
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith(b"ok"):
        chunk = await asyncio.wait_for(reader.read(65536), 5)
        if not chunk:
            break
        data += chunk
    return data


async def test_private_state_of_a_real_server_and_connection() -> None:
    _Counter.answers = []
    release = asyncio.Event()
    started = asyncio.Event()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        started.set()
        await release.wait()
        return web.Response(text="ok")

    async with _serving(handle) as (server, runner, site):
        # BaseSite._server: the listening asyncio server (foreign.listening_server)
        listener = foreign.listening_server(site)
        assert isinstance(listener, asyncio.Server), _where("BaseSite._server")
        port = runner.addresses[0][1]
        assert listener.sockets[0].getsockname()[1] == port, _where("BaseSite._server")

        # Server._loop and Server._kwargs: what aiohttp's own factory passes each handler
        kwargs = server.handler_kwargs()
        assert kwargs["loop"] is asyncio.get_running_loop(), _where("Server._loop")
        assert kwargs["access_log_class"] is _Counter, _where("Server._kwargs")

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # two pipelined requests: the first is served, the second waits in the queue
        writer.write(
            b"GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await asyncio.wait_for(started.wait(), 5)
        for _ in range(100):
            if server.made and server.made[0].requests_read == 2:
                break
            await asyncio.sleep(0.01)
        assert len(server.made) == 1, _where("Server.__call__ (the protocol factory)")
        handler = server.made[0]
        # Server.connections (public) and Server._connections (cleared at shutdown)
        assert server.connections == [handler], _where("Server.connections")
        assert handler in server._connections, _where("Server._connections")
        # RequestHandler._loop
        assert handler.event_loop is asyncio.get_running_loop(), _where("RequestHandler._loop")
        # RequestHandler._request_count: both requests' headers parsed
        assert handler.requests_read == 2, _where("RequestHandler._request_count")
        # RequestHandler._messages: a deque of (RawRequestMessage, StreamReader) pairs
        messages = handler._messages
        assert isinstance(messages, collections.deque), _where("RequestHandler._messages")
        assert handler.queued == 1, _where("RequestHandler._messages (the queue)")
        message, payload = messages[-1]
        assert isinstance(message, RawRequestMessage), _where("RequestHandler._messages[i][0]")
        assert message.path == "/second", _where("RequestHandler._messages[i][0]")
        assert isinstance(payload, StreamReader), _where("RequestHandler._messages[i][1]")
        assert handler.newest_body() is payload, _where("RequestHandler._messages")
        # RequestHandler._current_request: the request whose handler runs
        current = handler.request_in_progress
        assert isinstance(current, web.BaseRequest), _where("RequestHandler._current_request")
        assert current.path == "/first", _where("RequestHandler._current_request")
        assert current.protocol is handler, _where("BaseRequest.protocol")
        # RequestHandler._task_handler: the task running this connection's requests
        task = handler._task_handler
        assert isinstance(task, asyncio.Task), _where("RequestHandler._task_handler")
        assert not task.done(), _where("RequestHandler._task_handler")

        release.set()
        answers = await _read_answers(reader, 2)
        assert answers.count(b"HTTP/1.1 200") == 2, answers
        # the access logger is called once per answer written (AnswerCounter's count)
        assert _Counter.answers == ["/first", "/second"], _where("RequestHandler.log_access")
        writer.close()
        await writer.wait_closed()
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)

    # BaseRunner.cleanup: pre_shutdown, then the runner's shutdown, then the server's
    # shutdown with the runner's shutdown_timeout
    assert server.events == ["pre_shutdown", "runner.shutdown", "shutdown(2.0)"], _where(
        f"BaseRunner.cleanup's order of stop hooks {server.events}"
    )
    assert not server._connections, _where("Server._connections")


async def test_cancel_handler_cancels_the_task_of_the_connection() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return web.Response(text="late")

    async with _serving(handle) as (server, runner, _site):
        _, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        server.made[0].cancel_handler()
        await asyncio.wait_for(cancelled.wait(), 5)
        writer.close()
        await writer.wait_closed()


async def test_handle_error_answers_a_request_the_parser_refused() -> None:
    seen: list[int] = []

    class Refusing(_Handler):
        __slots__ = ()

        def error_response(
            self,
            request: web.BaseRequest,
            status: int,
            exc: BaseException | None,
            message: str | None,
        ) -> web.StreamResponse:
            seen.append(status)
            return web.Response(status=status, text="refused", headers={"Connection": "close"})

    class RefusingServer(_Server):
        def make_protocol(self) -> asyncio.BaseProtocol:
            return Refusing(self, **self.handler_kwargs())

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    server = RefusingServer(handle, access_log=None)
    runner = foreign.ServerRunner(server, set(), shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
    finally:
        await runner.cleanup()
    assert seen == [400], _where("RequestHandler.handle_error (not called for a parse error)")
    assert answer.split(b"\r\n")[0].split(b" ")[1] == b"400", answer
    assert answer.endswith(b"refused"), answer


async def test_runner_shutdown_ends_the_read_of_an_unread_body() -> None:
    got: list[StreamReader] = []
    unread: set[StreamReader] = set()

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        got.append(request.content)
        unread.add(request.content)
        return web.Response(status=413, text="too big")

    server = foreign.Server(handle, access_log=None, lingering_time=30.0)
    runner = foreign.ServerRunner(server, unread, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", runner.addresses[0][1])
    try:
        # a body announced and never sent: aiohttp would linger reading it for 30 s
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nx")
        answer = await asyncio.wait_for(reader.readuntil(b"too big"), 5)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        async with asyncio.timeout(10):
            await runner.cleanup()
    finally:
        writer.close()
    assert got, "the handler never ran"
    assert got[0].is_eof(), _where("StreamReader.feed_eof")
    assert not unread


async def test_our_attribute_names_do_not_shadow_aiohttp_state() -> None:
    # Connection, ConnectionServer and Answer keep their own state on aiohttp's objects:
    # a name aiohttp starts to use would be overwritten by both sides.
    from streamtools.transports.http import _connection

    def state(instance: object) -> set[str]:
        names = set(dir(instance))
        for klass in type(instance).__mro__:
            names.update(getattr(klass, "__slots__", ()))
        return names

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response()

    ours = {
        "RequestHandler": (
            state(web_protocol.RequestHandler(web.Server(handle), loop=asyncio.get_running_loop())),
            set(_connection.Connection.__slots__) - {"__weakref__"},
        ),
        "Server": (
            state(web.Server(handle)),
            {"limits", "stopping", "_pending", "_refusal"},  # set in ConnectionServer.__init__
        ),
        # set in Answer.__init__
        "StreamResponse": (state(web.StreamResponse()), {"_outcome", "_duplicate"}),
    }
    # and the names streamtools._foreign.aiohttp adds (the accessors and hooks of its own)
    overrides = {"handle_error", "pre_shutdown", "shutdown", "cleanup", "prepare"}
    for name, fence in (
        ("RequestHandler", foreign.RequestHandler),
        ("Server", foreign.Server),
        ("StreamResponse", foreign.OneWriteResponse),
    ):
        own = {n for n in vars(fence) if n[:2] != "__" and n != "_abc_impl"}
        ours[name][1].update(own - overrides)
    runner = web.ServerRunner(web.Server(handle))
    ours["ServerRunner"] = (state(runner), {"unread"})
    for name, (theirs, mine) in ours.items():
        assert not theirs & mine, _where(f"{name} now has attributes named {theirs & mine}")
