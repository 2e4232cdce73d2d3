"""The link of one RabbitMQ producer or consumer: a confirm channel on the shared connection
and the publish-until-confirmed loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Final

import aio_pika.abc
import aiormq
import aiormq.abc
import aiormq.exceptions

from streamtools._binding import content_type
from streamtools._deadlines import Deadlines
from streamtools._delivery import DeliveryLost
from streamtools._foreign.aio_pika import amqp_connection
from streamtools.errors import ConnectError, PublishError
from streamtools.transports.rabbitmq._connection import _connections, _FailoverConnection, _NoNode
from streamtools.transports.rabbitmq._errors import _map_errors, _reason, _transient, _translate
from streamtools.transports.rabbitmq._settings import _Settings, redact

logger = logging.getLogger("streamtools.rabbitmq")

REPLY_TO: Final = "amq.rabbitmq.reply-to"


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
        amqp = amqp_connection(self.connection)
        if amqp is None:
            raise ConnectError(f"{self.role}: not connected to {self.settings.address}")
        with _map_errors(self.settings, f"declaring queues for {topology[0][0]!r}"):
            async with asyncio.timeout(self.settings.connect_timeout):
                channel = await amqp.channel(publisher_confirms=False)
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
