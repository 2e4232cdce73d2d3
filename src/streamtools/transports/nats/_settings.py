"""The NATS transport's connection settings: keywords, else the environment, read once.

`servers=` (else `NATS_URL`, else nats://localhost:4222; a comma-separated list for a
cluster), `user=`/`password=` (else `NATS_USER`/`NATS_PASSWORD`), `token=` (else
`NATS_TOKEN`), `creds=` a credentials file (else `NATS_CREDS`), `ssl=` an SSLContext.
The password and the token only ever go into nats-py's keywords (`Settings.client()`): they
are out of the settings' repr, and `where` (what errors and reprs name) shows the servers
without any credentials in their URLs and the user, never a secret.
"""

from __future__ import annotations

import os
import ssl as _ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from streamtools.errors import ConfigurationError

DEFAULT_SERVER = "nats://localhost:4222"
_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class Settings:
    servers: tuple[str, ...] = field(repr=False)  # may hold user:password@ in a URL
    user: str | None
    password: str | None = field(repr=False)
    token: str | None = field(repr=False)
    creds: str | None
    ssl: _ssl.SSLContext | None

    def client(self) -> dict[str, Any]:
        """nats-py's connection keywords (the secrets only ever go here)."""
        options: dict[str, Any] = {"servers": list(self.servers)}
        if self.user is not None:
            options["user"] = self.user
            options["password"] = self.password
        if self.token is not None:
            options["token"] = self.token
        if self.creds is not None:
            options["user_credentials"] = self.creds
        if self.ssl is not None:
            options["tls"] = self.ssl
        return options

    @property
    def hosts(self) -> tuple[str, ...]:
        """The servers without credentials: what reprs, logs and errors show."""
        return tuple(_redact(url) for url in self.servers)

    @property
    def where(self) -> str:
        login = (
            f" as {self.user!r}"
            if self.user
            else " with a token"
            if self.token
            else f" with credentials {self.creds}"
            if self.creds
            else ""
        )
        return f"NATS at {','.join(self.hosts)}{login}"

    @property
    def login_hint(self) -> str:
        """What to check when the server refuses the login."""
        if self.creds:
            return "check the credentials file (creds= or NATS_CREDS)"
        if self.token:
            return "check the token (token= or NATS_TOKEN)"
        if self.user:
            return "check the user and password (user=/password= or NATS_USER/NATS_PASSWORD)"
        return (
            "the server wants a login: set user=/password= (NATS_USER/NATS_PASSWORD), "
            "token= (NATS_TOKEN) or creds= (NATS_CREDS)"
        )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def read_settings(
    owner: str,
    servers: str | None,
    user: str | None,
    password: str | None,
    token: str | None,
    creds: str | None,
    ssl: _ssl.SSLContext | None,
) -> Settings:
    # Environment read once, here; explicit keywords win.
    env = os.environ.get
    raw = servers or env("NATS_URL") or DEFAULT_SERVER
    if not isinstance(raw, str):
        raise ConfigurationError(f"{owner}: servers must be a string, got {type(raw).__name__}")
    urls: list[str] = []
    for part in raw.split(","):
        url = part.strip()
        if not url:
            continue
        if "://" not in url:
            url = f"nats://{url}"
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES or not parts.hostname:
            raise ConfigurationError(
                f"{owner}: servers must be 'nats://host:port[,nats://host:port...]', got "
                f"{_redact(url)!r}"
            )
        urls.append(url)
    if not urls:
        raise ConfigurationError(f"{owner}: servers names no server")
    user = user or env("NATS_USER") or None
    password = password or env("NATS_PASSWORD") or None
    token = token or env("NATS_TOKEN") or None
    creds = creds or env("NATS_CREDS") or None
    if password is not None and user is None:
        raise ConfigurationError(f"{owner}: a password is set but no user (user= or NATS_USER)")
    if user is not None and password is None:
        raise ConfigurationError(
            f"{owner}: user {user!r} has no password (password= or NATS_PASSWORD)"
        )
    logins = [name for name, value in (("user", user), ("token", token), ("creds", creds)) if value]
    if len(logins) > 1:
        raise ConfigurationError(
            f"{owner}: set one way to log in, not {' and '.join(logins)}: user=/password=, "
            "token= or creds="
        )
    if creds is not None and not os.path.isfile(creds):
        raise ConfigurationError(f"{owner}: the credentials file {creds!r} does not exist")
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise ConfigurationError(f"{owner}: ssl must be an ssl.SSLContext, got {ssl!r}")
    return Settings(tuple(urls), user, password, token, creds, ssl)
