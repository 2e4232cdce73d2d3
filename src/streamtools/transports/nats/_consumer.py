"""`NATSConsumer`: a member of the queue's durable pull consumer; acknowledges settled messages.

Every `NATSConsumer` of a queue binds to one durable pull consumer on the queue's stream
(named like the stream), so competing consumers share the work; acknowledgements are
explicit. A member fetches only as many messages as it has free handler slots, so it holds
at most `limits.max_in_flight`; the durable's `max_ack_pending` is 16 times that (room for
16 members at full load: the durable's bound is shared by all of them). The delivery
policy is the core's (retry with backoff, dead-letter to `<queue>.dlq` with the error
headers, the `.dlq` rule). A retry copy is published to the stream's tail once its backoff
delay has passed, the original held unacknowledged meanwhile; every held message (a running
handler's too) is kept from redelivery by an in-progress acknowledgement (`+WPI`) every
third of `ack_wait`, so a delay or a handler longer than `ack_wait` duplicates nothing.
`requeue` naks (redelivered at once); a message whose handler shutdown cancelled, and a
message fetched while the consumer was stopping, is nak'ed as the consumer closes, so
another member gets it without waiting for `ack_wait`. A consumer that dies without
closing leaves its messages to be redelivered after `ack_wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as _ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from streamtools._base import Capabilities
from streamtools._codec import Metadata, type_name
from streamtools._delivery import DeliveryLost, Incoming, QueuedConsumer
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy, seconds
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError, StreamtoolsError
from streamtools.transports.nats._endpoint import NATSEndpoint
from streamtools.transports.nats._errors import translate
from streamtools.transports.nats._streams import ensure_streams, stream_name
from streamtools.transports.nats._wire import (
    REPLY_ERROR,
    REPLY_TO,
    copy_headers,
    message_metadata,
    without_reply,
)

logger = logging.getLogger("streamtools.nats")

_FETCH_WAIT: Final = 1.0  # seconds a fetch waits for messages; also how fast a stop is seen
_COPY_TIMEOUT: Final = 30.0
_SETTLE_TIMEOUT: Final = 5.0
_RESUBSCRIBE_AFTER: Final = 3
_CHECK_WHEN_IDLE: Final = 10  # empty fetches (~10 s) between checks that the durable exists
# The durable's max_ack_pending is max_in_flight times this: each member bounds its own
# handlers to max_in_flight (it fetches for free slots only); a durable limit of just
# max_in_flight, shared by competing members, starves their fetches (measured: 5 members,
# 5,000 messages, over 30 s instead of 2 s).
_MEMBERS: Final = 16  # failed fetches in a row before declaring everything again


class _Incoming(Incoming):
    """One JetStream message and the policy's hooks on it."""

    __slots__ = ("consumer", "msg", "sequence")

    def __init__(self, consumer: NATSConsumer[Any], msg: Msg, meta: Metadata) -> None:
        super().__init__(msg.data or b"", meta)
        self.consumer = consumer
        self.msg = msg

    @property
    def wants_reply(self) -> bool:
        return REPLY_TO in self.meta.headers

    @property
    def span_attributes(self) -> dict[str, object]:
        return {"messaging.consumer.group.name": self.consumer.durable}

    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        if delay > 0:
            # JetStream has no delayed delivery: hold the message (the consumer's in-progress
            # heartbeat keeps it from being redelivered meanwhile).
            await asyncio.sleep(delay)
        client = self.consumer._client
        if client.js is None:
            raise DeliveryLost  # closed meanwhile: the server redelivers the original
        if target != self.consumer.queue.name:
            meta = without_reply(meta)  # a dead-letter copy answers nobody
        await client.publish(
            target,
            self.body,
            copy_headers(meta, target),
            timeout=_COPY_TIMEOUT,
            what=f"copy of message {meta.id} to stream {target!r}",
        )

    async def _finish(self, action: Callable[[], Awaitable[None]]) -> None:
        self.consumer._held.discard(self)
        async with asyncio.timeout(_SETTLE_TIMEOUT):
            await action()

    async def settle(self) -> None:
        await self._finish(self.msg.ack)

    async def requeue(self) -> None:
        await self._finish(self.msg.nak)

    # abandon(): the message stays held; `_close` naks what is still held.

    async def reply(self, body: bytes, content_type: str) -> None:
        nc = self.consumer._client.nc
        if nc is None:
            raise StreamtoolsError("the consumer is closed; reply not sent")
        try:
            await nc.publish(
                self.meta.headers[REPLY_TO], body, headers={"Content-Type": content_type}
            )
        except nats.errors.Error as exc:
            raise StreamtoolsError(f"reply not sent: {exc}") from exc

    def dead_lettered(self, error: StreamtoolsError) -> None:
        nc = self.consumer._client.nc
        subject = self.meta.headers.get(REPLY_TO)
        if nc is None or subject is None:
            return
        task = asyncio.get_running_loop().create_task(
            nc.publish(subject, b"", headers={REPLY_ERROR: str(error)})
        )
        self.consumer._background.add(task)
        task.add_done_callback(self.consumer._background.discard)


