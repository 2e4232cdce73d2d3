"""The RabbitMQ transport on aio-pika: confirmed, persistent, self-healing.

Topology, declared idempotently with the same arguments by producers and consumers:

- `<queue>`: durable, quorum by default (`queue_type="classic"` selectable), with a
  dead-letter route to `<queue>.dlq` as a safety net for what the broker itself drops
  (e.g. a quorum queue's delivery limit after repeated consumer crashes).
- `<queue>.dlq`: durable; streamtools publishes poison and invalid messages there itself,
  with `x-death-reason`, `x-error-type`, `x-error-message`, `x-attempts` and
  `x-original-queue` headers. A consumer on a name ending in `.dlq` consumes it as is
  and declares no retry queues: what its handler cannot take goes back to the tail of that
  same DLQ after the backoff delay (the core's rule, see `streamtools._delivery`).
- `<queue>.retry.<n>` (consumers only, n = 1..max_retries): durable delay queues without
  consumers whose expired messages dead-letter back to `<queue>`. A failed message is copied
  there with a per-message `expiration` (the backoff delay) and `x-streamtools-attempt`
  incremented, confirmed, and only then is the original acked: nothing is lost in between,
  and no delivery is held while waiting. The TTL is per message, so consumers with other
  retry settings share the same queues without argument mismatches.

Delivery guarantees: `send` returns only after the broker confirmed the (persistent,
mandatory) message. A publish interrupted by a lost connection (or a lost confirm) is
published again with the same message id once the connection is back, until
`send_timeout`: delivery is at-least-once, so a consumer may see a duplicate with the same
`ce-id`. Consumers ack after the handler (and any retry or dead-letter copy) is done, so a
crash or a cut connection redelivers instead of losing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import random
import ssl as _ssl
import struct
import weakref
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal

import aio_pika
import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions
import pamqp.commands
import pamqp.exceptions
import pamqp.frame
import pamqp.header
from yarl import URL

from streamtools._base import Capabilities, Producer
from streamtools._binding import CE, content_type
from streamtools._codec import SPECVERSION, Metadata, type_name
from streamtools._deadlines import Deadlines
from streamtools._delivery import DeliveryLost, Incoming, QueuedConsumer
from streamtools._settings import choice, integer, seconds
from streamtools._types import Queue, T
from streamtools._window import SettleWindow
from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    PublishError,
    ReplyTimeoutError,
    StreamtoolsError,
)

__all__ = ["RabbitMQConsumer", "RabbitMQProducer"]

logger = logging.getLogger("streamtools.rabbitmq")
logger.addHandler(logging.NullHandler())

QueueType = Literal["quorum", "classic"]
Failover = Literal["in_order", "shuffle"]

REPLY_TO: Final = "amq.rabbitmq.reply-to"
_RECONNECT_INTERVAL: Final = 1.0
_REPUBLISH_TIMEOUT: Final = 30.0
_ACK_LINGER: Final = 0.005  # seconds an ack may wait for more completions to cover
_SEND_OPTIONS: Final = frozenset({"expiration", "headers"})
_PERSISTENT: Final = int(aio_pika.DeliveryMode.PERSISTENT)
_NOT_PERSISTENT: Final = int(aio_pika.DeliveryMode.NOT_PERSISTENT)


# --- configuration ---------------------------------------------------------------------------


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


# --- topology --------------------------------------------------------------------------------


def _topology(
    name: str, queue_type: QueueType, retries: int
) -> list[tuple[str, dict[str, object]]]:
    """(queue, arguments) for everything that `name` needs; the same for every peer."""
    typed: dict[str, object] = {"x-queue-type": "quorum"} if queue_type == "quorum" else {}
    # At-least-once dead-lettering (quorum only) keeps a message until its target confirms it.
    safe_dlx: dict[str, object] = (
        {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if queue_type == "quorum"
        else {}
    )
    if name.endswith(".dlq"):
        declared = [(name, dict(typed))]
    else:
        main = {
            **typed,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": f"{name}.dlq",
            **safe_dlx,
        }
        declared = [(name, main), (f"{name}.dlq", dict(typed))]
    for n in range(1, retries + 1):
        delay = {
            **typed,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": name,
            **safe_dlx,
        }
        declared.append((f"{name}.retry.{n}", delay))
    return declared


# --- error mapping: the one place aio-pika / aiormq errors become streamtools errors --------


def _translate(
    exc: BaseException, settings: _Settings, what: str, url: URL | None = None
) -> StreamtoolsError:
    """`exc` as a streamtools error; `url` is the address it came from, if known."""
    address = f"{url.host}:{url.port}" if url is not None else settings.address
    where = f"RabbitMQ at {address}"
    shown = redact(url) if url is not None else settings.redacted
    user = (url or settings.url).user
    if isinstance(exc, StreamtoolsError):
        return exc
    if isinstance(exc, _Refused):
        return ConnectError(f"{what}: {where} {exc.words(user)}")
    if isinstance(exc, aiormq.exceptions.PublishError):
        return PublishError(
            f"{what}: no queue took the message (unroutable, returned by {where}); it was not "
            "delivered. Declare the queue (any streamtools producer or consumer on it does) "
            "or check the queue name"
        )
    if isinstance(exc, aiormq.exceptions.DeliveryError):
        return PublishError(f"{what}: {where} refused the message (nack); it was not stored")
    if isinstance(exc, aiormq.exceptions.ChannelPreconditionFailed):
        return ConfigurationError(
            f"{what}: {where} refused the declaration: {_reply_text(exc)}. A queue of that "
            "name already exists with other arguments (queue type, dead-letter settings). "
            "Pass the matching queue_type= (quorum or classic), or drain and delete the "
            "existing queue so streamtools can declare it"
        )
    if isinstance(exc, aiormq.exceptions.ChannelLockedResource):
        return ConfigurationError(
            f"{what}: {where} says the queue is locked: {_reply_text(exc)}. Another "
            "connection holds it exclusively; stop that client or use another queue name "
            "(retrying will not help)"
        )
    if isinstance(exc, aiormq.exceptions.ChannelAccessRefused):
        return ConfigurationError(
            f"{what}: {where} refused access: {_reply_text(exc)}; check the user's "
            "permissions on the vhost and that the queue is not exclusive to another client"
        )
    if isinstance(
        exc, aiormq.exceptions.ProbableAuthenticationError | aiormq.exceptions.AuthenticationError
    ):
        return ConnectError(
            f"{what}: {where} refused the login of user {user!r} ({shown}): "
            f"{_reason(exc)}; check RMQ_USER/RMQ_PASS or the url= credentials"
        )
    if isinstance(exc, TimeoutError):
        return ConnectError(
            f"{what}: no answer from {where} ({shown}) within "
            f"{settings.connect_timeout} s; check RMQ_HOST/RMQ_PORT or url=, and that "
            "RabbitMQ runs there"
        )
    if isinstance(exc, aiormq.exceptions.IncompatibleProtocolError) or _closed_early(exc):
        return ConnectError(
            f"{what}: {where} ({shown}) accepted the connection but closed it during the "
            f"AMQP handshake ({_reason(exc)}): it is not ready to take connections (a node "
            "that is starting or stopping does that) or it is not an AMQP 0-9-1 port"
        )
    if isinstance(exc, aiormq.exceptions.AMQPConnectionError | OSError):
        return ConnectError(
            f"{what}: cannot connect to {where} ({shown}): {_reason(exc)}; "
            "check RMQ_HOST/RMQ_PORT or url=, and that RabbitMQ runs there"
        )
    return ConnectError(f"{what}: {where} failed: {_reason(exc)}")


class _Refused(Exception):
    """The broker closed the AMQP handshake with `code` and its own reply `text`."""

    def __init__(self, code: int, text: str, vhost: str) -> None:
        super().__init__(code, text)
        self.code, self.text, self.vhost = code, text, vhost

    def words(self, user: str | None) -> str:
        if self.code == 403 and "login" in self.text.lower():
            return (
                f"refused the login of user {user!r}: {self.text}; check RMQ_USER/RMQ_PASS "
                "or the url= credentials"
            )
        if self.code in (403, 530):
            return (
                f"refused vhost {self.vhost!r} to user {user!r}: {self.text}; check "
                "RMQ_VHOST or the url's path, that the vhost exists (rabbitmqctl list_vhosts) "
                f"and that the user may use it (rabbitmqctl list_permissions -p {self.vhost})"
            )
        return (
            f"answered but is not ready to take connections: {self.text} (reply code "
            f"{self.code}); it may be starting, stopping or cut off from its cluster"
        )


def _closed_early(exc: BaseException) -> bool:
    """The peer hung up in the middle of the handshake (aiormq reports it in words only)."""
    if isinstance(exc, StopAsyncIteration | pamqp.exceptions.PAMQPException):
        return True
    reason = _reason(exc).lower()
    return isinstance(exc, aiormq.exceptions.AMQPConnectionError) and (
        "unexpectedly closed" in reason or "server connection reset" in reason
    )


async def _refusal(url: URL, ssl: _ssl.SSLContext | None, timeout: float) -> _Refused | None:
    """Why the broker at `url` closes the AMQP handshake, in its own words; None if it does not.

    aiormq reports a refused Connection.Open only as "Expected Connection.OpenOk, got
    <Connection.Close object at 0x...>", without the reply text, so we ask again: one plain
    handshake (PLAIN login, as aiormq does) straight on pamqp frames, only after a failure.
    """
    vhost = url.path[1:].replace("%2F", "/") if url.path not in ("", "/") else "/"
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                url.host,
                url.port,
                ssl=(ssl or _ssl.create_default_context()) if url.scheme == "amqps" else None,
            )
            try:
                buffer = b""

                async def receive() -> object:
                    nonlocal buffer
                    while True:
                        with contextlib.suppress(pamqp.exceptions.UnmarshalingException):
                            used, _, frame = pamqp.frame.unmarshal(buffer)
                            buffer = buffer[used:]
                            return frame
                        chunk = await reader.read(65536)
                        if not chunk:
                            raise EOFError
                        buffer += chunk

                def send(frame: pamqp.frame.FrameTypes) -> None:
                    writer.write(pamqp.frame.marshal(frame, 0))

                writer.write(pamqp.header.ProtocolHeader().marshal())
                if not isinstance(await receive(), pamqp.commands.Connection.Start):
                    return None
                login = f"\0{url.user or ''}\0{url.password or ''}"
                send(pamqp.commands.Connection.StartOk(mechanism="PLAIN", response=login))
                frame = await receive()
                if isinstance(frame, pamqp.commands.Connection.Tune):
                    send(
                        pamqp.commands.Connection.TuneOk(
                            channel_max=frame.channel_max, frame_max=frame.frame_max, heartbeat=0
                        )
                    )
                    send(pamqp.commands.Connection.Open(virtual_host=vhost))
                    frame = await receive()
                if isinstance(frame, pamqp.commands.Connection.Close):
                    return _Refused(frame.reply_code or 0, frame.reply_text or "", vhost)
                return None
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except (OSError, EOFError, TimeoutError, pamqp.exceptions.PAMQPException):
        return None


def _reply_text(exc: BaseException) -> str:
    text = exc.args[1] if len(exc.args) > 1 else _reason(exc)
    return str(text)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(a) for a in exc.args if not isinstance(a, int)) or type(exc).__name__
    return text


@contextlib.contextmanager
def _map_errors(settings: _Settings, what: str) -> Iterator[None]:
    try:
        yield
    except StreamtoolsError:
        raise
    except (aiormq.exceptions.AMQPError, OSError, RuntimeError) as exc:
        raise _translate(exc, settings, what) from exc


def _transient(exc: BaseException) -> bool:
    """Whether a failed publish may succeed once the connection or channel is back."""
    if isinstance(
        exc,
        aiormq.exceptions.PublishError
        | aiormq.exceptions.ChannelPreconditionFailed
        | aiormq.exceptions.ChannelAccessRefused
        | aiormq.exceptions.ChannelLockedResource
        | aiormq.exceptions.ChannelNotFoundEntity,
    ):
        return False
    # A nack, a closed channel or connection, a lost confirm: the broker may not have it.
    return isinstance(exc, aiormq.exceptions.AMQPError | OSError | RuntimeError)


# --- the connection shared by producers and consumers ----------------------------------------


class _NoNode(Exception):
    """Every address failed a connection attempt since the connection was last up."""

    def __init__(self, failures: Sequence[tuple[URL, BaseException]]) -> None:
        super().__init__(*failures)
        self.failures = tuple(failures)


class _Link:
    """One robust connection, a confirm channel on it, and the publish-until-confirmed loop.

    The confirm channel is a plain aiormq channel of our own on the robust connection's
    current transport, not one of aio-pika's robust channels, so that this loop decides when
    to leave it: after a lost connection, a nack, or a confirm that never came, the next
    attempt goes out on a new channel, on whichever node the connection is on by then.

    A nack must not be retried on the same channel: RabbitMQ (3.10 here) nacks every later
    publish of a channel whose first publish to a quorum queue came while the queue had no
    leader (the leader's node just died, the others still electing), however long ago the
    new leader was elected. A client on the leader's node reconnects within that window.
    """

    def __init__(self, settings: _Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.connection: _FailoverConnection | None = None
        # The aiormq confirm channel publishes go to now, and the lock a new one is opened
        # under (concurrent sends share it).
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._opening = asyncio.Lock()
        self._reply_channel: aiormq.abc.AbstractChannel | None = None
        self._reply_lock = asyncio.Lock()
        self.replies: dict[str, asyncio.Future[tuple[bytes, str]]] = {}
        # Further channels of this producer or consumer, closed with it.
        self.channels: list[aio_pika.abc.AbstractChannel] = []
        self._background: set[asyncio.Task[None]] = set()
        self._deadlines = Deadlines()

    async def open(self) -> None:
        settings = self.settings
        connection = await _connections.acquire(settings, self.role)
        self.connection = connection
        try:
            with _map_errors(settings, f"{self.role}: opening a channel"):
                async with asyncio.timeout(settings.connect_timeout):
                    await self._path(connection)
        except BaseException:
            self.connection = None
            await _connections.release(settings, connection)
            raise

    async def declare(self, topology: Sequence[tuple[str, dict[str, object]]]) -> None:
        """Declare durable queues on a throwaway channel: a 406 closes only that channel."""
        assert self.connection is not None
        transport = self.connection.transport
        if transport is None:
            raise ConnectError(f"{self.role}: not connected to {self.settings.address}")
        with _map_errors(self.settings, f"declaring queues for {topology[0][0]!r}"):
            async with asyncio.timeout(self.settings.connect_timeout):
                channel = await transport.connection.channel(publisher_confirms=False)
                try:
                    for name, arguments in topology:
                        with _map_errors(self.settings, f"declaring queue {name!r}"):
                            await channel.queue_declare(
                                name,
                                durable=True,
                                arguments=dict(arguments),  # type: ignore[arg-type]  # pamqp's FieldTable is invariant
                            )
                finally:
                    with contextlib.suppress(Exception):
                        await channel.close()

    async def _path(self, connection: _FailoverConnection) -> aiormq.abc.AbstractChannel:
        """The confirm channel to publish on: the current one, else a new one.

        A new one waits for the connection (a reconnect or failover under way) and fails
        with `_NoNode` once every address refused since it was lost. A connection that
        cannot open a channel within `connect_timeout` is dead without knowing it (a node
        that froze, a cut nobody noticed): it is closed, so that the robust connection
        moves on to the next address, and the caller tries again.
        """
        underlay = self._underlay
        if underlay is not None and not underlay.is_closed:
            return underlay
        async with self._opening:
            underlay = self._underlay
            if underlay is not None and not underlay.is_closed:
                return underlay
            amqp = await connection.usable()
            url = connection.url  # the address it is on (moved on once it is closed)
            try:
                async with asyncio.timeout(self.settings.connect_timeout):
                    underlay = await amqp.channel(publisher_confirms=True, on_return_raises=True)
            except TimeoutError:
                logger.warning(
                    "%s: no channel from RabbitMQ at %s within %s s; leaving that connection",
                    self.role,
                    redact(url),
                    self.settings.connect_timeout,
                )
                await asyncio.shield(
                    self._later(amqp.close(ConnectionError("no answer to Channel.Open")))
                )
                raise ConnectionError(
                    f"no answer to Channel.Open from {url.host}:{url.port}"
                ) from None
            self._underlay = underlay
            return underlay

    def _leave(self, underlay: aiormq.abc.AbstractChannel, why: str) -> None:
        """Publish on a new channel from now on; `underlay` is closed in the background.

        Its pending confirms fail, and their sends publish again on the new channel.
        """
        if self._underlay is not underlay:
            return  # left already
        self._underlay = None
        logger.info("%s: leaving confirm channel %s (%s)", self.role, underlay.number, why)
        self._later(underlay.close())

    def _later(self, closing: Awaitable[Any]) -> asyncio.Task[None]:
        """Run `closing` in the background, bounded, past any send's deadline."""

        async def bounded() -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.connect_timeout):
                    await closing

        task = asyncio.get_running_loop().create_task(bounded())
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def publish(
        self,
        body: bytes,
        properties: aiormq.spec.Basic.Properties,
        routing_key: str,
        *,
        timeout: float,
        what: str,
        mandatory: bool = True,
        reply: bool = False,
        delivery: aiormq.abc.AbstractChannel | None = None,
    ) -> None:
        """Publish and wait for the broker's confirm, publishing again after a lost connection.

        Gives up with PublishError after `timeout` seconds, or at once when no address takes
        a connection (every one was tried since the connection was lost). With `delivery`
        (the channel a delivery being settled arrived on), stops as soon as that channel is
        gone (the broker redelivers the delivery; a copy would duplicate it).
        """
        last: BaseException | None = None
        waiting_on: aiormq.abc.AbstractChannel | None = None  # whose confirm we await
        # The link's one deadline timer bounds this wait, reconnects included (not a timer
        # per send: see streamtools._deadlines).
        wait = self._deadlines.start(timeout)
        try:
            for attempt in itertools.count(1):
                connection = self.connection
                if connection is None:
                    raise PublishError(f"{what}: not sent, the {self.role} is closed")
                if delivery is not None and delivery.is_closed:
                    raise DeliveryLost
                underlay = None
                try:
                    underlay = self._underlay
                    if underlay is None or underlay.is_closed:
                        underlay = await self._path(connection)
                    if reply:
                        await self._consume_replies(underlay)
                    waiting_on = underlay
                    await underlay.basic_publish(
                        body,
                        exchange="",
                        routing_key=routing_key,
                        properties=properties,
                        mandatory=mandatory,
                    )
                    return
                except _NoNode as exc:
                    raise self._no_node(exc, what, timeout, sent=attempt > 1) from exc
                except asyncio.CancelledError as exc:
                    if wait.task.cancelling():
                        raise
                    last = exc  # aiormq cancelled a pending confirm: connection lost
                except Exception as exc:
                    if not _transient(exc):
                        raise _translate(exc, self.settings, what) from exc
                    last = exc
                    if underlay is not None and isinstance(exc, aiormq.exceptions.DeliveryError):
                        # Nacked: this channel may nack everything from now on (see above).
                        self._leave(underlay, "a publish was nacked")
                waiting_on = None
                logger.info(
                    "publish interrupted, publishing again: %s",
                    _reason(last),
                    extra={"queue": routing_key, "message_id": properties.message_id},
                )
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0))
        except asyncio.CancelledError:
            if not wait.timed_out():
                raise
            if waiting_on is not None and not waiting_on.is_closed:
                # Its confirm never came on a channel that still looks open: the channel or
                # the connection under it is dead. The next send must not wait on it too.
                self._leave(waiting_on, f"no confirm within {timeout} s")
            reason = f" (last error: {_reason(last)})" if last is not None else ""
            raise PublishError(
                f"{what}: not confirmed by RabbitMQ at {self.settings.address} within "
                f"{timeout} s{reason}; it may or may not have been stored"
            ) from last
        finally:
            self._deadlines.finish(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def _no_node(self, exc: _NoNode, what: str, timeout: float, *, sent: bool) -> PublishError:
        answers = "; ".join(
            str(_translate(failure, self.settings, f"{url.host}:{url.port}", url))
            for url, failure in exc.failures
        )
        stored = "it may or may not have been stored" if sent else "it was not sent"
        return PublishError(
            f"{what}: not confirmed: no RabbitMQ node can take it, every address failed "
            f"since the connection was lost ({answers}); {stored}. Until one answers, send fails "
            f"like this at once instead of waiting out its send_timeout ({timeout} s)"
        )

    async def _consume_replies(self, underlay: aiormq.abc.AbstractChannel) -> None:
        # Direct reply-to answers only on the channel that published the request, so the
        # pseudo-queue is consumed again on every new channel after a reconnect.
        if self._reply_channel is underlay:
            return
        async with self._reply_lock:
            if self._reply_channel is not underlay:
                await underlay.basic_consume(REPLY_TO, self._on_reply, no_ack=True)
                self._reply_channel = underlay

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        properties = message.header.properties
        future = self.replies.get(properties.correlation_id or "")
        if future is not None and not future.done():
            future.set_result((message.body, content_type(properties.content_type)))

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        underlay, self._underlay = self._underlay, None
        for correlation_id, future in self.replies.items():
            if not future.done():
                future.set_exception(
                    PublishError(f"request {correlation_id}: the {self.role} closed first")
                )
        if connection is not None:
            # The connection is shared: close our channels (a closed consume channel returns
            # its unacked deliveries to the queue), then let go of the connection.
            for own in self.channels:
                with contextlib.suppress(Exception):
                    await own.close()
            self.channels.clear()
            if underlay is not None and not underlay.is_closed:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.settings.connect_timeout):
                        await underlay.close()
            await _connections.release(self.settings, connection)
        for task in tuple(self._background):
            with contextlib.suppress(BaseException):
                await task


