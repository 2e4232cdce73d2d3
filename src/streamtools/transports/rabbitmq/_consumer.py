"""The RabbitMQ consumer: a subscription taken straight from aiormq's frames on aio-pika's
robust channel, acked in batches, subscribed again after a reopen or a broker cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import random
import ssl as _ssl
from collections.abc import Sequence
from datetime import UTC
from typing import Final

import aio_pika.abc
import aiormq
import aiormq.abc
import pamqp.commands

from streamtools._base import Capabilities
from streamtools._binding import CE, content_type
from streamtools._codec import Metadata, type_name
from streamtools._delivery import QueuedConsumer
from streamtools._foreign.aiormq import is_consuming, on_consumer_cancel
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy
from streamtools._types import Queue, T
from streamtools._window import SettleWindow
from streamtools.transports.rabbitmq._errors import _map_errors, _reason
from streamtools.transports.rabbitmq._incoming import _Incoming
from streamtools.transports.rabbitmq._link import _Link, _RabbitEndpoint
from streamtools.transports.rabbitmq._settings import Failover, QueueType, _settings
from streamtools.transports.rabbitmq._topology import _topology

logger = logging.getLogger("streamtools.rabbitmq")

_ACK_LINGER: Final = 0.005  # seconds an ack may wait for more completions to cover


class RabbitMQConsumer(_RabbitEndpoint, QueuedConsumer[T]):
    """Competing consumer on a RabbitMQ queue; acks after the handler returns.

    The delivery policy is the core's (see `streamtools._delivery`): retries go through
    `<queue>.retry.<n>` with exponential backoff as `retry=` (a RetryPolicy) says, then the
    message goes to `<queue>.dlq` with the error in headers; an invalid message goes there at
    once. `limits=Limits(max_in_flight=...)` is the prefetch: it bounds the unacked
    deliveries (and so the handlers running at once). After a lost connection the
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
        queued=True,
        persistent=True,
        redelivery=True,
        dead_letter=True,
        request_reply=True,
        ordered=True,
    )

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        url: str | Sequence[str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        queue_type: QueueType = "quorum",
        failover: Failover | None = None,
        # deprecated, for one release: retry=RetryPolicy(...), limits=Limits(...)
        prefetch: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        max_retry_delay: float | None = None,
        max_message_size: int | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            retry=retry,
            limits=limits,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
            prefetch=prefetch,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            max_message_size=max_message_size,
        )
        self._settings = _settings(
            type(self).__name__, url, ssl, connect_timeout, queue_type, failover
        )
        self.prefetch = self.max_in_flight  # AMQP's name: the unacked deliveries at once
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
            if underlay is self._consuming_on and is_consuming(underlay, self._consumer_tag):
                return
            on_consumer_cancel(underlay, self._on_cancel)
            if not is_consuming(underlay, self._consumer_tag):
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
            extra={"queue": self.queue.name, "transport": self.messaging_system},
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
                    extra={"queue": self.queue.name, "transport": self.messaging_system},
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
