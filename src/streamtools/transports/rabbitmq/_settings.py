"""Settings of a RabbitMQ producer or consumer: broker addresses from the keywords or the
environment (`RMQ_*`), checked once; passwords redacted for logs, reprs and errors.
"""

from __future__ import annotations

import os
import ssl as _ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from yarl import URL

from streamtools._settings import choice, seconds
from streamtools.errors import ConfigurationError

QueueType = Literal["quorum", "classic"]
Failover = Literal["in_order", "shuffle"]


@dataclass(frozen=True, slots=True)
class _Settings:
    urls: tuple[URL, ...]  # one or more broker addresses, in the order they are tried
    ssl: _ssl.SSLContext | None
    connect_timeout: float
    queue_type: QueueType
    failover: Failover = "in_order"

    @property
    def url(self) -> URL:
        """The first address (usually the only one)."""
        return self.urls[0]

    @property
    def address(self) -> str:
        return ", ".join(f"{url.host}:{url.port}" for url in self.urls)

    @property
    def redacted(self) -> str:
        return ",".join(redact(url) for url in self.urls)


def redact(url: URL | str) -> str:
    """`url` (or a comma-separated list of them) without passwords, for logs, reprs and errors.

    Never raises: text that does not parse as a URL is redacted as text.
    """
    if isinstance(url, str):
        if "," in url:
            return ",".join(redact(part) for part in url.split(","))
        try:
            parsed = URL(url)
        except (TypeError, ValueError):
            return _redact_text(url)
        if not parsed.scheme or not parsed.host:
            return _redact_text(url)  # "user:pw@host" without a scheme is no URL to yarl
    else:
        parsed = url
    if parsed.password is not None:
        parsed = parsed.with_password("***")
    return str(parsed)


def _redact_text(text: str) -> str:
    """`text` with whatever sits between `user:` and the last `@` replaced by `***`."""
    userinfo, at, rest = text.rpartition("@")
    if not at:
        return text
    scheme, sep, credentials = userinfo.rpartition("://")
    user, colon, _ = credentials.partition(":")
    return f"{scheme}{sep}{user}{colon and ':***'}@{rest}"


def _settings(
    owner: str,
    url: str | Sequence[str] | None,
    ssl: _ssl.SSLContext | None,
    connect_timeout: float,
    queue_type: str,
    failover: str | None = None,
) -> _Settings:
    # Environment read once, here; explicit keywords win.
    given: object = url  # checked at run time: callers without mypy pass anything
    if given is not None:
        if isinstance(given, str):
            urls = _parse_urls(owner, "url=", given.split(","), ssl)
        elif isinstance(given, Sequence) and all(isinstance(item, str) for item in given):
            # One URL per item, not split at commas: the way to give a raw ',' in a password.
            urls = _parse_urls(owner, "url=", [str(item) for item in given], ssl)
        else:
            raise ConfigurationError(
                f"{owner}: url must be an amqp:// URL or a sequence of them, got "
                f"{type(given).__name__}"
            )
    elif os.environ.get("RMQ_URL"):
        urls = _parse_urls(owner, "RMQ_URL", os.environ["RMQ_URL"].split(","), ssl)
    else:
        urls = _host_urls(owner, ssl)
    timeout = seconds(owner, "connect_timeout", connect_timeout, positive=True)
    checked: QueueType = (
        "quorum"
        if choice(owner, "queue_type", queue_type, ("quorum", "classic")) == "quorum"
        else "classic"
    )
    order = failover if failover is not None else os.environ.get("RMQ_FAILOVER") or "in_order"
    how: Failover = (
        "shuffle"
        if choice(owner, "failover", order, ("in_order", "shuffle")) == "shuffle"
        else "in_order"
    )
    return _Settings(urls, ssl, timeout, checked, how)