# What a failed connection attempt raises (aio-pika's CONNECTION_EXCEPTIONS, TimeoutError too).
_CONNECT_FAILURES: Final = (
    aiormq.exceptions.AMQPError,
    OSError,
    RuntimeError,
    StopAsyncIteration,
    pamqp.exceptions.PAMQPException,
)


class _FailoverConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, moving on to the next broker address whenever it reconnects.

    RobustConnection's reconnect loop connects to `self.url` on every attempt, and every end
    of a connection, lost or never made, goes through `_on_connection_close` (a refused attempt
    too: see `aio_pika.abc.UnderlayConnection.connect`). Pointing `url` at the next address
    there is all failover takes: aio-pika then reopens channels, re-declares what was declared
    on them and re-subscribes consumers on whichever node answered, as after any reconnect,
    and a publish that was waiting for its confirm is published again there (`_Link.publish`).

    It also keeps what each address answered to its last failed attempt since the connection
    was last up, so that a publish can tell "reconnecting" from "no node takes a connection".
    """

    def __init__(self, addresses: Sequence[URL], first: int, **kwargs: Any) -> None:
        super().__init__(addresses[first], **kwargs)
        self.addresses = tuple(addresses)
        self._position = first
        self._up = False  # connected, channels restored
        self.failures: dict[int, tuple[URL, BaseException]] = {}  # since it was last up
        self._attempts = 0  # failed attempts, ever
        self._news = asyncio.Event()  # set (and replaced) on every change of the above

    def _notify(self) -> None:
        news, self._news = self._news, asyncio.Event()
        news.set()

    async def _on_connected(self) -> None:
        await super()._on_connected()  # raises (and closes the transport) if a restore failed
        self._up = True
        self.failures.clear()
        self._notify()

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if not (self.close_called or self.is_closed):
            if self._up:
                self._up = False  # lost: no verdict on the address, the next attempt says
            else:
                try:
                    failure = closing.exception() or ConnectionError("closed")
                except asyncio.CancelledError as exc:
                    failure = exc
                self.failures[self._position] = (self.url, failure)
                self._attempts += 1
            if len(self.addresses) > 1:
                self._position = (self._position + 1) % len(self.addresses)
                self.url = self.addresses[self._position]
                logger.info("RabbitMQ connection ended; next address %s", redact(self.url))
            self._notify()
        await super()._on_connection_close(closing)

    async def usable(self) -> aiormq.abc.AbstractConnection:
        """The AMQP connection once connected; `_NoNode` when none will take one now.

        Waits through a reconnect or failover. Raises once every address has failed an
        attempt since the connection was lost and one more attempt failed after this call
        began (so a caller waits at most for the next attempt, and a node that is back is
        found by it).
        """
        attempts = self._attempts
        while True:
            news = self._news
            transport = self.transport
            if self.is_closed or self.close_called:
                raise RuntimeError(f"connection to {self.addresses} closed")
            if (
                self._up
                and self.connected.is_set()
                and transport is not None
                and not transport.connection.is_closed
            ):
                return transport.connection
            if len(self.failures) == len(self.addresses) and self._attempts > attempts:
                raise _NoNode([self.failures[k] for k in sorted(self.failures)])
            await news.wait()


class _Connections:
    """One robust connection per (event loop, broker addresses, TLS context), shared by reference.

    Every producer and consumer of a process that talks to the same broker (or the same
    cluster) multiplexes its channels over one TCP connection (what aio-pika recommends); the
    last to close it closes it. A lost connection is re-established once for all of them, on
    the next address that answers.
    """

    def __init__(self) -> None:
        self._shared: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            dict[tuple[tuple[str, ...], str, int], tuple[_FailoverConnection, int]],
        ] = weakref.WeakKeyDictionary()
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _key(settings: _Settings) -> tuple[tuple[str, ...], str, int]:
        return tuple(str(url) for url in settings.urls), settings.failover, id(settings.ssl)

    async def acquire(self, settings: _Settings, role: str) -> _FailoverConnection:
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault(loop, asyncio.Lock())
        async with lock:
            per_loop = self._shared.setdefault(loop, {})
            key = self._key(settings)
            found = per_loop.get(key)
            if found is not None and not found[0].is_closed:
                per_loop[key] = (found[0], found[1] + 1)
                return found[0]
            connection = await self._connect(settings, role)
            per_loop[key] = (connection, 1)
            logger.debug("connected", extra={"role": role, "broker": redact(connection.url)})
            return connection

    async def _connect(self, settings: _Settings, role: str) -> _FailoverConnection:
        """Connected to the first address that answers, trying each once in turn."""
        addresses = list(settings.urls)
        if settings.failover == "shuffle":
            random.shuffle(addresses)  # spreads a fleet of clients over the nodes
        what = f"{role}: connecting"
        failures: list[tuple[URL, BaseException]] = []
        for first, url in enumerate(addresses):
            # aio-pika's fail-fast first attempt ends its reconnect loop when it fails, so each
            # address gets a connection object of its own until one answers.
            connection = _FailoverConnection(
                addresses,
                first,
                ssl_context=settings.ssl,
                client_properties={"connection_name": f"streamtools pid {os.getpid()}"},
                # A `?reconnect_interval=` in the url wins (aio-pika skips None keywords).
                reconnect_interval=(
                    None if "reconnect_interval" in url.query else _RECONNECT_INTERVAL
                ),
            )
            try:
                async with asyncio.timeout(settings.connect_timeout):
                    await connection.connect(timeout=settings.connect_timeout)
                return connection
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await connection.close()
                if not isinstance(exc, _CONNECT_FAILURES):
                    raise
                failures.append((url, await _explained(exc, url, settings)))
        if len(failures) == 1:
            only, failure = failures[0]
            raise _translate(failure, settings, what, only) from failure
        reasons = "; ".join(
            str(_translate(failure, settings, f"{at.host}:{at.port}", at))
            for at, failure in failures
        )
        raise ConnectError(
            f"{what}: none of the {len(failures)} RabbitMQ addresses took the connection: {reasons}"
        ) from failures[-1][1]

    async def release(self, settings: _Settings, connection: aio_pika.RobustConnection) -> None:
        loop = asyncio.get_running_loop()
        per_loop = self._shared.get(loop, {})
        key = self._key(settings)
        found = per_loop.get(key)
        if found is not None and found[0] is connection and found[1] > 1:
            per_loop[key] = (connection, found[1] - 1)
            return
        if found is not None and found[0] is connection:
            del per_loop[key]
        with contextlib.suppress(Exception):
            await connection.close()


async def _explained(exc: BaseException, url: URL, settings: _Settings) -> BaseException:
    """`exc`, or the broker's own reason when it closed the handshake without aiormq saying why."""
    if isinstance(exc, aiormq.exceptions.InvalidFrameError) and "Connection.Close" in str(exc):
        refused = await _refusal(url, settings.ssl, settings.connect_timeout)
        if refused is not None:
            refused.__cause__ = exc
            return refused
    return exc


