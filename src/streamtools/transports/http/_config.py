"""The HTTP transport's settings: names, defaults and the environment, read once."""

from __future__ import annotations

import dataclasses
import os
import resource
import ssl as ssl_module
from typing import Any, Final

from streamtools import _settings
from streamtools._settings import RetryPolicy
from streamtools.errors import ConfigurationError

TRANSPORT: Final = "HTTPHandler"
DEFAULT_HOST: Final = "localhost"
DEFAULT_PORT: Final = 8080
TOKEN_ENV: Final = "STREAMTOOLS_HTTP_TOKEN"
METHODS: Final = ("GET", "POST")


def env_host(owner: str, host: object) -> str:
    """`host`, else HTTP_HOST, else localhost: a host name or IP address."""
    if host is None:
        host = os.environ.get("HTTP_HOST") or DEFAULT_HOST
    if not isinstance(host, str) or not host or any(c in host for c in "/ ?#@"):
        raise ConfigurationError(f"{owner}: host must be a host name or IP address, got {host!r}")
    return host


def env_port(owner: str, port: object, *, allow_zero: bool) -> int:
    """`port`, else HTTP_PORT, else 8080 (0 picks a free port where `allow_zero`)."""
    if port is None:
        raw = os.environ.get("HTTP_PORT")
        if not raw:
            return DEFAULT_PORT
        try:
            port = int(raw)
        except ValueError:
            raise ConfigurationError(
                f"{owner}: HTTP_PORT must be a port number, got {raw!r}"
            ) from None
    low = 0 if allow_zero else 1
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= 65535:
        # _settings' message style; it has no upper bound to check.
        raise ConfigurationError(f"{owner}: port must be an int in {low}..65535, got {port!r}")
    return port


def env_token(owner: str, token: object) -> str | None:
    """`token`, else STREAMTOOLS_HTTP_TOKEN, else None: a printable string."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    if token is not None and (not isinstance(token, str) or not token.isprintable()):
        raise ConfigurationError(f"{owner}: token must be a non-empty printable string")
    return token or None


def check_ssl(owner: str, ssl: object) -> ssl_module.SSLContext | None:
    """An ssl.SSLContext or None."""
    if ssl is not None and not isinstance(ssl, ssl_module.SSLContext):
        raise ConfigurationError(f"{owner}: ssl must be an ssl.SSLContext or None, got {ssl!r}")
    return ssl


def method(value: object) -> str:
    """'POST' or 'GET', any case."""
    if not isinstance(value, str) or value.upper() not in METHODS:
        raise ConfigurationError(f"method must be 'POST' or 'GET', got {value!r}")
    return value.upper()


RESEND: Final = RetryPolicy(attempts=3, delay=0.1, max_delay=5.0)
"""The HTTP producer's default `resend=`: quick, since the server answers at once."""


def resend_policy(
    owner: str,
    resend: object,
    retries: int | None,
    retry_backoff: float | None,
    max_retry_backoff: float | None,
) -> RetryPolicy:
    """`resend=`, or the RetryPolicy the deprecated `retries=`/`retry_backoff=`/
    `max_retry_backoff=` describe (with a DeprecationWarning each)."""
    if not isinstance(resend, RetryPolicy):
        raise ConfigurationError(f"{owner}: resend must be a RetryPolicy, got {resend!r}")
    old = {"attempts": retries, "delay": retry_backoff, "max_delay": max_retry_backoff}
    given: dict[str, Any] = {field: value for field, value in old.items() if value is not None}
    if not given:
        return resend
    names = {"attempts": "retries", "delay": "retry_backoff", "max_delay": "max_retry_backoff"}
    for field, value in given.items():
        _settings.renamed(
            owner, names[field], f"resend=RetryPolicy({field}={value!r})", stacklevel=4
        )
    if resend != RESEND:
        raise ConfigurationError(
            f"{owner}: pass resend= or {', '.join(names[f] for f in given)}=, not both"
        )
    try:
        return dataclasses.replace(resend, **given)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{owner}: {exc}") from None


def default_max_connections() -> int:
    # Half the descriptors the process may open, at most 1024: the rest stays for the
    # process's other connections, and accept() does not run out of descriptors.
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # pragma: no cover - POSIX always answers
        return 1024
    return 1024 if soft == resource.RLIM_INFINITY else max(1, min(1024, soft // 2))
