"""aio-pika's private API that the RabbitMQ transport relies on, and nothing else.

Checked against aio-pika 10.2.1 (installed, with aiormq 7.2.4 and pamqp 4.0.1) and read in
aio-pika 9.4.0 (the floor pyproject.toml claims), where both hooks below exist with the same
signatures (but `Connection.close_called`, public in 10.x and used by the transport, does not,
and its aiormq 6.8 lacks what `streamtools._foreign.aiormq` needs: the floor is too low).
`tests/foreign/test_amqp_pins.py` pins each item.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
import aio_pika.abc
import aiormq.abc
from yarl import URL

__all__ = ["HookedRobustConnection", "amqp_connection"]


class HookedRobustConnection(aio_pika.RobustConnection):
    """aio-pika's `RobustConnection` with its connect and close ends exposed as hooks.

    Failover needs to hear of every end of a connection, lost or never made, before the
    reconnect loop tries again, and of every successful (re)connect after the channels were
    restored. aio-pika has no public callback for either: `close_callbacks` runs only once
    a connection existed (not on a refused attempt) and `reconnect_callbacks` runs before
    nothing tells whether the channel restore failed. So the two private coroutines are
    overridden, here only:

    - `_on_connected()`: called by `Connection.connect` after the transport is up;
      RobustConnection's version restores the channels and raises if that failed.
    - `_on_connection_close(closing)`: the close callback `UnderlayConnection.connect` is
      given; it is also awaited with a failed future when an attempt is refused.

    and `url`, which `Connection.connect` reads on every (re)connect attempt, is rewritten
    by `move_to` (aio-pika only ever sets it in `__init__` and `update_secret`).
    """

    def connected_hook(self) -> None:
        """Connected, channels restored. Override; runs after aio-pika's own work."""

    def ended_hook(self, closing: asyncio.Future[Any]) -> None:
        """A connection ended or an attempt failed (`closing` holds why). Override; runs
        before aio-pika's own work (its reconnect loop reads `url` after this)."""

    def move_to(self, url: URL) -> None:
        """Make the next (re)connect attempt go to `url`."""
        self.url = url

    async def _on_connected(self) -> None:
        await super()._on_connected()  # raises (and closes the transport) if a restore failed
        self.connected_hook()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        self.ended_hook(closing)
        await super()._on_connection_close(closing)


def amqp_connection(
    connection: aio_pika.abc.AbstractConnection,
) -> aiormq.abc.AbstractConnection | None:
    """The aiormq connection under `connection` now; None while it has none.

    aio-pika offers robust channels only; a plain aiormq channel (our confirm channel, which
    must not be reopened behind our back, and throwaway declare channels) needs the aiormq
    connection, which sits in `connection.transport.connection` (declared in aio_pika.abc,
    but undocumented).
    """
    transport = connection.transport
    return None if transport is None else transport.connection