_connections = _Connections()


_second_text = ""
_second: datetime | None = None


def _timestamp(iso: str) -> datetime | None:
    # AMQP timestamps are whole seconds: one datetime per second for streamtools' own times
    # (`_codec._now`: 27 characters, microseconds, UTC), parsed in full for any other.
    global _second_text, _second
    if len(iso) == 27 and iso[19] == "." and iso[26] == "Z":
        text = iso[:19]
        if text != _second_text:
            try:
                _second = datetime.fromisoformat(text).replace(tzinfo=UTC)
            except ValueError:
                return None
            _second_text = text
        return _second
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        return None


def _properties(
    meta: Metadata,
    *,
    headers: Mapping[str, object] | None = None,
    expiration: float | None = None,
    reply_to: str | None = None,
    persistent: bool = True,
) -> aiormq.spec.Basic.Properties:
    """AMQP properties carrying `meta` as CloudEvents headers and mirrored properties.

    Built directly rather than through `aio_pika.Message` (the same fields and encodings:
    expiration in whole milliseconds, priority 0), which costs several microseconds per
    message on the publish path.
    """
    all_headers: dict[str, object] = dict(CE.write(meta))
    if headers:
        all_headers.update(headers)
    return aiormq.spec.Basic.Properties(
        content_type=meta.content_type,
        headers=all_headers,  # type: ignore[arg-type]  # pamqp's FieldTable is invariant
        delivery_mode=_PERSISTENT if persistent else _NOT_PERSISTENT,
        priority=0,
        correlation_id=meta.id if reply_to else None,
        reply_to=reply_to,
        expiration=None if expiration is None else str(int(expiration * 1000)),
        message_id=meta.id,
        timestamp=_timestamp(meta.time),
        message_type=meta.type,
    )


