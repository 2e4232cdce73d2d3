"""The in-process memory transport: a broker with the semantics of the queued transports.

Competing consumers per queue, ack after the handler returns, a handler exception retried
with backoff up to `max_retries` and then dead-lettered to `<queue>.dlq`, invalid messages
dead-lettered at once, bounded queues (`send` waits while one is full), at most
`max_in_flight` handlers per consumer, and a graceful `close()`. Nothing survives the
process: use it for examples, tests and single-process services.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from msgspec.structs import replace as replace_meta

from streamtools._base import Capabilities, Consumer, Producer, Route, backoff_delay, encode_reply
from streamtools._codec import Metadata
from streamtools._types import Queue, T
from streamtools.errors import (
    CodecError,
    ConfigurationError,
    HandlerError,
    PublishError,
    ReplyTimeoutError,
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
    headers: dict[str, str] = field(default_factory=dict)


class MemoryBroker:
    """Named bounded queues living in one event loop.

    `memory_broker()` returns the one shared by every memory producer and consumer of the
    running loop; pass `broker=` to isolate a group of them.
    """

    def __init__(self, *, max_queue_size: int = 10_000) -> None:
        if max_queue_size < 1:
            raise ConfigurationError(f"max_queue_size must be >= 1, got {max_queue_size}")
        self.max_queue_size = max_queue_size
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

        task = asyncio.get_running_loop().create_task(put_after_delay())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _dead_letter(
        self, name: str, delivery: _Delivery, error: BaseException, reason: str
    ) -> None:
        cause = error.__cause__ if isinstance(error, HandlerError) and error.__cause__ else error
        headers = {
            "x-death-reason": reason,
            "x-error-type": type(cause).__name__,
            "x-error-message": str(cause)[:1000],
            "x-attempts": str(delivery.meta.attempt),
            "x-original-queue": name,
        }
        dead = _Delivery(delivery.body, replace_meta(delivery.meta, headers=headers))
        self._queue(f"{name}.dlq").put_nowait(dead)
        if delivery.reply is not None and not delivery.reply.done():
            delivery.reply.set_exception(
                PublishError(f"message {delivery.meta.id} was dead-lettered ({reason}): {cause}")
            )


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

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        broker: MemoryBroker | None = None,
    ) -> None:
        super().__init__(queue, message_type=message_type, source=source, validate=validate)
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


class MemoryConsumer(Consumer[T]):
    """Competing consumer on a queue of the in-process broker."""

    transport = "MemoryHandler"
    capabilities = Capabilities(
        queued=True, persistent=False, redelivery=True, dead_letter=True, request_reply=True
    )

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        max_in_flight: int = 16,
        max_retries: int = 3,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        shutdown_timeout: float = 30.0,
        broker: MemoryBroker | None = None,
    ) -> None:
        super().__init__(queue, message_type=message_type, shutdown_timeout=shutdown_timeout)
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries}")
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self._broker = broker
        self._slots = asyncio.Semaphore(max_in_flight)
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _open(self) -> None:
        if self._broker is None:
            self._broker = memory_broker()

    async def _start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._consume())

    async def _consume(self) -> None:
        assert self._broker is not None
        queue = self._broker._queue(self.queue.name)
        route = self.routes[0]
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                delivery = await queue.get()
            except BaseException:
                self._slots.release()
                raise
            self._delivery_started()
            task = loop.create_task(self._deliver(route, delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, route: Route[T], delivery: _Delivery) -> None:
        assert self._broker is not None
        name = self.queue.name
        try:
            reply = await self._process(route, delivery.body, delivery.meta)
        except CodecError as exc:
            logger.warning(
                "invalid message dead-lettered: %s",
                exc,
                extra={"queue": name, "message_id": delivery.meta.id},
            )
            self._broker._dead_letter(name, delivery, exc, "invalid")
        except HandlerError as exc:
            attempt = delivery.meta.attempt
            if attempt > self.max_retries:
                logger.error(
                    "message dead-lettered after %d attempts: %s",
                    attempt,
                    exc.__cause__,
                    extra={"queue": name, "message_id": delivery.meta.id},
                )
                self._broker._dead_letter(name, delivery, exc, "max-retries")
            else:
                delay = backoff_delay(attempt, self.retry_delay, self.max_retry_delay)
                logger.info(
                    "handler failed, retry %d in %.2f s: %s",
                    attempt,
                    delay,
                    exc.__cause__,
                    extra={"queue": name, "message_id": delivery.meta.id},
                )
                retry = replace(delivery, meta=replace_meta(delivery.meta, attempt=attempt + 1))
                self._broker._put_later(name, retry, delay)
        except asyncio.CancelledError:
            # Shutdown timed out mid-handler: not acked, so the message goes back.
            self._broker._put_later(name, delivery, 0)
            raise
        except Exception:
            # A bug of ours must not lose the message: log it and put the message back.
            logger.exception(
                "delivery failed", extra={"queue": name, "message_id": delivery.meta.id}
            )
            self._broker._put_later(name, delivery, self.retry_delay)
        else:
            if delivery.reply is not None and not delivery.reply.done():
                content_type = delivery.meta.content_type
                delivery.reply.set_result((encode_reply(reply, content_type), content_type))
        finally:
            self._slots.release()
            self._delivery_done()

    async def _stop_intake(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _abort_inflight(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close(self) -> None:
        pass
