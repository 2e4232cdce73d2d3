"""The in-process memory transport: a broker with the semantics of the queued transports.

Competing consumers per queue, ack after the handler returns, a handler exception retried
with backoff as `retry=` says and then dead-lettered to `<queue>.dlq`, invalid messages
dead-lettered at once, bounded queues (`send` waits while one is full), at most
`max_in_flight` handlers per consumer, and a graceful `close()`. Nothing survives the
process: use it for examples, tests and single-process services.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamtools._base import Capabilities, Producer
from streamtools._codec import Metadata
from streamtools._delivery import Incoming, QueuedConsumer
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy, integer
from streamtools._types import Queue, T
from streamtools.errors import (
    ConfigurationError,
    ReplyTimeoutError,
    StreamtoolsError,
)

__all__ = ["MemoryBroker", "MemoryConsumer", "MemoryProducer", "memory_broker"]

logger = logging.getLogger("streamtools.memory")

_brokers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MemoryBroker] = (
    weakref.WeakKeyDictionary()
)


@dataclass(slots=True)
class _Delivery:
    body: bytes
    meta: Metadata
    reply: asyncio.Future[tuple[bytes, str]] | None = None


class MemoryBroker:
    """Named bounded queues living in one event loop.

    `memory_broker()` returns the one shared by every memory producer and consumer of the
    running loop; pass `broker=` to isolate a group of them.
    """

    def __init__(self, *, max_queue_size: int = 10_000) -> None:
        self.max_queue_size = integer("MemoryBroker", "max_queue_size", max_queue_size, minimum=1)
        self._queues: dict[str, asyncio.Queue[_Delivery]] = {}
        self._timers: set[asyncio.Task[None]] = set()

    def _queue(self, name: str) -> asyncio.Queue[_Delivery]:
        q = self._queues.get(name)
        if q is None:
            # Dead-letter queues are unbounded: dead-lettering must never wait or fail.
            size = 0 if name.endswith(".dlq") else self.max_queue_size
            q = self._queues[name] = asyncio.Queue(size)
        return q

    def depth(self, name: str) -> int:
        """How many messages wait in queue `name` (ready, not in flight)."""
        q = self._queues.get(name)
        return q.qsize() if q is not None else 0

    async def _put(self, name: str, delivery: _Delivery) -> None:
        await self._queue(name).put(delivery)

    def _put_later(self, name: str, delivery: _Delivery, delay: float) -> None:
        async def put_after_delay() -> None:
            await asyncio.sleep(delay)
            await self._put(name, delivery)

        if delay <= 0 and name.endswith(".dlq"):
            self._queue(name).put_nowait(delivery)  # unbounded: never waits
            return

        task = asyncio.get_running_loop().create_task(put_after_delay())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)


def memory_broker() -> MemoryBroker:
    """The broker shared by the memory producers and consumers of the running event loop."""
    loop = asyncio.get_running_loop()
    broker = _brokers.get(loop)
    if broker is None:
        broker = _brokers[loop] = MemoryBroker()
    return broker


class MemoryProducer(Producer[T]):
    """Sends to a queue of the in-process broker; `send` waits while the queue is full."""

    transport = "MemoryHandler"
    messaging_system = "streamtools.memory"

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        broker: MemoryBroker | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            source=source,
            validate=validate,
            middlewares=middlewares,
        )
        self._broker = broker

    async def _open(self) -> None:
        if self._broker is None:
            self._broker = memory_broker()

    async def _close(self) -> None:
        pass

    def _check_options(self, options: Mapping[str, object]) -> MemoryBroker:
        if options:
            raise ConfigurationError(
                f"MemoryProducer.send takes no options, got {', '.join(sorted(options))}"
            )
        assert self._broker is not None  # set by _open
        return self._broker

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        broker = self._check_options(options)
        await broker._put(self.queue.name, _Delivery(body, meta))

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        broker = self._check_options(options)
        reply: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await broker._put(self.queue.name, _Delivery(body, meta, reply))
                return await reply
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply to message {meta.id} on {self.queue.name!r} within {timeout} s; "
                "is a consumer running?"
            ) from None


class _MemoryIncoming(Incoming):
    """A delivery from the in-process broker: the policy's hooks on one `_Delivery`."""

    __slots__ = ("broker", "delivery", "queue")

    def __init__(self, broker: MemoryBroker, queue: str, delivery: _Delivery) -> None:
        super().__init__(delivery.body, delivery.meta)
        self.broker = broker
        self.queue = queue
        self.delivery = delivery

    @property
    def wants_reply(self) -> bool:
        return self.delivery.reply is not None

    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        # A retry on its own queue keeps the requester waiting for its reply.
        reply = self.delivery.reply if target == self.queue else None
        self.broker._put_later(target, _Delivery(self.body, meta, reply), delay)

    async def settle(self) -> None:
        pass  # taken off the queue when received: nothing left to do

    def settle_now(self) -> bool:
        return True

    async def requeue(self) -> None:
        self.broker._put_later(self.queue, self.delivery, 0)

    def abandon(self) -> None:
        self.broker._put_later(self.queue, self.delivery, 0)

    async def reply(self, body: bytes, content_type: str) -> None:
        future = self.delivery.reply
        if future is not None and not future.done():
            future.set_result((body, content_type))

    def dead_lettered(self, error: StreamtoolsError) -> None:
        future = self.delivery.reply
        if future is not None and not future.done():
            future.set_exception(error)


class MemoryConsumer(QueuedConsumer[T]):
    """Competing consumer on a queue of the in-process broker."""

    transport = "MemoryHandler"
    messaging_system = "streamtools.memory"
    capabilities = Capabilities(
        queued=True,
        persistent=False,
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
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        broker: MemoryBroker | None = None,
        # deprecated, for one release: retry=RetryPolicy(...), limits=Limits(...)
        max_in_flight: int | None = None,
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
            max_in_flight=max_in_flight,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            max_message_size=max_message_size,
        )
        self._broker = broker
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._loop_task: asyncio.Task[None] | None = None

    async def _open(self) -> None:
        if self._broker is None:
            self._broker = memory_broker()

    async def _start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        broker = self._broker
        assert broker is not None
        name = self.queue.name
        queue = broker._queue(name)
        slots = self._slots
        while True:
            await slots.acquire()
            try:
                delivery = await queue.get()
            except BaseException:
                slots.release()
                raise
            self._accept(_MemoryIncoming(broker, name, delivery))

    def _delivery_done(self) -> None:
        self._slots.release()
        super()._delivery_done()

    async def _stop_intake(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _close(self) -> None:
        pass