_LONG: Final = struct.Struct(">I")
_SECONDS: Final = struct.Struct(">Q")
# Basic.Properties flags of a plain send: content_type, headers, delivery_mode, priority,
# message_id, timestamp, type (AMQP 0-9-1, 4.2.6.1; the bits pamqp's marshal sets).
_PLAIN_FLAGS: Final = 0x8000 | 0x2000 | 0x1000 | 0x0800 | 0x0080 | 0x0040 | 0x0020


def _short(text: str) -> bytes | None:
    """An AMQP shortstr, or None when `text` is too long for one (255 bytes)."""
    data = text.encode()
    return bytes((len(data),)) + data if len(data) < 256 else None


def _table_key(key: str) -> bytes:
    """A field-table entry's name and the type tag of a long string ('S')."""
    return bytes((len(key),)) + key.encode() + b"S"


class _WiredProperties(aiormq.spec.Basic.Properties):
    """Basic.Properties whose AMQP encoding `_Stamp` prepared from prebuilt parts.

    The attributes are set as on any Properties (aiormq reads `message_id`); only
    `marshal`, which pamqp calls to write the content header frame, returns the prepared
    bytes instead of encoding field by field (about 10 us per message in pamqp).
    """

    wire: bytes

    def marshal(self) -> bytes:
        return self.wire


