"""A service module whose routes are only recorded: importing it reads no environment.

Its transport's settings come from the environment (HTTP_HOST / HTTP_PORT), read when the
consumers are built, i.e. when the runner starts, not at import.
"""

from __future__ import annotations

import msgspec

from streamtools import HTTP, ConsumerFactory, Queue


class Ping(msgspec.Struct, kw_only=True):
    n: int


PINGS = Queue("lazy.pings", Ping)

consumers = ConsumerFactory(HTTP)


@consumers.route(PINGS)
async def on_ping(msg: Ping) -> None:
    pass


@consumers.route(PINGS, method="GET")
async def on_ping_query(msg: Ping) -> None:
    pass
