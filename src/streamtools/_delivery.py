"""The delivery policy of queued transports: what happens to a received message, once.

A transport hands each received message to `QueuedConsumer._accept` as an `Incoming`,
whose few hooks are all the transport implements: publish a copy to a queue (after a delay),
settle, requeue, reply. Everything else is decided here, the same for every transport:

- the body is decoded into the queue's type and the handler runs (`Consumer._process`);
- handler returned: the reply is sent (request/reply), then the message is settled;
- handler raised: a copy with the attempt counted up goes back to the queue after a backoff
  delay with full jitter (`RetryPolicy.delay` doubling up to `max_delay`), until
  `RetryPolicy.attempts` retries are spent; then the message is dead-lettered (`max-retries`);
- the body does not decode or breaks the schema: dead-lettered at once (`invalid`);
- dead-lettering publishes a copy to `<queue>.dlq` with the headers `x-death-reason`,
  `x-error-type`, `x-error-message`, `x-attempts` and `x-original-queue`, its attempt reset
  to 1 (it counts deliveries from the DLQ);
- on a consumer of a `.dlq` nothing is dead-lettered further and nothing retried through
  retry queues: a message its handler fails on (or cannot decode) goes back to the tail of
  the same DLQ after the backoff delay, its dead-letter headers unchanged (they say why it
  came there) and its attempt counted up;
- a copy is confirmed before the original is settled, so a crash in between duplicates and
  never loses; when the delivery itself is gone (its channel closed) the policy stops, as
  the broker redelivers it anyway;
- a failure of streamtools itself (a bug, a broker refusing the copy): the message is
  requeued after `retry_delay`, never dropped, and after 3 such failures dead-lettered with
  reason `internal`, never redelivered without end;
- a body over `max_message_size` is dead-lettered (`invalid`) without being decoded, and a
  foreign attempt header past `max_retries + 1` is clamped to it;
- shutdown: in-flight deliveries are tracked; when `shutdown_timeout` passes they are
  cancelled and left unsettled (`Incoming.abandon`), so the broker redelivers them.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import contextvars
import logging
import random
from collections.abc import Coroutine, Generator, Hashable, Mapping, Sequence
from typing import Any, ClassVar, Final

import msgspec

from streamtools import _telemetry
from streamtools._base import Consumer, Route, encode_reply
from streamtools._batching import Batch, Batcher
from streamtools._binding import carried
from streamtools._codec import Metadata
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy, policy
from streamtools._types import Queue, T
from streamtools.errors import (
    CodecError,
    ConfigurationError,
    DecodeError,
    HandlerError,
    PublishError,
    StreamtoolsError,
    UnsupportedError,
)

__all__ = [
    "DEAD_LETTER_SUFFIX",
    "DeliveryLost",
    "InFlight",
    "Incoming",
    "QueuedConsumer",
    "backoff_delay",
    "dead_letter_queue",
]

logger = logging.getLogger("streamtools.delivery")
logger.addHandler(logging.NullHandler())

DEAD_LETTER_SUFFIX: Final = ".dlq"
_MAX_ERROR_MESSAGE: Final = 1000
_MAX_INTERNAL_FAILURES: Final = 3
_REMEMBERED_FAILURES: Final = 10_000


def backoff_delay(attempt: int, initial: float, maximum: float) -> float:
    """Exponential backoff with full jitter for retry number `attempt` (1-based).

    The ceiling doubles from `initial` and never passes `maximum`; the delay is drawn from
    the upper half of it, so retries of many messages spread out but never come early.
    """
    ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 64))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def dead_letter_queue(name: str) -> str:
    """Where `name`'s poison and invalid messages go: `<name>.dlq` (a DLQ keeps its own)."""
    return name if name.endswith(DEAD_LETTER_SUFFIX) else f"{name}{DEAD_LETTER_SUFFIX}"


class DeliveryLost(Exception):
    """The delivery being settled is gone (its channel closed): the broker redelivers it."""