class _Stamp:
    """The properties of one producer's plain sends: the constant parts built once.

    `type`, `source` and `specversion` are the same on every message of a producer; a send
    adds only `ce-id` and `ce-time`, the message id and the timestamp. Their AMQP encoding
    is prepared here too, byte for byte what pamqp writes (its headers table in sorted key
    order: ce-id, ce-source, ce-specversion, ce-time, ce-type); a test holds the two equal.
    A message whose metadata differs (trace or other extra headers, another source set
    since, a retried copy) takes the general `_properties` and pamqp's encoding.
    """

    __slots__ = (
        "_after_id",
        "_after_time",
        "_head",
        "_id_key",
        "_seconds",
        "_stamp",
        "_tail",
        "_time_key",
        "constant",
        "content_type",
        "source",
        "type",
        "wired",
    )

    def __init__(self, type_name: str, source: str, content_type: str) -> None:
        self.type = type_name
        self.source = source
        self.content_type = content_type
        constant = CE.constant(type_name, source)
        self.constant = {k: constant[k] for k in (CE.type, CE.source, CE.specversion)}
        short_type, short_ct = _short(type_name), _short(content_type)
        self.wired = short_type is not None and short_ct is not None
        self._head = _LONG.pack(_PLAIN_FLAGS)[2:] + (short_ct or b"")
        self._id_key = _table_key(CE.id)
        self._after_id = b"".join(
            _table_key(key) + _LONG.pack(len(data)) + data
            for key, data in ((CE.source, source.encode()), (CE.specversion, SPECVERSION.encode()))
        )
        self._time_key = _table_key(CE.time)
        encoded_type = type_name.encode()
        self._after_time = _table_key(CE.type) + _LONG.pack(len(encoded_type)) + encoded_type
        self._tail = short_type or b""
        self._stamp: datetime | None = None
        self._seconds = b""

    def properties(self, meta: Metadata) -> aiormq.spec.Basic.Properties:
        if (
            meta.type != self.type
            or meta.source != self.source
            or meta.content_type != self.content_type
            or meta.specversion != SPECVERSION
            or meta.attempt != 1
        ):
            return _properties(meta)
        headers: dict[str, object] = {CE.id: meta.id, **self.constant, CE.time: meta.time}
        stamp = _timestamp(meta.time)
        wire = self._wire(meta, stamp) if not meta.headers else None
        if meta.headers:
            headers.update(meta.headers)
        properties = (aiormq.spec.Basic.Properties if wire is None else _WiredProperties)(
            content_type=meta.content_type,
            headers=headers,  # type: ignore[arg-type]  # pamqp's FieldTable is invariant
            delivery_mode=_PERSISTENT,
            priority=0,
            message_id=meta.id,
            timestamp=stamp,
            message_type=meta.type,
        )
        if wire is not None:
            properties.wire = wire  # type: ignore[attr-defined]  # a _WiredProperties
        return properties

    def _wire(self, meta: Metadata, stamp: datetime | None) -> bytes | None:
        """The AMQP encoding of a plain send's properties; None where pamqp must do it."""
        message_id, time = meta.id.encode(), meta.time.encode()
        if not self.wired or stamp is None or len(message_id) > 255:
            return None
        if stamp is not self._stamp:  # one datetime per second (see _timestamp)
            self._stamp, self._seconds = stamp, _SECONDS.pack(int(stamp.timestamp()))
        table = b"".join(
            (
                self._id_key,
                _LONG.pack(len(message_id)),
                message_id,
                self._after_id,
                self._time_key,
                _LONG.pack(len(time)),
                time,
                self._after_time,
            )
        )
        return b"".join(
            (
                self._head,
                _LONG.pack(len(table)),
                table,
                b"\x02\x00",  # delivery_mode 2 (persistent), priority 0
                bytes((len(message_id),)),
                message_id,
                self._seconds,
                self._tail,
            )
        )


