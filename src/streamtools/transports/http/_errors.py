"""The one place the HTTP client's errors and error answers become streamtools errors."""

from __future__ import annotations

from typing import Final

import aiohttp
from yarl import URL

from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    DeliveryError,
    PublishError,
    ReplyTimeoutError,
    StreamtoolsError,
)

RETRY_STATUSES: Final = frozenset({502, 503, 504})
"""Answers a producer sends again (`resend=`): the server or a proxy in front is busy."""


def client_error(exc: Exception, url: URL) -> StreamtoolsError:
    """The one place aiohttp client errors become streamtools errors (raise it `from exc`)."""
    where = f"{url.host}:{url.port}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return ConnectError(
            f"TLS with the HTTP consumer at {where} failed: {exc}; check the ssl= context"
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return ConnectError(
            f"timed out connecting to the HTTP consumer at {where}; is it running and reachable?"
        )
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return ReplyTimeoutError(
            f"the HTTP consumer at {where} did not answer {url} in time; "
            "the message may still be handled"
        )
    if isinstance(exc, aiohttp.ClientConnectionError):
        return ConnectError(
            f"cannot reach the HTTP consumer at {where} ({type(exc).__name__}: {exc}); "
            "is it running?"
        )
    if isinstance(exc, aiohttp.InvalidURL):
        return ConfigurationError(f"invalid HTTP endpoint {url}: {exc}")
    return PublishError(f"HTTP exchange with {where} failed: {exc}")


def retryable(exc: Exception) -> bool:
    if isinstance(exc, DeliveryError):
        return exc.status in RETRY_STATUSES
    # A certificate or TLS mismatch does not heal by retrying.
    return isinstance(exc, ConnectError) and not isinstance(exc.__cause__, aiohttp.ClientSSLError)


def error_summary(body: object) -> str:
    if isinstance(body, dict):
        return f"{body.get('error', '')}: {body.get('detail', '')}"
    return str(body)[:500]
