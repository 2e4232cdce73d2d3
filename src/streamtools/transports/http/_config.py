"""The HTTP transport's settings: names, defaults and the environment, read once."""

from __future__ import annotations

import os
import ssl as ssl_module
from typing import Final

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
