"""One client connection of the HTTP server, and the limits every connection lives under.

aiohttp's `RequestHandler` is the protocol of one connection; `Connection` refines it where a
hostile or broken client could otherwise hold the server:

- a request's headers must complete within `header_timeout` of its first byte (and a new
  connection must send its first request within it), else 408 and the connection closes;
  an idle keep-alive connection closes after `keepalive_timeout` (aiohttp's own timer);
- a request aiohttp's parser refuses (a header over 8190 bytes, more than 128 headers,
  Content-Length with Transfer-Encoding, ...) is answered with streamtools' JSON error body,
  not aiohttp's text, and logged at debug level: a client cannot flood the log with them;
- at a stop, an idle connection closes at once (one whose TLS handshake ends after the stop
  too) and a busy one after the answers to every request it has read (pipelined ones too): no
  request read before the stop is cut.

`ConnectionServer` is aiohttp's low-level `web.Server` making `Connection`s: it refuses
connections past `max_connections` with a 503 (the descriptor is closed at once), and its
shutdown waits for the connections to finish their answers, then answers for handlers that
ignore their cancellation, so such a handler cannot hold `close()`.
"""

from __future__ import annotations

import array
import asyncio
import logging
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.streams import StreamReader

from streamtools._foreign import aiohttp as foreign
from streamtools.transports.http._outcome import (
    Outcome,
    error_outcome,
    raw_answer,
    response,
)

logger = logging.getLogger("streamtools.http")

_ACCEPT_ERROR: Final = "socket.accept() out of system resource"
_MAX_DETAIL: Final = 300


@dataclass(frozen=True)
class ConnectionLimits:
    """What one server allows each connection (set by the consumer that starts it)."""

    max_connections: int
    header_timeout: float
    keepalive_timeout: float
    lingering_time: float


def _overloaded(limit: int) -> Outcome:
    return error_outcome(
        503, "unavailable", f"the server holds its limit of {limit} connections; retry later"
    )


class _Refuse(asyncio.Protocol):
    """A connection past the limit: answered 503 and closed before it is read."""

    def __init__(self, answer: bytes) -> None:
        self._answer = answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(self._answer)
        transport.close()


def _unread_bytes(fd: int) -> int:
    """Bytes the kernel holds unread on socket `fd` (FIONREAD), 0 when unknown."""
    # fcntl and termios are POSIX-only: imported here, so the transport imports on Windows
    # too, where this answers 0 (a stop then treats an idle connection as idle even when a
    # request's first bytes sit unread in the kernel: it is closed, and the client retries).
    try:
        import fcntl
        import termios
    except ImportError:
        return 0
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except OSError:
        return 0
    return count[0]


class AnswerCounter(AbstractAccessLogger):
    """The access logger of a `ConnectionServer`: it logs nothing, and counts each answer
    on its connection (`Connection.answered`).

    aiohttp calls its access logger once per answer, once it is written (in
    `finish_response`, also when the client went away meanwhile): the count of answered
    requests, without a coroutine of ours around every request and without overriding
    `RequestHandler.log_access` (a coroutine on aiohttp's master branch, a plain method in
    3.x; aiohttp wraps a plain `AbstractAccessLogger` for its async one, so this works with
    either). A request that ends without an answer (its task cancelled, its connection
    broken) ends its connection, idle or not.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        protocol = request.protocol
        if isinstance(protocol, Connection):
            protocol.answered()


class Connection(foreign.RequestHandler):
    """One client connection: header timeout, JSON parser errors, graceful stop."""

    __slots__ = (
        "__weakref__",  # held weakly while pending (ConnectionServer._pending)
        "_answered",
        "_body",
        "_header_handle",
        "_header_timeout",
        "_owner",
        "_partial",
        "lost",
    )

    def __init__(self, owner: ConnectionServer, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(owner, **kwargs)
        self._owner = owner
        self._header_timeout = header_timeout
        self._header_handle: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the last request's body while it arrives
        self._partial = False  # part of a request's headers arrived
        self._answered = 0  # of the `requests_read`
        self.lost: asyncio.Future[None] = self.event_loop.create_future()

    # -- timeouts ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._owner._pending.discard(self)
        super().connection_made(transport)
        self._arm()  # the first request's headers are due within the header timeout
        if self._owner.stopping:  # connected after the stop (a TLS handshake ended late)
            self.stop()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        body = self._body
        in_body = body is not None and not body.is_eof()
        count = self.requests_read
        super().data_received(data)
        if self.requests_read != count:  # a request's headers completed (or failed to parse)
            if self._header_handle is not None:
                self._disarm()
            self._partial = False
            self._body = self.newest_body()
        elif data and not in_body:  # the first bytes of the next request
            self._partial = True
            self._arm()

    def _arm(self) -> None:
        if self._header_handle is None and self._header_timeout:
            self._header_handle = self.event_loop.call_later(self._header_timeout, self._late)

    def _disarm(self) -> None:
        if self._header_handle is not None:
            self._header_handle.cancel()
            self._header_handle = None

    def _late(self) -> None:
        self._header_handle = None
        if self._busy():
            self.close()  # behind an answer being written: close once it is
            return
        detail = f"the request headers did not arrive within {self._header_timeout:g} s"
        self._answer_and_close(error_outcome(408, "timeout", detail))

    # -- stop -------------------------------------------------------------------------------

    def _busy(self) -> bool:
        # Counted, not aiohttp's flags: between taking a request off its queue and starting
        # its handler, aiohttp's connection looks idle.
        return self._answered != self.requests_read or (
            self._body is not None and not self._body.is_eof()
        )

    def answered(self) -> None:
        """One more answer is written (`AnswerCounter`)."""
        self._answered += 1

    def stop(self) -> None:
        """Close now if idle; else once every request read so far is answered (the server's
        answers carry `Connection: close` from now on)."""
        if not self._busy() and not self._partial and not self._unread_bytes():
            self.force_close()

    def _unread_bytes(self) -> int:
        # Bytes the kernel holds for us that the loop has not read yet: a request that
        # arrived before the stop, to be answered like the ones read already.
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is None:
            return 0
        return _unread_bytes(sock.fileno())

    def abandon(self) -> None:
        """Answer the request in progress with 503 if nothing of its answer was written
        (its handler ignored cancellation), and close."""
        request = self.request_in_progress
        if request is not None and request.writer.output_size == 0:
            self._answer_and_close(
                error_outcome(503, "unavailable", "the consumer shut down; retry")
            )
        else:
            self.force_close()
        self.cancel_handler()

    def _answer_and_close(self, outcome: Outcome) -> None:
        if self.transport is not None:
            self.transport.write(raw_answer(outcome))
        self.force_close()

    # -- parser errors ----------------------------------------------------------------------

    def error_response(
        self,
        request: web.BaseRequest,
        status: int,
        exc: BaseException | None,
        message: str | None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (or a handler that raised): the
        JSON error body, and the connection closes."""
        if status >= 500:
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            outcome = error_outcome(status, "internal", "internal server error; see the log")
        else:
            # Bad input, not our failure: at error level, every malformed request would be a
            # log record (with a traceback) a client can produce at will.
            logger.debug("malformed request from %s: %s", request.remote, message or exc)
            detail = " ".join(str(message or exc or "malformed request").split())
            outcome = error_outcome(status, "malformed", detail[:_MAX_DETAIL])
        if request.writer.output_size > 0:  # as aiohttp: part of an answer went out already
            raise ConnectionError("the response is partly sent; cannot send an error instead")
        return response(outcome, close=True)


