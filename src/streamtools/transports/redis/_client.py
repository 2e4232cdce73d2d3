"""The asyncio client: one redis-py connection pool per producer or consumer, reconnecting.

redis-py opens a new connection for the next command after one broke; `Client.call` runs a
command and, on a connection error (the server restarting, loading its data, a cut
connection), tries it again with backoff (0.05 s doubling to 2 s) until its deadline. A
refused login or ACL is never retried: it is raised at once, translated. The pool is bounded
(`MAX_CONNECTIONS`; a blocking XREADGROUP holds one), so a burst of sends waits for a
connection instead of opening hundreds.

TLS with a given `ssl.SSLContext`: redis-py's asyncio client takes certificate files, not a
context, so the pool's connections are `SSLConnection`s whose context holder returns ours: a
reach into redis-py internals, fenced in `streamtools._foreign.redis` and pinned by
`tests/foreign/test_redis_pins.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from streamtools._foreign.redis import ContextSSLConnection
from streamtools.errors import PublishError
from streamtools.transports.redis._errors import transient, translate
from streamtools.transports.redis._settings import Settings

logger = logging.getLogger("streamtools.redis")

MAX_CONNECTIONS: Final = 32
FIRST_BACKOFF: Final = 0.05
MAX_BACKOFF: Final = 2.0
CLOSE_GRACE: Final = 2.0  # seconds close() waits for commands still running

R = TypeVar("R")


class Client:
    """A redis-py client on a bounded pool, and the call-until-it-answers rule."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.redis: redis.asyncio.Redis | None = None
        self._connections: redis.asyncio.BlockingConnectionPool | None = None
        self._active = 0  # commands running through `call`
        self._quiet = asyncio.Event()
        self._quiet.set()

    def _pool(self, connect_timeout: float) -> redis.asyncio.BlockingConnectionPool:
        options: dict[str, Any] = {
            **self.settings.client(),
            "socket_connect_timeout": connect_timeout,
            # A silent server (half-open connection) fails a command after this; a blocking
            # XREADGROUP waits at most a second, well inside it.
            "socket_timeout": connect_timeout + 5.0,
            "socket_keepalive": True,
            "max_connections": MAX_CONNECTIONS,
            "timeout": None,  # waiting for a pooled connection is bounded by our deadlines
            # Our loops retry with backoff; redis-py's own retries would double them up.
            "retry": Retry(NoBackoff(), 0),
        }
        if self.settings.ssl is not None:
            options["connection_class"] = ContextSSLConnection
            options["given_ssl_context"] = self.settings.ssl
        return redis.asyncio.BlockingConnectionPool(**options)

    async def start(self, timeout: float) -> None:
        """Connect and check the login with a PING, within `timeout` seconds."""
        self._connections = pool = self._pool(timeout)
        client = redis.asyncio.Redis(connection_pool=pool)
        try:
            async with asyncio.timeout(timeout):
                await client.ping()
        except BaseException as exc:
            await client.aclose()
            await pool.disconnect()
            if isinstance(exc, Exception):
                raise translate(exc, self.settings, f"{self.role}: connecting") from None
            raise
        self.redis = client

    def connection(self) -> redis.asyncio.Redis:
        client = self.redis
        if client is None:
            raise PublishError(f"{self.role}: closed")
        return client

    async def call(self, command: Callable[[redis.asyncio.Redis], Awaitable[R]], *, what: str) -> R:
        """Run `command`, again through connection errors with backoff (until cancelled:
        the caller bounds it); a refusal or a command error is raised translated."""
        self._active += 1
        self._quiet.clear()
        try:
            return await self._call(command, what)
        finally:
            self._active -= 1
            if not self._active:
                self._quiet.set()

    async def _call(self, command: Callable[[redis.asyncio.Redis], Awaitable[R]], what: str) -> R:
        delay = FIRST_BACKOFF
        while True:
            client = self.connection()
            try:
                return await command(client)
            except Exception as exc:
                if not transient(exc):
                    raise
                logger.info(
                    "%s: %s unreachable (%s), trying again in %.2f s",
                    what,
                    self.settings.where,
                    str(exc) or type(exc).__name__,
                    delay,
                    extra={"role": self.role},
                )
            await asyncio.sleep(delay)
            delay = min(MAX_BACKOFF, delay * 2)

    async def close(self) -> None:
        client, self.redis = self.redis, None
        # Commands still running take a pooled connection: let them end (bounded) before
        # the pool closes, or a connection opened after it would be left open.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_GRACE):
                await self._quiet.wait()
        pool, self._connections = self._connections, None
        if client is not None and pool is not None:
            try:
                await client.aclose()
                await pool.disconnect()
            except Exception as exc:  # closing a broken pool may fail; nothing is lost
                logger.debug("closing the client: %s", exc)
