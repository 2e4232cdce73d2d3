"""aiohttp's private API that the HTTP transport uses, fenced (checked: aiohttp 3.14.5, the
installed one; 3.13.4, the floor `pyproject.toml` allows, by `make test-min`; and read in the
source of aiohttp's master branch of 2026-08-22, 495e778, where every item below still exists
and `RequestHandler.log_access` is a coroutine: streamtools does not override it, see
`AnswerCounter` in `streamtools.transports.http._connection`).

The HTTP consumer serves on aiohttp's low-level server (`web.Server`, `ServerRunner`), not on
an `Application`, and refines the protocol of one connection (`RequestHandler`) where a
hostile client could hold the server (`streamtools.transports.http._connection`). aiohttp
documents neither class as a base to subclass, nor the hooks overridden here, nor the state
read here; each item below says why no public way exists.

`tests/foreign/test_aiohttp_pins.py` pins every hook overridden here (its parameters, and
whether it is a coroutine function) and every private attribute read here (on a real server
and connection on a loopback socket), naming the hook and the aiohttp version when one
changes. The modules of `streamtools.transports.http` reach aiohttp's private API only
through this module.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web, web_protocol
from aiohttp.abc import AbstractStreamWriter
from aiohttp.streams import StreamReader

VERSION: str = aiohttp.__version__


class RequestHandler(web_protocol.RequestHandler):
    """aiohttp's protocol of one server connection, with the state streamtools reads of it
    as named accessors, and its error hook as `error_response`."""

    __slots__ = ()

    @property
    def event_loop(self) -> asyncio.AbstractEventLoop:
        # `_loop`: the loop the server passed in; RequestHandler keeps it private (no
        # `loop` property) and asyncio's protocol API gives a protocol no loop.
        loop: asyncio.AbstractEventLoop = self._loop
        return loop

    @property
    def requests_read(self) -> int:
        # `_request_count`: how many requests the parser completed (or failed to parse) on
        # this connection; it grows within `data_received`, so comparing it around the call
        # tells that a request's headers completed. No public counter or callback says so:
        # the request handler runs only once the request is taken off the queue, after
        # earlier (pipelined) requests are answered.
        count: int = self._request_count
        return count

    @property
    def queued(self) -> int:
        # `_messages`: the requests read and not yet taken by the handler loop (pipelined
        # behind the current one); no public view of the queue exists.
        return len(self._messages)

    def newest_body(self) -> StreamReader | None:
        """The body stream of the newest request read, while it may still arrive."""
        # `_messages` holds `(RawRequestMessage, StreamReader)` pairs; the body arrives into
        # the stream after the headers, and the request object is made only when its turn
        # comes (no public hook sees the stream before that).
        messages = self._messages
        if not messages:
            return None
        body: StreamReader = messages[-1][1]
        return body

    @property
    def request_in_progress(self) -> web.BaseRequest | None:
        # `_current_request`: the request whose handler runs now; no public accessor (the
        # handler knows its request, the connection does not say which one it serves).
        request: web.BaseRequest | None = self._current_request
        return request

    def cancel_handler(self) -> None:
        """Cancel the task that runs this connection's requests (aiohttp's own
        `connection_lost` does the same with `handler_cancellation`)."""
        # `_task_handler`: the task of `RequestHandler.start()`; no public way to cancel it
        # short of losing the connection.
        task: asyncio.Task[None] | None = self._task_handler
        if task is not None:
            task.cancel()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's one hook for the answer to a request its parser refused (or whose handler
        # raised), undocumented: no public option replaces its text/plain answer.
        return self.error_response(request, status, exc, message)

    def error_response(
        self,
        request: web.BaseRequest,
        status: int,
        exc: BaseException | None,
        message: str | None,
    ) -> web.StreamResponse:
        """The answer to a request aiohttp could not parse or whose handler raised (for a
        subclass; aiohttp's own by default)."""
        return super().handle_error(request, status, exc, message)


class Server(web.Server):
    """aiohttp's low-level server, with its protocol factory as `make_protocol`, its stop
    hooks as `stop_connections` and `finish_connections`."""

    def handler_kwargs(self) -> dict[str, Any]:
        """The keywords aiohttp's own factory passes to each `RequestHandler`."""
        # `_loop` and `_kwargs`: what `Server.__call__` gives every RequestHandler it makes
        # (the server's keywords it does not consume itself); read rather than copied, so a
        # connection gets exactly what aiohttp's own would.
        return {"loop": self._loop, **self._kwargs}

    def __call__(self) -> Any:
        # The protocol factory `loop.create_server` calls per accepted connection; aiohttp
        # offers no `protocol_class` option, so making our own protocol means overriding it.
        return self.make_protocol()

    def make_protocol(self) -> asyncio.BaseProtocol:
        """The protocol of a new connection (for a subclass; aiohttp's own by default)."""
        protocol: asyncio.BaseProtocol = super().__call__()
        return protocol

    def pre_shutdown(self) -> None:
        # Called by `BaseRunner.cleanup()` once the listening sockets are closed, before the
        # runner's `shutdown()`; undocumented, no other hook runs at that point.
        self.stop_connections()

    async def shutdown(self, timeout: float | None = None) -> None:
        # Called by `BaseRunner.cleanup()` after the runner's `shutdown()`, with the runner's
        # `shutdown_timeout`; undocumented. aiohttp's own clears its connection table after
        # its connections ended; ours does the same (`_connections`: no public way to empty
        # it; `connections` is a copy).
        await self.finish_connections(timeout)
        self._connections.clear()

    def stop_connections(self) -> None:
        """Stop the connections for a shutdown (for a subclass; aiohttp's by default)."""
        super().pre_shutdown()

    async def finish_connections(self, timeout: float | None) -> None:
        """Wait for the connections to end, within `timeout` (for a subclass; aiohttp's own
        by default)."""
        await super().shutdown(timeout)


def listening_server(site: web.BaseSite) -> asyncio.AbstractServer | None:
    """The listening server of a started site (None before it starts)."""
    # `BaseSite._server`: the `loop.create_server()` result; aiohttp exposes the addresses
    # its sockets are bound to (`BaseRunner.addresses`), not the server or its sockets, and
    # `ServerRunner.cleanup()` closes them with no hook before.
    server: asyncio.AbstractServer | None = site._server
    return server


class ServerRunner(web.ServerRunner):
    """A ServerRunner that stops accepting before it closes its listening sockets, and whose
    shutdown step ends the reads of request bodies no one will read."""

    def __init__(
        self, server: web.Server, unread: set[StreamReader], shutdown_timeout: float
    ) -> None:
        super().__init__(server, shutdown_timeout=shutdown_timeout)
        self.unread = unread

    async def cleanup(self) -> None:
        # asyncio's selector loop makes the transport of an accepted connection in a task,
        # one loop iteration after accept(); `Server.close()` (aiohttp's site.stop()) within
        # that iteration makes it fail on an assertion, reported in debug mode only, and the
        # accepted socket stays open, never read, until garbage collection (CPython
        # gh-109564, open; checked on 3.11.7): a client that connected just before close()
        # would wait on it for an answer. So stop accepting first and let the connections
        # accepted so far get their transports (their tasks were scheduled before this one
        # resumes), then close: `pre_shutdown` then finds every connection. Connections
        # the kernel had queued and no one accepted are reset when the socket closes.
        # aiohttp closes the listening servers inside `cleanup()` with no hook before, so
        # the override; their sockets come from `listening_server` (private).
        loop = asyncio.get_running_loop()
        accepting = False
        for site in self.sites:
            listener = listening_server(site)
            # uvloop's is no asyncio.Server and is left to its own close (the same load
            # against uvloop 0.23 left no client hung).
            if isinstance(listener, asyncio.Server):
                for sock in listener.sockets:
                    try:
                        accepting |= loop.remove_reader(sock.fileno())
                    except NotImplementedError:  # the proactor loop (Windows) has no readers
                        break
        if accepting:
            await asyncio.sleep(0)
        await super().cleanup()

    async def shutdown(self) -> None:
        # Runs (within `cleanup()`) after aiohttp closed every connection for new data
        # (pre_shutdown). A client still uploading a body we refused (413, 401, ...) would
        # hold aiohttp's lingering close, and with it this stop, for `lingering_time`: end
        # those reads now. `StreamReader.feed_eof()` is the protocol side of the stream,
        # undocumented for users; no public call ends a request body early.
        for payload in self.unread:
            if not payload.is_eof() and payload.exception() is None:
                payload.feed_eof()
        self.unread.clear()


class OneWriteResponse(web.StreamResponse):
    """A response whose `prepare` writes status line, headers and body with one call: the
    head and body come from `render`. aiohttp's own `prepare` writes the head through its
    header machinery and the body after it; no public option writes prepared bytes. The
    private state set here is what aiohttp's `prepare`, `write_eof` and `body_length` read
    (`_eof_sent`, `_payload_writer`, `_req`, `_keep_alive`, `_body_length`)."""

    def render(self, request: web.BaseRequest, keep_alive: bool) -> tuple[bytes, int]:
        """The whole answer's bytes, and the length of its body (for a subclass)."""
        raise NotImplementedError

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is not None:  # pragma: no cover - aiohttp prepares once
            writer: AbstractStreamWriter = self._payload_writer
            return writer
        writer = request.writer
        self._req = request
        self._payload_writer = writer
        keep_alive = self._keep_alive
        if keep_alive is None:
            keep_alive = self._keep_alive = request.keep_alive
        data, body_length = self.render(request, keep_alive)
        # One write of head and body; write_eof waits while the client is not reading.
        await writer.write_eof(data)
        self._eof_sent = True
        self._body_length = body_length
        self._req = None
        self._payload_writer = None
        return writer
