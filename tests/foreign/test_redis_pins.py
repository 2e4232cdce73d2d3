"""Pins of the redis-py internals `streamtools._foreign.redis` relies on (checked: 8.2.0).

Each check fails naming the library, its version and the hook, so a redis-py upgrade that
changes one is found here, not as a TLS handshake with the wrong certificates.
"""

from __future__ import annotations

import inspect
import ssl

import redis
from redis.asyncio.connection import RedisSSLContext, SSLConnection

from streamtools._foreign.redis import ContextSSLConnection

VERSION = redis.__version__


def _where(hook: str) -> str:
    return f"redis-py {VERSION}: {hook} changed; see streamtools._foreign.redis"


def test_the_context_holder_takes_no_required_arguments_and_returns_a_set_context() -> None:
    hook = "RedisSSLContext(), .context, .get()"
    parameters = inspect.signature(RedisSSLContext.__init__).parameters.values()
    required = [
        p.name
        for p in parameters
        if p.name != "self" and p.default is p.empty and p.kind is not p.VAR_KEYWORD
    ]
    assert required == [], _where(hook)
    holder = RedisSSLContext()
    assert hasattr(holder, "context"), _where(hook)
    ours = ssl.create_default_context()
    holder.context = ours
    assert holder.get() is ours, _where(hook)


def test_an_ssl_connection_holds_its_context_holder_as_ssl_context() -> None:
    hook = "SSLConnection.ssl_context"
    assert "self.ssl_context" in inspect.getsource(SSLConnection.__init__), _where(hook)
    ours = ssl.create_default_context()
    connection = ContextSSLConnection(given_ssl_context=ours, host="127.0.0.1", port=6379)
    assert isinstance(connection.ssl_context, RedisSSLContext), _where(hook)
    assert connection.ssl_context.get() is ours, _where(hook)
