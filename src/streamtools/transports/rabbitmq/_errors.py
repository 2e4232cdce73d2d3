"""The one place aio-pika / aiormq errors become streamtools errors, and the broker's own
reason when it refuses an AMQP handshake without aiormq saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from collections.abc import Iterator
from typing import Final

import aiormq.exceptions
import pamqp.commands
import pamqp.exceptions
import pamqp.frame
import pamqp.header
from yarl import URL

from streamtools._foreign.aiormq import closed_during_handshake, refused_connection_open, reply_text
from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    PublishError,
    StreamtoolsError,
)
from streamtools.transports.rabbitmq._settings import _Settings, redact


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
    return closed_during_handshake(exc)


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
    text = reply_text(exc)
    return text if text is not None else _reason(exc)


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


# What a failed connection attempt raises (aio-pika's CONNECTION_EXCEPTIONS, TimeoutError too).
_CONNECT_FAILURES: Final = (
    aiormq.exceptions.AMQPError,
    OSError,
    RuntimeError,
    StopAsyncIteration,
    pamqp.exceptions.PAMQPException,
)


async def _explained(exc: BaseException, url: URL, settings: _Settings) -> BaseException:
    """`exc`, or the broker's own reason when it closed the handshake without aiormq saying why."""
    if refused_connection_open(exc):
        refused = await _refusal(url, settings.ssl, settings.connect_timeout)
        if refused is not None:
            refused.__cause__ = exc
            return refused
    return exc