class _RabbitEndpoint:
    """What RabbitMQ producers and consumers share: the link and the trace attributes."""

    transport: ClassVar[str] = "RMQIOHandler"
    messaging_system: ClassVar[str] = "rabbitmq"
    _settings: _Settings
    _link: _Link

    @property
    def server_address(self) -> tuple[str, int] | None:
        """The broker this endpoint is connected to now (the first address before)."""
        connection = self._link.connection
        url = connection.url if connection is not None else self._settings.url
        return url.host or "", url.port or 5672


# --- producer --------------------------------------------------------------------------------


class RabbitMQProducer(_RabbitEndpoint, Producer[T]):
    """Publishes to a RabbitMQ queue with publisher confirms; `send` returns once confirmed.

    Settings: `url=` (else `RMQ_URL`, else `RMQ_HOST`/`RMQ_PORT`/`RMQ_USER`/`RMQ_PASS`/
    `RMQ_VHOST`), one address or several (a sequence, or a comma-separated list) tried in
    order or shuffled (`failover=`, else `RMQ_FAILOVER`) when connecting and after a lost
    connection; `ssl=` an SSLContext for amqps, `connect_timeout` for the first connection
    (per address), `send_timeout` for how long `send` waits (also through a reconnect or a
    failover) for the confirm, `queue_type` matching the consumers'. Send options: `headers`
    (extra AMQP headers) and `expiration` (seconds; an expired message goes to `<queue>.dlq`).
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        url: str | Sequence[str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        queue_type: QueueType = "quorum",
        failover: Failover | None = None,
    ) -> None:
        super().__init__(queue, message_type=message_type, source=source, validate=validate)
        self._settings = _settings(
            type(self).__name__, url, ssl, connect_timeout, queue_type, failover
        )
        self.send_timeout = seconds(
            type(self).__name__, "send_timeout", send_timeout, positive=True
        )
        self._link = _Link(self._settings, f"producer {self.queue.name}")
        self._stamp = _Stamp(self._codec.type_name, self.source, self._codec.content_type)

    def __repr__(self) -> str:
        return f"RabbitMQProducer({self.queue.name!r}, url={self._settings.redacted!r})"

    async def _open(self) -> None:
        await self._link.open()
        try:
            await self._link.declare(_topology(self.queue.name, self._settings.queue_type, 0))
        except BaseException:
            await self._link.close()
            raise

    async def _close(self) -> None:
        await self._link.close()

    def _options(self, options: Mapping[str, object]) -> tuple[dict[str, object], float | None]:
        unknown = set(options) - _SEND_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"RabbitMQProducer.send has no option {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(_SEND_OPTIONS))}"
            )
        headers = options.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
            raise ConfigurationError("send option headers must be a mapping of str to values")
        reserved = [k for k in headers if k in CE.owned]
        if reserved:
            raise ConfigurationError(
                f"send option headers may not set {', '.join(sorted(reserved))}; "
                "streamtools sets them"
            )
        expiration = options.get("expiration")
        if expiration is not None and (
            isinstance(expiration, bool)
            or not isinstance(expiration, int | float)
            or expiration < 0
        ):
            raise ConfigurationError(
                f"send option expiration must be seconds >= 0, got {expiration!r}"
            )
        return dict(headers), (float(expiration) if expiration is not None else None)

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        if options:
            headers, expiration = self._options(options)
            properties = _properties(meta, headers=headers, expiration=expiration)
        else:  # the common case: no option to parse, the constant headers prebuilt
            properties = self._stamp.properties(meta)
        await self._link.publish(
            body,
            properties,
            self.queue.name,
            timeout=self.send_timeout,
            what=f"message {meta.id} to queue {self.queue.name!r}",
        )

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        headers, expiration = self._options(options) if options else ({}, None)
        future: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._link.replies[meta.id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._link.publish(
                    body,
                    _properties(
                        meta,
                        headers=headers,
                        expiration=expiration,
                        reply_to=REPLY_TO,
                        # A reply goes to this connection only: the request is not worth
                        # keeping on disk once nobody can receive its answer.
                        persistent=False,
                    ),
                    self.queue.name,
                    timeout=min(self.send_timeout, timeout),
                    what=f"request {meta.id} to queue {self.queue.name!r}",
                    reply=True,
                )
                return await future
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply to request {meta.id} on {self.queue.name!r} within {timeout} s; "
                "is a consumer running?"
            ) from None
        finally:
            self._link.replies.pop(meta.id, None)


# --- consumer --------------------------------------------------------------------------------


class _Incoming(Incoming):
    """One AMQP delivery as aiormq read it off the wire, and the policy's hooks on it."""

    __slots__ = ("channel", "consumer", "properties", "tag", "window")

    def __init__(
        self,
        consumer: RabbitMQConsumer[Any],
        body: bytes,
        meta: Metadata,
        properties: aiormq.spec.Basic.Properties,
        channel: aiormq.abc.AbstractChannel,
        tag: int,
        window: SettleWindow,
    ) -> None:
        super().__init__(body, meta)
        self.consumer = consumer
        self.properties = properties
        self.channel = channel  # the aiormq channel it arrived on: acks go back there
        self.tag = tag
        self.window = window

    @property
    def wants_reply(self) -> bool:
        return bool(self.properties.reply_to)

    @property
    def span_attributes(self) -> dict[str, object]:
        return {"messaging.rabbitmq.message.delivery_tag": self.tag}

    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        consumer = self.consumer
        expiration: float | None = None
        if delay > 0:
            if target == consumer.queue.name and not consumer.is_dead_letter_queue:
                # A delay queue dead-letters the copy back once its per-message TTL expires.
                target = f"{target}.retry.{meta.attempt - 1}"
                expiration = max(delay, 0.001)
            else:
                await asyncio.sleep(delay)  # no delay queue here: hold the delivery meanwhile
        # Confirmed before the original is settled.
        properties = _properties(meta, expiration=expiration)
        what = f"copy of message {meta.id} to {target!r}"
        link = consumer._link
        publish = functools.partial(
            link.publish,
            self.body,
            properties,
            target,
            timeout=_REPUBLISH_TIMEOUT,
            what=what,
            delivery=self.channel,
        )
        try:
            await publish()
        except PublishError as exc:
            if not isinstance(exc.__cause__, aiormq.exceptions.PublishError):
                raise
            # Unroutable: the retry or dead-letter queue was deleted under us. Declare the
            # topology again (idempotent, same arguments) and publish once more.
            logger.warning(
                "%s is gone; declaring it again",
                target,
                extra={"queue": consumer.queue.name, "message_id": meta.id},
            )
            await link.declare(consumer._topology())
            await publish()

    async def settle(self) -> None:
        self.window.settled(self.tag)  # acknowledged in a batch, see SettleWindow

    async def requeue(self) -> None:
        with contextlib.suppress(Exception):  # a closed channel requeues it anyway
            await self.channel.basic_nack(self.tag, requeue=True)
        # Nacked on its own first: a later multiple=True ack no longer covers it.
        self.window.settled(self.tag, alone=True)

    async def reply(self, body: bytes, content_type: str) -> None:
        properties = aiormq.spec.Basic.Properties(
            content_type=content_type,
            correlation_id=self.properties.correlation_id or self.meta.id,
            delivery_mode=_NOT_PERSISTENT,
            priority=0,
        )
        # Not mandatory: a requester that gave up is no reason to fail the delivery.
        await self.consumer._link.publish(
            body,
            properties,
            self.properties.reply_to or "",
            timeout=_REPUBLISH_TIMEOUT,
            what=f"reply to message {self.meta.id}",
            mandatory=False,
        )


