"""The one place redis-py errors become streamtools errors, each saying what to check."""

from __future__ import annotations

import redis.exceptions

from streamtools.errors import ConfigurationError, ConnectError, StreamtoolsError
from streamtools.transports.redis._settings import Settings

TRANSIENT: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    TimeoutError,
)
"""Errors after which the same command may succeed once the server answers again."""


def refused(exc: BaseException) -> bool:
    """A refusal no retry mends: a wrong login or a missing permission."""
    return isinstance(
        exc, redis.exceptions.AuthenticationError | redis.exceptions.NoPermissionError
    ) or (isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("NOAUTH"))


def transient(exc: BaseException) -> bool:
    """Worth trying again: the connection, not the request, failed."""
    return isinstance(exc, TRANSIENT) and not refused(exc)


def translate(exc: BaseException, settings: Settings, what: str) -> StreamtoolsError:
    """The streamtools error for `exc`, naming what was done and where (never the password)."""
    if isinstance(exc, StreamtoolsError):
        return exc
    text = str(exc)
    if isinstance(exc, redis.exceptions.NoPermissionError):
        return ConfigurationError(
            f"{what}: {settings.where} refused a command ({text}); the ACL user needs the "
            "stream commands (+@stream, or XADD XREADGROUP XACK XAUTOCLAIM XCLAIM XGROUP) "
            "on these keys (~<queue>*)"
        )
    if isinstance(exc, redis.exceptions.AuthenticationError) or text.startswith("NOAUTH"):
        return ConnectError(
            f"{what}: {settings.where} refused the login ({text or type(exc).__name__}); check "
            "the username and password (username=/password=, the URL, or "
            "REDIS_USERNAME/REDIS_PASSWORD)"
        )
    if isinstance(exc, TRANSIENT):
        return ConnectError(
            f"{what}: cannot reach {settings.where}: {text or type(exc).__name__}; check "
            "REDIS_URL or url=, that the server runs there, and TLS (rediss:// or ssl=) if it "
            "expects it"
        )
    return ConnectError(f"{what}: {settings.where} failed: {type(exc).__name__}: {text}")
