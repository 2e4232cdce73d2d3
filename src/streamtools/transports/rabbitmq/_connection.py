"""The connection shared by RabbitMQ producers and consumers: one robust connection per
broker (or cluster) and event loop, moving on to the next address whenever it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import weakref
from collections.abc import Sequence
from typing import Any, Final

import aio_pika
import aiormq.abc
from yarl import URL

from streamtools._foreign.aio_pika import HookedRobustConnection, amqp_connection
from streamtools.errors import ConnectError
from streamtools.transports.rabbitmq._errors import _CONNECT_FAILURES, _explained, _translate
from streamtools.transports.rabbitmq._settings import _Settings, redact

logger = logging.getLogger("streamtools.rabbitmq")

_RECONNECT_INTERVAL: Final = 1.0


class _NoNode(Exception):
    """Every address failed a connection attempt since the connection was last up."""

    def __init__(self, failures: Sequence[tuple[URL, BaseException]]) -> None:
        super().__init__(*failures)
        self.failures = tuple(failures)


class _FailoverConnection(HookedRobustConnection):
    """aio-pika's robust connection, moving on to the next broker address whenever it reconnects.

    RobustConnection's reconnect loop connects to `url` on every attempt, and every end of a
    connection, lost or never made, goes through `ended_hook` (a refused attempt too; see
    `streamtools._foreign.aio_pika`). Pointing `url` at the next address there is all
    failover takes: aio-pika then reopens channels, re-declares what was declared
    on them and re-subscribes consumers on whichever node answered, as after any reconnect,
    and a publish that was waiting for its confirm is published again there (`_Link.publish`).

    It also keeps what each address answered to its last failed attempt since the connection
    was last up, so that a publish can tell "reconnecting" from "no node takes a connection".
    """

    def __init__(self, addresses: Sequence[URL], first: int, **kwargs: Any) -> None:
        super().__init__(addresses[first], **kwargs)
        self.addresses = tuple(addresses)
        self._position = first
        self._up = False  # connected, channels restored
        self.failures: dict[int, tuple[URL, BaseException]] = {}  # since it was last up
        self._attempts = 0  # failed attempts, ever
        self._news = asyncio.Event()  # set (and replaced) on every change of the above

    def _notify(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()

    def connected_hook(self) -> None:
        # After aio-pika restored the channels (it raises instead if a restore failed).
        self._up = True
        self.failures.clear()
        self._notify()

    def ended_hook(self, closing: asyncio.Future[Any]) -> None:
        if not (self.close_called or self.is_closed):
            if self._up:
                self._up = False  # lost: no verdict on the address, the next attempt says
            else:
                try:
                    failure = closing.exception() or ConnectionError("closed")
                except asyncio.CancelledError as exc:
                    failure = exc
                self.failures[self._position] = (self.url, failure)
                self._attempts += 1
            if len(self.addresses) > 1:
                self._position = (self._position + 1) % len(self.addresses)
                self.move_to(self.addresses[self._position])
                logger.info("RabbitMQ connection ended; next address %s", redact(self.url))
            self._notify()

    async def usable(self) -> aiormq.abc.AbstractConnection:
        """The AMQP connection once connected; `_NoNode` when none will take one now.

        Waits through a reconnect or failover. Raises once every address has failed an
        attempt since the connection was lost and one more attempt failed after this call
        began (so a caller waits at most for the next attempt, and a node that is back is
        found by it).
        """
        attempts = self._attempts
        while True:
            news = self._news
            amqp = amqp_connection(self)
            if self.is_closed or self.close_called:
                raise RuntimeError(f"connection to {self.addresses} closed")
            if self._up and self.connected.is_set() and amqp is not None and not amqp.is_closed:
                return amqp
            if len(self.failures) == len(self.addresses) and self._attempts > attempts:
                raise _NoNode([self.failures[k] for k in sorted(self.failures)])
            await news.wait()


class _Connections:
    """One robust connection per (event loop, broker addresses, TLS context), shared by reference.

    Every producer and consumer of a process that talks to the same broker (or the same
    cluster) multiplexes its channels over one TCP connection (what aio-pika recommends); the
    last to close it closes it. A lost connection is re-established once for all of them, on
    the next address that answers.
    """

    def __init__(self) -> None:
        self._shared: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            dict[tuple[tuple[str, ...], str, int], tuple[_FailoverConnection, int]],
        ] = weakref.WeakKeyDictionary()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _key(settings: _Settings) -> tuple[tuple[str, ...], str, int]:
        return tuple(str(url) for url in settings.urls), settings.failover, id(settings.ssl)

    async def acquire(self, settings: _Settings, role: str) -> _FailoverConnection:
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            per_loop = self._shared.setdefault(loop, {})
            key = self._key(settings)
            found = per_loop.get(key)
            if found is not None and not found[0].is_closed:
                per_loop[key] = (found[0], found[1] + 1)
                return found[0]
            connection = await self._connect(settings, role)
            per_loop[key] = (connection, 1)
            logger.debug("connected", extra={"role": role, "broker": redact(connection.url)})
            return connection

    async def _connect(self, settings: _Settings, role: str) -> _FailoverConnection:
        """Connected to the first address that answers, trying each once in turn."""
        addresses = list(settings.urls)
        if settings.failover == "shuffle":
            random.shuffle(addresses)  # spreads a fleet of clients over the nodes
        what = f"{role}: connecting"
        failures: list[tuple[URL, BaseException]] = []
        for first, url in enumerate(addresses):
            # aio-pika's fail-fast first attempt ends its reconnect loop when it fails, so each
            # address gets a connection object of its own until one answers.
            connection = _FailoverConnection(
                addresses,
                first,
                ssl_context=settings.ssl,
                client_properties={"connection_name": f"streamtools pid {os.getpid()}"},
                # A `?reconnect_interval=` in the url wins (aio-pika skips None keywords).
                reconnect_interval=(
                    None if "reconnect_interval" in url.query else _RECONNECT_INTERVAL
                ),
            )
            try:
                async with asyncio.timeout(settings.connect_timeout):
                    await connection.connect(timeout=settings.connect_timeout)
                return connection
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                if not isinstance(exc, _CONNECT_FAILURES):
                    raise
                failures.append((url, await _explained(exc, url, settings)))
        if len(failures) == 1:
            only, failure = failures[0]
            raise _translate(failure, settings, what, only) from failure
        reasons = "; ".join(
            str(_translate(failure, settings, f"{at.host}:{at.port}", at))
            for at, failure in failures
        )
        raise ConnectError(
            f"{what}: none of the {len(failures)} RabbitMQ addresses took the connection: {reasons}"
        ) from failures[-1][1]

    async def release(self, settings: _Settings, connection: aio_pika.RobustConnection) -> None:
        loop = asyncio.get_running_loop()
        per_loop = self._shared.get(loop, {})
        key = self._key(settings)
        found = per_loop.get(key)
        if found is not None and found[0] is connection and found[1] > 1:
            per_loop[key] = (connection, found[1] - 1)
            return
        if found is not None and found[0] is connection:
            del per_loop[key]
        with contextlib.suppress(Exception):
            await connection.close()


_connections = _Connections()