class NATSConsumer(NATSEndpoint, QueuedConsumer[T]):
    """A member of the queue's durable pull consumer; acknowledges settled messages only.

    Connection settings as on `NATSProducer`; `retry=` (a RetryPolicy), `limits=` (Limits:
    `max_in_flight` handlers and unacknowledged messages at once),
    `shutdown_timeout=`, `ack_wait=` (seconds before the server redelivers a message that
    is neither acknowledged nor reported in progress: after a crash, a member's messages
    go to the others after it), `replicas=` for the streams it creates.
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
        servers: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        ack_wait: float = 30.0,
        replicas: int = 1,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            retry=retry,
            limits=limits,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
        )
        self._connect(
            f"consumer {self.queue.name}",
            self.queue.name,
            servers=servers,
            user=user,
            password=password,
            token=token,
            creds=creds,
            ssl=ssl,
            connect_timeout=connect_timeout,
            replicas=replicas,
        )
        owner = type(self).__name__
        self.ack_wait = seconds(owner, "ack_wait", ack_wait, positive=True)
        if self.ack_wait < 1.0:
            raise ConfigurationError(f"{owner}: ack_wait must be at least 1 second")
        self.stream = stream_name(self.queue.name)
        self.durable = self.stream
        self._held: set[_Incoming] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._stopping = False
        self._fetching = False  # a fetch is out: its messages are on their way to us
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeat = self.ack_wait / 3
        self._default_type = type_name(self.queue.message_type)

    def __repr__(self) -> str:
        return (
            f"NATSConsumer({self.queue.name!r}, durable={self.durable!r}, {self._settings.where})"
        )

    @property
    def connected(self) -> bool:
        """True while the connection to the server is up."""
        return super().connected and self._client.connected

    async def _open(self) -> None:
        await self._client.connect(self.connect_timeout)
        try:
            await self._declare()
        except BaseException:
            await self._client.close()
            raise

    async def _declare(self) -> None:
        """The streams, the durable consumer, and a pull subscription bound to it."""
        _, js = self._client.require()
        name = self.queue.name
        await ensure_streams(js, self._settings, (name, self.dead_letter_queue), self.replicas)
        config = ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_ack_pending=self.max_in_flight * _MEMBERS,
            max_deliver=-1,  # the retry policy is streamtools', not the server's
            filter_subject=name,
        )
        what = f"consumer {name}: declaring durable consumer {self.durable!r}"
        try:
            try:
                info = await js.consumer_info(self.stream, self.durable)
            except nats.js.errors.NotFoundError:
                try:
                    info = await js.add_consumer(self.stream, config)
                except nats.js.errors.BadRequestError:  # created meanwhile by another member
                    info = await js.consumer_info(self.stream, self.durable)
            # A durable created by another member with a shorter ack_wait: beat faster.
            ack_wait = info.config.ack_wait or self.ack_wait
            self._heartbeat = min(self.ack_wait, ack_wait) / 3
            self._subscription = await js.pull_subscribe_bind(
                consumer=self.durable, stream=self.stream
            )
        except StreamtoolsError:
            raise
        except Exception as exc:
            raise translate(exc, self._settings, what, self._client.last_error) from exc

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop_task = loop.create_task(self._consume())
        self._heartbeat_task = loop.create_task(self._beat())
        logger.debug("consuming", extra={"queue": self.queue.name, "durable": self.durable})

    async def _beat(self) -> None:
        """Report every held message in progress, so none is redelivered while held."""
        while True:
            await asyncio.sleep(self._heartbeat)
            for incoming in list(self._held):
                with contextlib.suppress(Exception):
                    await incoming.msg.in_progress()

    async def _fetch(self, count: int) -> list[Msg]:
        subscription = self._subscription
        assert subscription is not None
        try:
            return await subscription.fetch(count, timeout=_FETCH_WAIT)
        except (nats.errors.TimeoutError, TimeoutError):  # nothing came (FetchTimeoutError too)
            return []

    async def _consume(self) -> None:
        slots = self._slots
        failures = idle = 0
        while not self._stopping:
            # As many messages as there are free handler slots (at least one).
            await slots.acquire()
            count = 1
            while count < self.max_in_flight and not slots.locked():
                await slots.acquire()
                count += 1
            msgs: list[Msg] = []
            try:
                self._fetching = True
                try:
                    msgs = await self._fetch(count)
                finally:
                    self._fetching = False
                failures = 0
            except asyncio.CancelledError:
                for _ in range(count):
                    slots.release()
                raise
            except Exception as exc:
                failures += 1
                logger.warning(
                    "fetch failed, fetching again: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"queue": self.queue.name},
                )
                await asyncio.sleep(0.5)
                if failures >= _RESUBSCRIBE_AFTER and self._client.connected:
                    # The durable or the stream may be gone (a server that lost its store):
                    # declare them again and bind anew.
                    await self._redeclare()
            if msgs:
                idle = 0
            else:
                idle += 1
                if idle >= _CHECK_WHEN_IDLE:
                    # A deleted durable makes fetches time out as if the queue were empty:
                    # when idle, look now and then whether it is still there.
                    idle = 0
                    await self._check_durable()
            for _ in range(count - len(msgs)):
                slots.release()
            for msg in msgs:
                if self._intake_stopped():
                    # Fetched as we stop: straight back for another member.
                    slots.release()
                    with contextlib.suppress(Exception):
                        await msg.nak()
                    continue
                self._take(msg)

    async def _redeclare(self) -> None:
        old = self._subscription
        try:
            await self._declare()
        except Exception as exc:
            logger.warning(
                "declaring the durable again failed: %s", exc, extra={"queue": self.queue.name}
            )
            return
        if old is not None:
            with contextlib.suppress(Exception):
                await old.unsubscribe()

    async def _check_durable(self) -> None:
        js = self._client.js
        if js is None or not self._client.connected:
            return
        try:
            await js.consumer_info(self.stream, self.durable)
        except nats.js.errors.NotFoundError:
            logger.warning(
                "durable consumer %r is gone from stream %r; declaring it again",
                self.durable,
                self.stream,
                extra={"queue": self.queue.name},
            )
            await self._redeclare()
        except Exception:
            return  # unreachable or busy now: the next check looks again

    def _intake_stopped(self) -> bool:
        return self._stopping  # read anew (it changes while a fetch waits)

    def _take(self, msg: Msg) -> None:
        meta = message_metadata(msg, self.stream, self._default_type)
        incoming = _Incoming(self, msg, meta)
        self._held.add(incoming)
        self._accept(incoming)

    def _delivery_done(self) -> None:
        self._slots.release()
        super()._delivery_done()

    async def _stop_intake(self) -> None:
        self._stopping = True
        task = self._loop_task
        if task is not None:
            if self._fetching:
                # The fetch out ends within _FETCH_WAIT: its messages go back at once.
                await asyncio.wait([task], timeout=_FETCH_WAIT + self.connect_timeout)
            task.cancel()  # waiting for a free slot (or stuck): nothing fetched to lose
            await asyncio.gather(task, return_exceptions=True)

    async def _close(self) -> None:
        # Messages still held (handlers cancelled at shutdown) go back for another member now.
        held, self._held = list(self._held), set()
        for incoming in held:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_SETTLE_TIMEOUT):
                    await incoming.msg.nak()
        tasks = [*self._background]
        if self._heartbeat_task is not None:
            tasks.append(self._heartbeat_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await self._client.close()