class Incoming(abc.ABC):
    """One received message, as a transport hands it to the delivery policy.

    `body` and `meta` are what arrived (`meta` read with the transport's header binding).
    The hooks act on this delivery; each returns once the broker has done it.
    """

    __slots__ = ("body", "meta")

    def __init__(self, body: bytes, meta: Metadata) -> None:
        self.body = body
        self.meta = meta

    @property
    def wants_reply(self) -> bool:
        """Whether the sender waits for the handler's reply (request/reply)."""
        return False

    @property
    def span_attributes(self) -> Mapping[str, object] | None:
        """The transport's own trace attributes of this delivery (partition, offset, tag)."""
        return None

    @abc.abstractmethod
    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        """Publish this body with `meta` to queue `target`, visible after `delay` seconds.

        Raise DeliveryLost when this delivery is gone meanwhile (a copy would duplicate it).
        """

    @abc.abstractmethod
    async def settle(self) -> None:
        """The message is done: acknowledge it."""

    def settle_now(self) -> bool:
        """Settle at once if the transport can without waiting (a mark in its settle
        window) and return True; False (the default) when `settle` must be awaited."""
        return False

    @abc.abstractmethod
    async def requeue(self) -> None:
        """Give the message back to its queue unchanged, for another delivery."""

    def abandon(self) -> None:
        """Shutdown cancelled the handler: leave the message for redelivery (the default:
        unsettled deliveries go back when the transport closes)."""
        return

    async def reply(self, body: bytes, content_type: str) -> None:
        """Send the handler's encoded reply to the requester."""
        raise UnsupportedError("this transport has no replies")

    def dead_lettered(self, error: StreamtoolsError) -> None:
        """The message was dead-lettered; a transport may tell a waiting requester."""
        return


