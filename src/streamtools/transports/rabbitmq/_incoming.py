"""One RabbitMQ delivery and the delivery policy's hooks on it: retry and dead-letter copies
(confirmed before the original is acked), settle, requeue and reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from typing import TYPE_CHECKING, Any, Final

import aiormq
import aiormq.abc
import aiormq.exceptions

from streamtools._codec import Metadata
from streamtools._delivery import Incoming
from streamtools._window import SettleWindow
from streamtools.errors import PublishError
from streamtools.transports.rabbitmq._wire import _NOT_PERSISTENT, _properties

if TYPE_CHECKING:
    from streamtools.transports.rabbitmq._consumer import RabbitMQConsumer

logger = logging.getLogger("streamtools.rabbitmq")

_REPUBLISH_TIMEOUT: Final = 30.0


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
        self.settle_now()

    def settle_now(self) -> bool:
        self.window.settled(self.tag)  # acknowledged in a batch, see SettleWindow
        return True

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