def _parse_urls(
    owner: str, source: str, items: Sequence[str], ssl: _ssl.SSLContext | None
) -> tuple[URL, ...]:
    """Each item as a checked amqp(s):// URL with port and credentials filled in."""
    if not items or items == [""]:
        raise ConfigurationError(f"{owner}: {source} names no RabbitMQ address")
    count = len(items)
    urls: list[URL] = []
    for position, raw in enumerate(items, 1):
        item = raw.strip()
        which = f"address {position} of {count} in {source}" if count > 1 else source
        shown = _redact_text(item)
        if not item:
            raise ConfigurationError(
                f"{owner}: {which} is empty ({redact(','.join(items))!r}); separate addresses "
                "with single commas"
            )
        try:
            parsed = URL(item)
            port = parsed.port
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"{owner}: {which} is not a valid URL ({shown!r}: {exc}); expected "
                "amqp://user:pass@host:5672/vhost, one full URL per address (a ',' in a "
                "password is written %2C)"
            ) from None
        if parsed.scheme not in ("amqp", "amqps") or not parsed.host:
            hint = (
                "; each address of a list is a full URL: amqp://u:p@host1:5672/,"
                "amqp://u:p@host2:5672/ (a ',' in a password is written %2C)"
                if count > 1
                else ""
            )
            raise ConfigurationError(
                f"{owner}: {which} must look like amqp://user:pass@host:5672/vhost (or "
                f"amqps://), got {shown!r}{hint}"
            )
        if port is not None and not 0 < port < 65536:
            raise ConfigurationError(f"{owner}: {which} has port {port}, not 1-65535")
        if ssl is not None and parsed.scheme != "amqps":
            raise ConfigurationError(
                f"ssl= is given but the url {redact(parsed)!r} is not amqps://; use amqps://"
            )
        if port is None:
            parsed = parsed.with_port(5671 if parsed.scheme == "amqps" else 5672)
        if parsed.user is None:
            parsed = parsed.with_user("guest").with_password("guest")
        urls.append(parsed)
    options = {url.query_string for url in urls}
    if len(options) > 1:
        # One connection object carries them (heartbeat, reconnect_interval...) for all.
        raise ConfigurationError(
            f"{owner}: the addresses in {source} have different ?options "
            f"({', '.join(sorted(repr(o) for o in options))}); give every address the same"
        )
    return tuple(urls)


def _host_urls(owner: str, ssl: _ssl.SSLContext | None) -> tuple[URL, ...]:
    """URLs from RMQ_HOST (a comma-separated list of host or host:port) and the other RMQ_*."""
    port_text = os.environ.get("RMQ_PORT") or "5672"
    try:
        default_port = int(port_text)
    except ValueError:
        raise ConfigurationError(f"RMQ_PORT must be a port number, got {port_text!r}") from None
    if not 0 < default_port < 65536:
        raise ConfigurationError(f"RMQ_PORT must be a port number 1-65535, got {port_text!r}")
    vhost = os.environ.get("RMQ_VHOST") or "/"
    hosts = (os.environ.get("RMQ_HOST") or "localhost").split(",")
    urls = []
    for position, raw in enumerate(hosts, 1):
        item = raw.strip()
        which = f"RMQ_HOST entry {position} of {len(hosts)}" if len(hosts) > 1 else "RMQ_HOST"
        try:
            parsed = URL(f"amqp://{item}")
            port = parsed.port
        except ValueError as exc:
            raise ConfigurationError(
                f"{owner}: {which} must be host or host:port, got {_redact_text(item)!r}: {exc}"
            ) from None
        if (
            not item
            or not parsed.host
            or parsed.user is not None
            or parsed.path not in ("", "/")
            or parsed.query_string
            or (port is not None and not 0 < port < 65536)
        ):
            raise ConfigurationError(
                f"{owner}: {which} must be host or host:port (credentials go in RMQ_USER/"
                f"RMQ_PASS, the vhost in RMQ_VHOST), got {_redact_text(item)!r}"
            )
        urls.append(
            URL.build(
                scheme="amqps" if ssl is not None else "amqp",
                user=os.environ.get("RMQ_USER") or "guest",
                password=os.environ.get("RMQ_PASS") or "guest",
                host=parsed.host,
                port=port if port is not None else default_port,
                path="/" if vhost == "/" else "/" + vhost.strip("/"),
            )
        )
    return tuple(urls)
