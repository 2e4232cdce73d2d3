"""One aiohttp server per (loop, host, port), shared by the consumers bound to it.

`Routes` is the dispatch table: `/{queue}` and method -> the consumer serving it, plus the
paths a runner mounts (`/healthz`). `SharedServer` owns the listening socket: refcounted by
its consumers, started by the first, stopped by the last release.

The server is aiohttp's low-level `web.Server` with this dict dispatch rather than an
`Application` and its router, for two reasons. Consumers bind and unbind while the server
runs (a second consumer joins a started shared server; a closed one leaves it), and an
Application's router is frozen once it starts. And every route is one exact path, so the
router's resolution, middleware chain and match info are pure cost: an A/B on this machine
(2 shared cores, aiohttp 3.14.5; one process serving POSTs of a 200-byte JSON body, answered
204, to an aiohttp client at concurrency 16, 4000 requests per round, rounds alternating
web.Server / Application, medians) gave Application 0.92x the requests per second of
web.Server in 7 rounds (5,222 vs 5,670) and 0.97x in 9 (6,072 vs 6,233).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_module
import weakref
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.streams import StreamReader

from streamtools._codec import JSON
from streamtools._foreign.aiohttp import ServerRunner
from streamtools._health import Endpoint
from streamtools._types import Queue
from streamtools.errors import ConfigurationError
from streamtools.transports.http._connection import (
    Connection,
    ConnectionLimits,
    ConnectionServer,
    throttle_accept_errors,
)
from streamtools.transports.http._negotiation import json_encoder
from streamtools.transports.http._outcome import RETRY_LATER, error

logger = logging.getLogger("streamtools.http")

HEALTH_PATH: Final = "healthz"


class Servant(Protocol):
    """What the server needs of a consumer (HTTPConsumer; a Protocol to keep the import
    one way): its queue, whether it is draining, and `_serve` to answer a request."""

    @property
    def queue(self) -> Queue[Any]: ...

    @property
    def _draining(self) -> bool: ...

    @property
    def _token(self) -> str | None: ...

    def _authorized(self, header: str | None) -> bool: ...

    async def _serve(self, request: web.BaseRequest, method: str) -> web.StreamResponse: ...


@dataclass(eq=False)
class Routes:
    """`/{queue}` x method -> the consumer serving it; mounted paths -> their endpoint."""

    where: str
    table: dict[str, dict[str, Servant]] = field(default_factory=dict)
    mounts: dict[str, Endpoint] = field(default_factory=dict)

    def bind(self, servant: Servant, method: str) -> None:
        methods = self.table.setdefault(servant.queue.name, {})
        other = methods.get(method)
        if other is not None and other is not servant:
            raise ConfigurationError(
                f"{method} /{servant.queue.name} on {self.where} is already served by {other!r}"
            )
        methods[method] = servant

    def unbind(self, servant: Servant) -> None:
        for name in list(self.table):
            methods = self.table[name]
            for method in [m for m, s in methods.items() if s is servant]:
                del methods[method]
            if not methods:
                del self.table[name]

    def mount(self, path: str, endpoint: Endpoint) -> None:
        self.mounts[path] = endpoint

    def find(self, request: web.BaseRequest, stopping: bool) -> Servant | web.StreamResponse:
        """The consumer serving this request, or the answer when none does."""
        path, method = request.path, request.method
        if path[:1] != "/":  # `OPTIONS *`, an authority-form target
            return error(400, "malformed", f"the request target must be a path, not {path!r}")
        endpoint = self.mounts.get(path)
        if endpoint is not None or path == "/" + HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return error(405, "method_not_allowed", f"{path} answers GET", {"Allow": "GET"})
            if stopping:
                return error(503, "unavailable", "the server is shutting down", RETRY_LATER)
            if endpoint is None:
                found = self._queues()
            else:
                status, body, content_type = endpoint()
                found = web.Response(
                    status=status, body=body, headers={"Content-Type": content_type}
                )
            if self._guarded(request):
                # Behind a token, a client without it learns the status only, not the queues.
                state = "ok" if found.status < 400 else "unavailable"
                body = json_encoder.encode({"status": state})
                return web.Response(status=found.status, body=body, headers={"Content-Type": JSON})
            return found
        name = path[1:]
        methods = self.table.get(name)
        if methods is None:
            if stopping:
                return error(503, "unavailable", "the server is shutting down", RETRY_LATER)
            return error(404, "not_found", f"no queue named {name!r} is served here")
        servant = methods.get(method)
        if servant is None:
            allow = ", ".join(sorted(methods))
            return error(
                405,
                "method_not_allowed",
                f"/{name} answers {allow}, not {method}",
                {"Allow": allow},
            )
        return servant

    def _guarded(self, request: web.BaseRequest) -> bool:
        """Whether a consumer here requires a token and the request carries none of theirs."""
        header = request.headers.get("Authorization")
        guards = [s for m in self.table.values() for s in m.values() if s._token is not None]
        return bool(guards) and not any(s._authorized(header) for s in guards)

    def _queues(self) -> web.StreamResponse:
        # /healthz of a server no runner mounted its own on: the queues still taking work.
        queues = sorted(
            name
            for name, methods in self.table.items()
            if any(not s._draining for s in methods.values())
        )
        if not queues:
            return error(503, "unavailable", "the server is shutting down")
        body = json_encoder.encode({"status": "ok", "queues": queues})
        return web.Response(body=body, headers={"Content-Type": JSON})


_servers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, int], SharedServer]
] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class SharedServer:
    """One aiohttp server on (host, port) serving the queues of every consumer bound to it.

    Consumers of one event loop on the same host and explicit port share one (refcounted;
    the last release stops it). `port=0` gets a server of its own, which consumers then
    given its bound port share.
    """

    host: str
    port: int
    ssl: ssl_module.SSLContext | None
    limits: ConnectionLimits
    key: tuple[str, int] | None
    routes: Routes
    refs: int = 0
    stopping: bool = False
    _unread: set[StreamReader] = field(default_factory=set)
    _previous: SharedServer | None = None
    _runner: ServerRunner | None = None
    _site: web.TCPSite | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def acquire(
        cls, host: str, port: int, ssl: ssl_module.SSLContext | None, limits: ConnectionLimits
    ) -> SharedServer:
        """The server on host:port of this loop, made if there is none (or it is stopping)."""
        per_loop = _servers.setdefault(asyncio.get_running_loop(), {})
        found = per_loop.get((host, port)) if port else None
        if found is not None and not found.stopping:
            if found.ssl is not ssl:
                raise ConfigurationError(
                    f"{host}:{port} is already served with "
                    f"{'another TLS context' if found.ssl else 'plain HTTP'}; consumers "
                    "sharing a port must pass the same ssl= context"
                )
            server = found
        else:
            key = (host, port) if port else None
            server = cls(host, port, ssl, limits, key, Routes(f"{host}:{port}"))
            if key is not None:
                per_loop[key] = server
                server._previous = found
        server.refs += 1
        return server

    @property
    def bound_port(self) -> int:
        # `runner.addresses`, not `TCPSite.port`: that one is aiohttp 3.14+ (and its port
        # before the site started is the one asked for, 0 included).
        runner = self._runner
        if runner is None or not runner.addresses:
            return self.port
        port: int = runner.addresses[0][1]
        return port

    async def start(self, shutdown_timeout: float) -> None:
        async with self._lock:
            if self._site is not None:
                return
            if self.stopping:
                raise ConfigurationError(f"the server on {self.host}:{self.port} is stopping")
            previous, self._previous = self._previous, None
            if previous is not None:
                # The last server on this port is still stopping: let it free the port.
                await previous._stopped.wait()
            throttle_accept_errors()
            server = ConnectionServer(self._handle, self.limits)
            # When it stops, the consumers have drained their handlers already: the timeout
            # only bounds writing the last answers to slow clients (ConnectionServer's
            # finish_connections); its shutdown step ends the reads of refused bodies.
            runner = ServerRunner(server, self._unread, shutdown_timeout)
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port, ssl_context=self.ssl)
            try:
                await site.start()
            except OSError as exc:
                await runner.cleanup()
                raise ConfigurationError(
                    f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                    "choose a free port (or port=0)"
                ) from exc
            self._runner, self._site = runner, site
            if self.key is None:  # port=0: consumers given the bound port share this server
                self.key = (self.host, self.bound_port)
                self.routes.where = f"{self.host}:{self.bound_port}"
                _servers.setdefault(asyncio.get_running_loop(), {})[self.key] = self

    async def release(self) -> None:
        self.refs -= 1
        if self.refs > 0:
            return
        self.stopping = True
        try:
            async with self._lock:
                if self._runner is not None:
                    await self._runner.cleanup()
                self._runner = self._site = None
        finally:
            self._stopped.set()
            if self.key is not None:
                with contextlib.suppress(RuntimeError):
                    per_loop = _servers.get(asyncio.get_running_loop(), {})
                    if per_loop.get(self.key) is self:
                        del per_loop[self.key]

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        found: Servant | web.StreamResponse | None = None
        try:
            found = self.routes.find(request, self.stopping)
            if isinstance(found, web.StreamResponse):
                response = found
            else:
                response = await found._serve(request, request.method)
        except Exception:
            # A bug of ours; never let aiohttp answer with its own text body.
            logger.exception(
                "internal error serving %s %s",
                request.method,
                request.rel_url.path,
                extra={"path": request.rel_url.path},
            )
            response = error(500, "internal", "internal server error; see the server log")
        if not request.content.is_eof():
            # A refusal of a body not read: aiohttp reads and drops the rest (undecoded,
            # lingering_time at most) so the client sees the answer; then the connection ends.
            response.force_close()
            unread = {p for p in self._unread if not p.is_eof() and p.exception() is None}
            self._unread.clear()
            self._unread.update(unread)
            self._unread.add(request.content)
        elif self.stopping or (
            found is not None and not isinstance(found, web.StreamResponse) and found._draining
        ):
            # Going away: keep-alive connections end after this answer, the last of the
            # requests they have read (pipelined ones are answered first).
            protocol = request.protocol
            if not isinstance(protocol, Connection) or not protocol.queued:
                response.force_close()
        return response
