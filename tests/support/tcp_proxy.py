"""A TCP proxy on 127.0.0.1 whose connections a test can cut, like a network failure.

Clients connect to `proxy.port`; each accepted connection gets its own upstream connection and
bytes are copied both ways. `cut_all()` resets every live connection on both sides at once
(SO_LINGER 0, so the peers see a reset, not an orderly close), and `pause()` makes the proxy
reset new connections as soon as they arrive, the way an unreachable broker looks to a client
that keeps reconnecting, until `resume()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

_CHUNK = 64 * 1024


@dataclass(eq=False)
class _Link:
    """One proxied connection: the client side, the upstream side and the two copy tasks."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter) -> None:
    # Linger 0 makes close() send RST: the peer's next read fails at once, as after a cut cable.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:`port` to `upstream_host`:`upstream_port`; cut connections on demand.

    Use as `async with TcpProxy(host, port) as proxy:`; `port` is bound on entry (port 0, so
    the kernel picks a free one). `accepted` counts connections forwarded since start,
    `refused` those reset while paused, `cuts` those reset by `cut_all()`.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._paused = False
        self._port = 0

    @property
    def port(self) -> int:
        """The listening port on 127.0.0.1 (valid once started)."""
        if self._server is None:
            raise RuntimeError("TcpProxy is not started")
        return self._port

    @property
    def active(self) -> int:
        """How many proxied connections are open now."""
        return len(self._links)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and reset every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.cut_all()
        # Handlers still connecting upstream, and copy tasks: wait for them to unwind.
        pending = list(self._handlers)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def cut_all(self) -> int:
        """Reset every live connection, both sides, now; return how many were cut."""
        links = list(self._links)
        for link in links:
            self._drop(link)
        self.cuts += len(links)
        return len(links)

    def pause(self) -> None:
        """Reset each new connection as it arrives (live ones are left alone)."""
        self._paused = True

    def resume(self) -> None:
        """Forward new connections again."""
        self._paused = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._handlers.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._paused:
            self.refused += 1
            _reset(writer)
            return
        self.accepted += 1
        link = _Link(client=writer)
        self._links.add(link)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                return  # upstream down: the client sees a reset, as with no listener
            if link not in self._links:  # cut while connecting upstream
                _reset(up_writer)
                return
            link.upstream = up_writer
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            # Either direction ending (EOF, error, cut) ends the whole connection.
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._drop(link)
            await asyncio.gather(*link.tasks, return_exceptions=True)

    def _drop(self, link: _Link) -> None:
        if link not in self._links:
            return
        self._links.discard(link)
        for task in link.tasks:
            task.cancel()
        _reset(link.client)
        if link.upstream is not None:
            _reset(link.upstream)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(_CHUNK):
                writer.write(data)
                await writer.drain()
