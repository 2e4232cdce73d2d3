"""redis-py's private API that the Redis transport relies on, fenced in one place.

TLS with a given `ssl.SSLContext`: redis-py's asyncio client builds its own context from
certificate file names (`ssl_certfile=`, `ssl_ca_certs=`, ...) and takes no `SSLContext`, while
streamtools' transports all take `ssl=` an `SSLContext` (the one vocabulary). No public way
exists to hand one over, so the pool's connections are `SSLConnection`s whose context holder
(`ssl_context`, a `RedisSSLContext`, undocumented) is one already holding ours: its `get()`
returns `self.context` when it is set and builds one only when it is not.

Checked on redis-py 8.2.0 (the installed version) and 5.2.0 (the floor in pyproject.toml:
`make test-min` runs the pins and the Redis tests there); `tests/foreign/test_redis_pins.py`
pins both.
"""

from __future__ import annotations

import ssl as _ssl
from typing import Any

from redis.asyncio.connection import RedisSSLContext, SSLConnection


class _GivenContext(RedisSSLContext):
    """A context holder whose `get()` returns the SSLContext it was given."""

    def __init__(self, context: _ssl.SSLContext) -> None:
        super().__init__()
        self.context = context


class ContextSSLConnection(SSLConnection):
    """An `SSLConnection` on the `ssl.SSLContext` passed as `given_ssl_context=` (pass this
    class as the pool's `connection_class`, the context among the pool's keywords)."""

    def __init__(self, *, given_ssl_context: _ssl.SSLContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ssl_context = _GivenContext(given_ssl_context)
