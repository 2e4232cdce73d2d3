"""The Redis transport's connection settings: keywords, else the environment, read once.

`url=`, else `REDIS_URL`, else redis://localhost:6379/0 (`rediss://` is TLS; the path is the
database number). `username=`/`password=` (a Redis ACL user; the password alone is the
`requirepass` one), else the URL's, else `REDIS_USERNAME`/`REDIS_PASSWORD`. `ssl=` an
SSLContext (TLS on a `redis://` URL too; a `rediss://` URL without one gets Python's default
context, verifying the server's certificate). The password only ever goes into the client's
keywords (`Settings.client()`): it is out of the settings' repr, and `where` (what errors and
reprs name) shows the URL without it.
"""

from __future__ import annotations

import os
import ssl as _ssl
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from streamtools.errors import ConfigurationError

DEFAULT_URL: Final = "redis://localhost:6379/0"
SCHEMES: Final = ("redis", "rediss")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    ssl: _ssl.SSLContext | None

    @property
    def where(self) -> str:
        """The server as errors and reprs name it: never the password."""
        scheme = "rediss" if self.ssl is not None else "redis"
        user = f" as {self.username!r}" if self.username else ""
        return f"Redis at {scheme}://{self.host}:{self.port}/{self.db}{user}"

    def client(self) -> dict[str, Any]:
        """redis-py's connection keywords (the password only ever goes here)."""
        options: dict[str, Any] = {"host": self.host, "port": self.port, "db": self.db}
        if self.username is not None:
            options["username"] = self.username
        if self.password is not None:
            options["password"] = self.password
        return options


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if _port(parts) is not None else ""
    return f"{parts.scheme}://***@{host}{port}{parts.path}"


def _port(parts: Any) -> int | None:
    try:
        port: int | None = parts.port
    except ValueError:
        return None
    return port


def read_settings(
    owner: str,
    url: str | None,
    username: str | None,
    password: str | None,
    ssl: _ssl.SSLContext | None,
) -> Settings:
    # Environment read once, here; explicit keywords win.
    env = os.environ.get
    given = url or env("REDIS_URL") or DEFAULT_URL
    if not isinstance(given, str):
        raise ConfigurationError(f"{owner}: url must be a str, got {type(given).__name__}")
    parts = urlsplit(given)
    shown = _redacted(given)
    if parts.scheme not in SCHEMES or not parts.hostname:
        raise ConfigurationError(
            f"{owner}: url must be redis://[user:password@]host[:port][/db] (or rediss:// for "
            f"TLS), got {shown!r}"
        )
    try:
        port = parts.port or 6379
    except ValueError:
        raise ConfigurationError(f"{owner}: the port in url {shown!r} is not a number") from None
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise ConfigurationError(
            f"{owner}: the path of url {shown!r} must be a database number (e.g. /0)"
        )
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise ConfigurationError(f"{owner}: ssl must be an ssl.SSLContext, got {ssl!r}")
    user = username or (unquote(parts.username) if parts.username else None)
    user = user or env("REDIS_USERNAME") or None
    secret = password or (unquote(parts.password) if parts.password else None)
    secret = secret or env("REDIS_PASSWORD") or None
    if user is not None and secret is None:
        raise ConfigurationError(
            f"{owner}: a Redis username ({user!r}) needs a password "
            "(password=, in the URL or REDIS_PASSWORD)"
        )
    context = ssl
    if context is None and parts.scheme == "rediss":
        context = _ssl.create_default_context()
    return Settings(parts.hostname, port, int(path), user, secret, context)