class ConnectionServer(foreign.Server):
    """aiohttp's low-level server making `Connection`s, within `ConnectionLimits`."""

    def __init__(self, handler: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(
            handler,
            # No access log: an `AnswerCounter` in its place counts each connection's answers.
            access_log=logger,
            access_log_class=AnswerCounter,
            keepalive_timeout=limits.keepalive_timeout,
            lingering_time=limits.lingering_time,
            # Bodies are decompressed by streamtools after the checks, within the size limit
            # (`_body`): aiohttp would inflate every body as it arrives, refused ones too.
            auto_decompress=False,
            **kwargs,
        )
        self.limits = limits
        # Connections made and not yet connected (a TLS handshake); weak, so one whose
        # handshake fails is forgotten.
        self._pending: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._refusal = raw_answer(_overloaded(limits.max_connections))
        self.stopping = False  # set at pre_shutdown

    def make_protocol(self) -> asyncio.BaseProtocol:  # a Connection or a refusal
        if len(self.connections) + len(self._pending) >= self.limits.max_connections:
            return _Refuse(self._refusal)
        connection = Connection(self, self.limits.header_timeout, **self.handler_kwargs())
        self._pending.add(connection)
        return connection

    def stop_connections(self) -> None:
        self.stopping = True
        for connection in self.connections:
            if isinstance(connection, Connection):
                connection.stop()
            else:
                connection.close()

    async def finish_connections(self, timeout: float | None) -> None:
        connections = [c for c in self.connections if isinstance(c, Connection)]
        lost = [c.lost for c in connections if not c.lost.done()]
        if lost:
            await asyncio.wait(lost, timeout=timeout)
        for connection in connections:
            if not connection.lost.done():
                connection.abandon()


class AcceptErrorThrottle(logging.Filter):
    """Lets one "accept() out of system resource" record of asyncio through per `every`
    seconds (with the count it held back): out of descriptors, asyncio logs each failed
    accept, megabytes a second."""

    def __init__(self, every: float = 10.0) -> None:
        super().__init__()
        self.every = every
        self._last = -math.inf
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not record.msg.startswith(_ACCEPT_ERROR):
            return True
        now = time.monotonic()
        if now - self._last < self.every:
            self._held += 1
            return False
        self._last = now
        if self._held and not record.args:
            record.msg = (
                f"{record.msg}\n({self._held} more such records in the last "
                f"{self.every:g} s held back by streamtools.http)"
            )
        self._held = 0
        return True


_throttle: Final = AcceptErrorThrottle()


def throttle_accept_errors() -> None:
    """Install the throttle on asyncio's logger (once)."""
    asyncio_logger = logging.getLogger("asyncio")
    if _throttle not in asyncio_logger.filters:
        asyncio_logger.addFilter(_throttle)