class InFlight:
    """A count of accepted messages not yet done (Kafka: one partition's), to wait for."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Future[None] | None = None

    def done(self) -> None:
        self.count -= 1
        idle = self._idle
        if not self.count and idle is not None and not idle.done():
            idle.set_result(None)

    def idle(self) -> asyncio.Future[None]:
        """A future done once the count is zero (at once if it is)."""
        idle = self._idle
        if idle is None or idle.done():
            idle = self._idle = asyncio.get_running_loop().create_future()
        if not self.count:
            idle.set_result(None)
        return idle


class _Isolated:
    """Await a coroutine in a copy of the current context, as a task of its own would run
    it: a context variable its handler sets stays with its message. Every step runs in
    that copy; what it waits on, and a cancellation, pass through."""

    __slots__ = ("coro",)

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro

    def __await__(self) -> Generator[Any, Any, None]:
        run = contextvars.copy_context().run
        coro = self.coro
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                waited = run(coro.send, value) if error is None else run(coro.throw, error)
            except StopIteration:
                return
            try:
                value, error = (yield waited), None
            except BaseException as exc:  # a cancellation (or close): into the coroutine
                value, error = None, exc


_Queued = tuple[Incoming, Hashable, InFlight | None]


class QueuedConsumer(Consumer[T]):
    """The base of queued transports (memory, RabbitMQ, Kafka): the policy above, once.

    A subclass receives messages and calls `_accept(incoming)` for each; it declares the
    queues `retry_stages` says it needs (0 on a DLQ consumer) and implements the hooks.
    Handlers may take batches (`@consumer(batch=Batch(...))`, see `_batching`).
    """

    route_options: ClassVar[frozenset[str]] = frozenset({"batch"})

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        **deprecated: object,
    ) -> None:
        """`deprecated`: the subclass's old keywords (`max_retries=`, `prefetch=`, ...), None
        where not given; each given one is taken with a DeprecationWarning (`policy`)."""
        super().__init__(
            queue,
            message_type=message_type,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
        )
        self.retry, self.limits = policy(type(self).__name__, retry, limits, deprecated)
        self.max_retries = self.retry.attempts
        self.retry_delay = self.retry.delay
        self.max_retry_delay = self.retry.max_delay
        self.max_message_size = self.limits.max_message_size
        self.max_in_flight = self.limits.max_in_flight
        # Internal failures per message id (bounded): a message that keeps failing in
        # streamtools itself is dead-lettered (`internal`) instead of requeued without end.
        self._internal_failures: collections.OrderedDict[str, int] = collections.OrderedDict()
        name = self.queue.name
        self.dead_letter_queue = dead_letter_queue(name)
        self.is_dead_letter_queue = self.dead_letter_queue == name
        self._batcher: Batcher | None = None
        # Accepted messages no worker has taken yet (see _work), and per key with one queued
        # or running, the messages of that key behind it.
        self._queue: collections.deque[_Queued] = collections.deque()
        self._key_queues: dict[Hashable, collections.deque[_Queued]] = {}
        self._free_workers = 0

    @property
    def retry_stages(self) -> int:
        """How many delayed-retry stages the queue needs (none for a DLQ consumer)."""
        return 0 if self.is_dead_letter_queue else self.max_retries

    def _accept(
        self,
        incoming: Incoming,
        *,
        order_key: Hashable = None,
        group: InFlight | None = None,
        batch_key: Hashable = None,
    ) -> None:
        """Take one received message: handled by this consumer's workers, tracked for shutdown.

        Our own tasks, not the client library's: a lost connection must not cancel a running
        handler. Messages with the same `order_key` are handled one after the other, in the
        order accepted (Kafka: a record key); `group` counts the message until it is done
        (Kafka: its partition's, waited for on a revoke). On a batch route the message joins
        the open batch of `batch_key` instead.
        """
        self._delivery_started()
        if self._batcher is not None:
            try:
                self._check_size(incoming)
            except DecodeError as exc:
                self._spawn(self._conclude(incoming, exc))
                return
            self._batcher.add(incoming, batch_key)
            if self._inflight >= self.max_in_flight:
                # No more messages come until some settle: the open batches cannot grow.
                self._batcher.flush_all()
            return
        if group is not None:
            group.count += 1
        item = (incoming, order_key, group)
        if order_key is not None:
            behind = self._key_queues.get(order_key)
            if behind is not None:  # one of its key is queued or running: after it
                behind.append(item)
                return
            self._key_queues[order_key] = collections.deque()
        self._queue.append(item)
        if not self._free_workers:
            self._add_worker()

    def _add_worker(self) -> None:
        self._free_workers += 1
        self._spawn(self._work())

    async def _work(self) -> None:
        """A worker: handles queued messages one after the other while there are any.

        No task per message (a task, its loop turn and its bookkeeping cost more than a
        short handler): a worker takes the next message as soon as it is done with one. When
        a worker takes one and none other is free to take the rest, it adds a worker first,
        so a handler that waits (I/O) holds up only its own message (and its key's next);
        up to `max_in_flight` handlers run at once, as before. Each message runs in a copy
        of the context, as a task of its own would (`_Isolated`).
        """
        queue, key_queues = self._queue, self._key_queues
        route = self.routes[0]
        busy = False
        try:
            while queue:
                incoming, key, group = queue.popleft()
                busy = True
                self._free_workers -= 1
                if queue and not self._free_workers:
                    self._add_worker()
                while True:
                    try:
                        await _Isolated(self._deliver(route, incoming))
                    finally:
                        if group is not None:
                            group.done()
                    if key is None:
                        break
                    behind = key_queues.get(key)
                    if not behind:  # (none left; or an abort took them)
                        key_queues.pop(key, None)
                        break
                    incoming, key, group = behind.popleft()  # the key's next, here
                busy = False
                self._free_workers += 1
        finally:
            if not busy:
                self._free_workers -= 1

    async def _abort_inflight(self) -> None:
        # Messages no worker has taken yet: left for redelivery at once.
        waiting = [*self._queue, *(item for behind in self._key_queues.values() for item in behind)]
        self._queue.clear()
        self._key_queues.clear()
        for incoming, _, group in waiting:
            incoming.abandon()
            if group is not None:
                group.done()
            self._delivery_done()
        await super()._abort_inflight()

    def _add_route(self, route: Route[T]) -> None:
        batch = route.options.get("batch")
        if batch is not None:
            if not isinstance(batch, Batch):
                raise ConfigurationError(
                    f"{self!r}: batch must be a streamtools.Batch, got {batch!r}"
                )
            if batch.max_size > self.max_in_flight:
                raise ConfigurationError(
                    f"{self!r}: a batch of up to {batch.max_size} messages needs "
                    f"limits=Limits(max_in_flight={batch.max_size}) or more (it is "
                    f"{self.max_in_flight}): a batch never holds more than that"
                )
        super()._add_route(route)
        if batch is not None:
            self._batcher = Batcher(self, route, batch)

    def _flush_waiting(self) -> None:
        if self._batcher is not None:
            self._batcher.flush_all()

    async def _deliver(self, route: Route[T], incoming: Incoming) -> None:
        meta = incoming.meta
        if meta.attempt > self.max_retries + 1:
            # A foreign attempt header is clamped, not trusted: it cannot skip the retries
            # of a message it never had (nor make the handler see a count beyond them).
            meta = incoming.meta = msgspec.structs.replace(meta, attempt=self.max_retries + 1)
        if _telemetry.active():
            with self._processing(meta, incoming.span_attributes) as observed:
                observed.outcome, observed.error = await self._run(route, incoming)
        else:
            await self._run(route, incoming)

    async def _run(self, route: Route[T], incoming: Incoming) -> tuple[str, BaseException | None]:
        """Decode, handle and settle one delivery; return its outcome (see
        `_telemetry.OUTCOMES`) and the error behind it."""
        try:
            self._check_size(incoming)
            reply = await self._process(route, incoming.body, incoming.meta)
        except (CodecError, HandlerError) as exc:
            return await self._conclude(incoming, exc)
        except asyncio.CancelledError:
            incoming.abandon()
            self._delivery_done()
            raise
        except Exception as exc:
            return await self._conclude(incoming, internal=exc)
        try:
            settled = not incoming.wants_reply and incoming.settle_now()
        except Exception as exc:
            return await self._conclude(incoming, internal=exc)
        if settled:  # the common case, without `_conclude`'s coroutine
            self._handled(incoming)
            return "ok", None
        return await self._conclude(incoming, reply=reply)

    def _check_size(self, incoming: Incoming) -> None:
        size = len(incoming.body)
        if size > self.max_message_size:
            raise DecodeError(
                f"the message is {size} bytes, over max_message_size "
                f"({self.max_message_size}); it was not decoded"
            )

    def _handled(self, incoming: Incoming) -> None:
        """`_conclude` of a handled delivery its transport settled at once (`settle_now`)."""
        if self._internal_failures:
            self._internal_failures.pop(incoming.meta.id, None)
        self._delivery_done()

    async def _conclude(
        self,
        incoming: Incoming,
        failure: CodecError | HandlerError | None = None,
        *,
        reply: object = None,
        internal: Exception | None = None,
    ) -> tuple[str, BaseException | None]:
        """Settle one delivery whose handling is over: handled (`failure` None; the reply
        sent first), invalid (a CodecError: dead-lettered), or failed (a HandlerError:
        retried, then dead-lettered). Ends the delivery; returns its outcome and error."""
        meta = incoming.meta
        outcome = "ok"
        error: BaseException | None = None
        try:
            if internal is not None:
                raise internal
            if isinstance(failure, CodecError):
                error = failure
                outcome = await self._failed(incoming, failure, invalid=True)
            elif failure is not None:
                error = failure.__cause__ or failure
                outcome = await self._failed(incoming, failure, invalid=False)
            elif incoming.wants_reply:
                await self._reply(incoming, reply)
            await incoming.settle()
        except asyncio.CancelledError:
            incoming.abandon()
            raise
        except DeliveryLost:
            logger.info(
                "connection lost mid-delivery; the broker redelivers the message",
                extra=self._log_extra(meta),
            )
            outcome = "failed"
        except Exception as exc:
            outcome, error = await self._internal_failure(incoming, exc), exc
        else:
            if self._internal_failures:  # empty but for messages that failed in us before
                self._internal_failures.pop(meta.id, None)
        finally:
            self._delivery_done()
        return outcome, error

    async def _internal_failure(self, incoming: Incoming, error: Exception) -> str:
        """A failure of ours (e.g. a copy the broker refused): never lose, never loop.

        The message is requeued after `retry_delay`; after `_MAX_INTERNAL_FAILURES` of them
        it is dead-lettered with reason `internal` (requeued again if even that fails).
        """
        meta = incoming.meta
        failures = self._internal_failures
        count = failures.pop(meta.id, 0) + 1
        failures[meta.id] = count
        while len(failures) > _REMEMBERED_FAILURES:
            failures.popitem(last=False)
        if count >= _MAX_INTERNAL_FAILURES:
            logger.error(
                "delivery failed %d times; dead-lettering the message (internal)",
                count,
                exc_info=error,
                extra=self._log_extra(meta),
            )
            try:
                await self._dead_letter(incoming, error, "internal")
                await incoming.settle()
            except Exception:
                logger.exception(
                    "dead-lettering failed too; requeueing", extra=self._log_extra(meta)
                )
            else:
                failures.pop(meta.id, None)
                return "dead_lettered"
        else:
            logger.exception(
                "delivery failed (%d of %d); requeueing",
                count,
                _MAX_INTERNAL_FAILURES,
                extra=self._log_extra(meta),
            )
        await asyncio.sleep(self.retry_delay)
        with contextlib.suppress(Exception):
            await incoming.requeue()
        return "failed"

    async def _failed(
        self, incoming: Incoming, error: CodecError | HandlerError, *, invalid: bool
    ) -> str:
        meta = incoming.meta
        cause = _cause(error)
        log = self._log_extra(meta)
        if not self.is_dead_letter_queue:
            if invalid:
                logger.warning("invalid message dead-lettered: %s", error, extra=log)
                await self._dead_letter(incoming, cause, "invalid")
                return "invalid"
            if meta.attempt > self.max_retries:
                logger.error(
                    "message dead-lettered after %d attempts: %s", meta.attempt, cause, extra=log
                )
                await self._dead_letter(incoming, cause, "max-retries")
                return "dead_lettered"
        # A retry; on a DLQ consumer, back to the tail of the same DLQ.
        delay = backoff_delay(meta.attempt, self.retry_delay, self.max_retry_delay)
        if self.is_dead_letter_queue:
            logger.error(
                "handler failed on a dead-lettered message; back to the tail of %s in %.2f s: %s",
                self.queue.name,
                delay,
                cause,
                extra=log,
            )
        else:
            logger.info(
                "handler failed, retry %d in %.2f s: %s", meta.attempt, delay, cause, extra=log
            )
        again = msgspec.structs.replace(
            meta, attempt=meta.attempt + 1, headers=carried(meta.headers)
        )
        await incoming.publish(self.queue.name, again, delay)
        return "retried"

    async def _dead_letter(self, incoming: Incoming, cause: BaseException, reason: str) -> None:
        meta = incoming.meta
        headers = carried(meta.headers)
        headers.update(
            {
                "x-death-reason": reason,
                "x-error-type": type(cause).__name__,
                "x-error-message": str(cause)[:_MAX_ERROR_MESSAGE],
                "x-attempts": str(meta.attempt),
                "x-original-queue": self.queue.name,
            }
        )
        dead = msgspec.structs.replace(meta, attempt=1, headers=headers)
        await incoming.publish(self.dead_letter_queue, dead, 0.0)
        incoming.dead_lettered(
            PublishError(
                f"message {meta.id} was dead-lettered to {self.dead_letter_queue!r} "
                f"({reason}): {cause}"
            )
        )

    async def _reply(self, incoming: Incoming, reply: object) -> None:
        meta = incoming.meta
        if reply is not None and not isinstance(reply, msgspec.Struct):
            logger.error(
                "handler returned %s, not a Struct; replying null",
                type(reply).__name__,
                extra=self._log_extra(meta),
            )
            reply = None
        body = encode_reply(reply, meta.content_type)
        try:
            await incoming.reply(body, meta.content_type)
        except StreamtoolsError as exc:
            # A requester that gave up is no reason to fail the delivery.
            logger.warning("reply not sent: %s", exc, extra=self._log_extra(meta))

    def _log_extra(self, meta: Metadata) -> dict[str, object]:
        extra: dict[str, object] = {
            "queue": self.queue.name,
            "message_id": meta.id,
            "attempt": meta.attempt,
            "transport": self.messaging_system,
        }
        trace_id = _telemetry.current_trace_id()
        if trace_id is not None:
            extra["trace_id"] = trace_id
        return extra

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._track(task)
        return task


def _cause(error: BaseException) -> BaseException:
    # What the dead-letter headers and logs name: the handler's own exception.
    if isinstance(error, HandlerError) and error.__cause__ is not None:
        return error.__cause__
    return error