class RabbitMQConsumer(_RabbitEndpoint, QueuedConsumer[T]):
    """Competing consumer on a RabbitMQ queue; acks after the handler returns.

    The delivery policy is the core's (see `streamtools._delivery`): retries go through
    `<queue>.retry.<n>` with exponential backoff (`retry_delay`, doubling up to
    `max_retry_delay`) up to `max_retries` times, then the message goes to `<queue>.dlq`
    with the error in headers; an invalid message goes there at once. `prefetch` bounds the
    unacked deliveries (and so the handlers running at once). After a lost connection the
    consumer re-subscribes by itself.

    Deliveries are taken straight from aiormq's frames (`basic_consume` on the channel under
    aio-pika's robust channel): no aio-pika message object per delivery, and acks go out in
    batches (see `SettleWindow`). aio-pika's robust connection and channel still do the
    reconnecting: when the channel is reopened (prefetch set and queue declared again by
    aio-pika), its reopen callback subscribes again; when the broker cancels the
    subscription (the queue was deleted), the topology is declared again and the consumer
    subscribes anew.
    """

    capabilities = Capabilities(
        queued=True, persistent=True, redelivery=True, dead_letter=True, request_reply=True
    )

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        url: str | Sequence[str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        prefetch: int = 64,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        max_message_size: int = 1024 * 1024,
        shutdown_timeout: float = 30.0,
        queue_type: QueueType = "quorum",
        failover: Failover | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            max_message_size=max_message_size,
            shutdown_timeout=shutdown_timeout,
        )
        self._settings = _settings(
            type(self).__name__, url, ssl, connect_timeout, queue_type, failover
        )
        self.prefetch = integer(type(self).__name__, "prefetch", prefetch, minimum=1)
        self._link = _Link(self._settings, f"consumer {self.queue.name}")
        # The robust channel the queue is consumed on, and the aiormq channel under it that
        # the subscription lives on now (a new one after every reopen).
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._consuming_on: aiormq.abc.AbstractChannel | None = None
        self._consumer_tag = f"streamtools.{os.getpid()}.{random.getrandbits(64):016x}"
        self._subscribe_lock = asyncio.Lock()
        self._subscribing: asyncio.Task[None] | None = None
        self._subscriptions_wanted = 0  # bumped by every reopen or broker cancel
        self._declare_again = False
        self._intake_started = False
        self._intake_stopped = False
        # The settle window of the channel deliveries arrive on now (a new one per channel).
        self._window_channel: aiormq.abc.AbstractChannel | None = None
        self._window: SettleWindow | None = None
        self._default_type = type_name(self.queue.message_type)

    def __repr__(self) -> str:
        return f"RabbitMQConsumer({self.queue.name!r}, url={self._settings.redacted!r})"

    @property
    def connected(self) -> bool:
        """True while the broker connection is up (it reconnects by itself when lost)."""
        connection = self._link.connection
        return super().connected and connection is not None and connection.connected.is_set()

    async def _open(self) -> None:
        link = self._link
        await link.open()
        try:
            topology = self._topology()
            await link.declare(topology)
            assert link.connection is not None
            with _map_errors(self._settings, f"opening consumer on {self.queue.name!r}"):
                async with asyncio.timeout(self._settings.connect_timeout):
                    channel = await link.connection.channel(publisher_confirms=False)
                    link.channels.append(channel)
                    self._channel = channel
                    # Kept by the robust channel: set again on every reopen.
                    await channel.set_qos(prefetch_count=self.prefetch)
                    # Declared on the robust channel so that a reopen declares the queue
                    # again before we subscribe (same arguments as above: no mismatch).
                    await channel.declare_queue(
                        self.queue.name, durable=True, arguments=dict(topology[0][1])
                    )
                    channel.reopen_callbacks.add(self._on_reopen)
        except BaseException:
            await link.close()
            raise

    async def _start(self) -> None:
        with _map_errors(self._settings, f"subscribing to {self.queue.name!r}"):
            async with asyncio.timeout(self._settings.connect_timeout):
                await self._subscribe()
        self._intake_started = True
        logger.debug("consuming", extra={"queue": self.queue.name, "prefetch": self.prefetch})

    async def _subscribe(self) -> None:
        """Consume the queue on the robust channel's current aiormq channel (idempotent)."""
        channel = self._channel
        assert channel is not None
        async with self._subscribe_lock:
            if self._intake_stopped:
                return
            underlay = await channel.get_underlay_channel()
            assert isinstance(underlay, aiormq.Channel)
            if underlay is self._consuming_on and self._consumer_tag in underlay.consumers:
                return
            underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
            if self._consumer_tag not in underlay.consumers:
                await underlay.basic_consume(
                    self.queue.name, self._on_delivery, consumer_tag=self._consumer_tag
                )
            self._consuming_on = underlay

    def _on_reopen(self, channel: object) -> None:
        # aio-pika reopened the robust channel (a reconnect, a channel error) and has set the
        # prefetch and declared the queue on it again: subscribe on the new aiormq channel.
        if self._intake_started:
            self._resubscribe()

    def _on_cancel(self, frame: pamqp.commands.Basic.Cancel) -> None:
        # The broker ended the subscription: the queue was deleted (or its node left).
        if frame.consumer_tag != self._consumer_tag or self._intake_stopped:
            return
        logger.warning(
            "RabbitMQ cancelled the subscription (queue deleted?); declaring it again",
            extra={"queue": self.queue.name, "transport": self.transport},
        )
        self._consuming_on = None
        self._resubscribe(declare=True)

    def _resubscribe(self, *, declare: bool = False) -> None:
        self._subscriptions_wanted += 1
        self._declare_again |= declare
        if self._subscribing is None or self._subscribing.done():
            self._subscribing = asyncio.get_running_loop().create_task(self._keep_subscribed())

    async def _keep_subscribed(self) -> None:
        """Subscribe again until it holds: a failed attempt is retried with backoff."""
        pause = 0.1
        while not self._intake_stopped:
            wanted = self._subscriptions_wanted
            try:
                async with asyncio.timeout(self._settings.connect_timeout):
                    if self._declare_again:
                        await self._link.declare(self._topology())
                        self._declare_again = False
                    await self._subscribe()
            except Exception as exc:
                logger.warning(
                    "subscribing again failed, retrying in %.1f s: %s",
                    pause,
                    _reason(exc),
                    extra={"queue": self.queue.name, "transport": self.transport},
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)
                continue
            if wanted == self._subscriptions_wanted:
                return  # no reopen or cancel came meanwhile

    async def _on_delivery(self, message: aiormq.abc.DeliveredMessage) -> None:
        if self._intake_stopped:
            return  # left unacked: the broker gives it to another consumer once we close
        channel = message.channel
        tag: int = message.delivery.delivery_tag  # type: ignore[union-attr,assignment]  # a Basic.Deliver here
        window = self._window
        if window is None or self._window_channel is not channel:
            window = self._new_window(channel)
        window.received(tag)
        properties = message.header.properties
        body = message.body
        meta = self._metadata(properties, body)
        self._accept(_Incoming(self, body, meta, properties, channel, tag, window))

    def _new_window(self, channel: aiormq.abc.AbstractChannel) -> SettleWindow:
        """The settle window of a new channel's deliveries (tags start again at 1)."""

        async def ack(position: int, multiple: bool) -> None:
            await channel.basic_ack(position, multiple=multiple)

        # Acks go out for every quarter of the prefetch, or 5 ms after the first completion
        # they cover: the broker gets its credit back long before the prefetch runs dry.
        quarter = max(1, self.prefetch // 4)
        window = self._window = SettleWindow(ack, spill=quarter, batch=quarter, linger=_ACK_LINGER)
        self._window_channel = channel
        return window

    def _topology(self) -> list[tuple[str, dict[str, object]]]:
        return _topology(self.queue.name, self._settings.queue_type, self.retry_stages)

    def _metadata(self, properties: aiormq.spec.Basic.Properties, body: bytes) -> Metadata:
        headers = properties.headers or {}
        time: str | None = None
        stamp = properties.timestamp
        if stamp is not None and CE.time not in headers:  # a foreign sender's message
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=UTC)
            time = stamp.isoformat().replace("+00:00", "Z")
        return CE.read(
            headers,
            default_type=self._default_type,
            ct=content_type(properties.content_type),
            # Without an id, the body's digest: the same on every redelivery, so that the
            # policy can count the message's failures.
            id=properties.message_id or hashlib.blake2b(body, digest_size=16).hexdigest(),
            type=properties.message_type,
            source=properties.app_id or "",
            time=time,
        )

    async def _stop_intake(self) -> None:
        self._intake_stopped = True
        subscribing = self._subscribing
        if subscribing is not None:
            subscribing.cancel()
        underlay = self._consuming_on
        if underlay is not None and not underlay.is_closed:
            # Cancelled on the broker: nothing more arrives; what did is handled or returned.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._settings.connect_timeout):
                    await underlay.basic_cancel(self._consumer_tag)

    async def _close(self) -> None:
        window = self._window
        if window is not None:
            # Ack what the handlers finished before the connection goes.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._settings.connect_timeout):
                    await window.close()
        # Closing the connection returns every unacked delivery to the queue.
        await self._link.close()
