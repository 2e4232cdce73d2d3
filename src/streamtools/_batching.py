"""Batch consume: a queued consumer's handler takes `list[T]`; each message is settled alone.

`@consumer(batch=Batch(max_size=100, max_wait=0.05))` registers a handler of `list[T]`. The
core gathers received messages into a batch until it holds `max_size` of them or `max_wait`
seconds have passed since its first, then calls the handler once. What a batch means for the
delivery policy, the same on every queued transport:

- each message is decoded and validated alone, when it arrives: an invalid one is
  dead-lettered by itself (`invalid`) and never reaches a batch; the others do;
- the handler returned: every message of the batch is handled, and settled (RabbitMQ: the
  settle window sends one cumulative ack for them; Kafka: one commit per partition);
- the handler raised `BatchError({index: exception, ...})`: the messages at those indexes
  failed, each for its own exception, and go through the policy alone (retried with their
  own attempt count, then dead-lettered alone); the others are handled;
- the handler raised anything else: every message of the batch failed with it, and each is
  retried (and at last dead-lettered) alone;
- a retried message (attempt 2 and on) comes back in a batch of its own: one poison message
  cannot fail the rest of its batch again, and they are handled on their first retry;
- consume middlewares run per message, before it joins a batch (`call_next` returns once
  the batch it joined was handled, or raises that message's failure): one that returns
  without calling `call_next` settles its message as handled and keeps it out of the batch;
- batches are gathered per batch key: one per consumer, or one per partition on Kafka;
  the batches of a key run one after another, in the order their messages arrived (Kafka:
  a partition's in offset order; the partitions' batches side by side);
- a batch never holds more messages than the consumer's `Limits.max_in_flight`, so `max_size`
  above it is a ConfigurationError; once `max_in_flight` messages are in, no more come until
  some settle, so the open batches go to the handler at once, as they do at shutdown (and on
  a Kafka rebalance), without waiting for `max_wait`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from streamtools import _telemetry
from streamtools._codec import Metadata, _current
from streamtools._middleware import ConsumeNext, Middleware, consume_chain
from streamtools._settings import integer, seconds
from streamtools._types import T
from streamtools.errors import BatchError, CodecError, HandlerError, StreamtoolsError

if TYPE_CHECKING:
    from streamtools._base import Route
    from streamtools._delivery import Incoming, QueuedConsumer

BatchHandler = Callable[[list[T]], Awaitable[None]]
"""An async batch handler: takes the decoded messages of one batch, returns nothing."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Hand the handler at most `max_size` messages at once, gathered for at most `max_wait`
    seconds after the first of them (`@consumer(batch=Batch(...))`)."""

    max_size: int = 64
    max_wait: float = 0.1

    def __post_init__(self) -> None:
        integer("Batch", "max_size", self.max_size, minimum=1)
        object.__setattr__(
            self, "max_wait", seconds("Batch", "max_wait", self.max_wait, positive=True)
        )


_NO_KEY: Final = None
_OK: Final[tuple[str, BaseException | None]] = ("ok", None)
# The message a consume middleware chain is carrying to its batch, and the batch's key.
_joining: contextvars.ContextVar[tuple[Incoming, Hashable]] = contextvars.ContextVar("joining")


class _Open:
    """One batch being gathered: its messages as parallel lists (no object per message).

    `joined[i]` is the future message i's consume middleware chain waits on, None for a
    message that came without a chain."""

    __slots__ = ("incomings", "joined", "msgs", "timer")

    def __init__(self) -> None:
        self.incomings: list[Incoming] = []
        self.msgs: list[Any] = []
        self.joined: list[asyncio.Future[None] | None] = []
        self.timer: asyncio.TimerHandle | None = None

    def append(self, incoming: Incoming, msg: Any, joined: asyncio.Future[None] | None) -> None:
        self.incomings.append(incoming)
        self.msgs.append(msg)
        self.joined.append(joined)


class Batcher:
    """Gathers one batch route's messages per key and runs its handler on each batch."""

    def __init__(self, consumer: QueuedConsumer[Any], route: Route[Any], spec: Batch) -> None:
        self.consumer = consumer
        self.route = route
        self.spec = spec
        self.handler: BatchHandler[Any] = route.handler  # type: ignore[assignment]
        self._chain: ConsumeNext | None = None
        self._chained: tuple[Middleware, ...] | None = None  # the middlewares it was built of
        self._open: dict[Hashable, _Open] = {}
        self._tails: dict[Hashable, asyncio.Task[None]] = {}  # the last batch per key

    def add(self, incoming: Incoming, key: Hashable = _NO_KEY) -> None:
        """Decode `incoming` alone; an invalid one is dead-lettered at once, a valid one
        joins the open batch of `key` (through the consume middlewares, if any)."""
        consumer = self.consumer
        try:
            msg = consumer._decode(incoming.body, incoming.meta)
        except CodecError as exc:
            consumer._spawn(consumer._conclude(incoming, exc))
            return
        if consumer.middlewares is not self._chained:
            self._chained = consumer.middlewares
            self._chain = consume_chain(consumer.middlewares, self._join_step)
        if self._chain is None:
            self._join(incoming, msg, None, key)
        else:
            consumer._spawn(self._through(self._chain, incoming, msg, key))

    async def _through(
        self, chain: ConsumeNext, incoming: Incoming, msg: Any, key: Hashable
    ) -> None:
        """One message's way through the consume middlewares; the last step joins a batch
        and returns once it was handled (or raises the message's failure)."""
        consumer = self.consumer
        if _telemetry.active():
            with consumer._processing(incoming.meta, incoming.span_attributes) as observed:
                observed.outcome, observed.error = await self._chained_run(
                    chain, incoming, msg, key
                )
        else:
            await self._chained_run(chain, incoming, msg, key)

    async def _chained_run(
        self, chain: ConsumeNext, incoming: Incoming, msg: Any, key: Hashable
    ) -> tuple[str, BaseException | None]:
        meta = incoming.meta
        token = _current.set(meta)
        joining = _joining.set((incoming, key))
        try:
            await chain(msg, meta)
        except asyncio.CancelledError:
            incoming.abandon()
            self.consumer._delivery_done()
            raise
        except Exception as exc:
            return await self.consumer._conclude(incoming, _failure(meta, exc))
        finally:
            _joining.reset(joining)
            _current.reset(token)
        return await self.consumer._conclude(incoming)

    async def _join_step(self, msg: Any, meta: Metadata) -> None:
        incoming, key = _joining.get()
        joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._join(incoming, msg, joined, key)
        await joined

    def _join(
        self, incoming: Incoming, msg: Any, joined: asyncio.Future[None] | None, key: Hashable
    ) -> None:
        if incoming.meta.attempt > 1:  # a retry: alone, after what came before it
            self.flush(key)
            self._open[key] = alone = _Open()
            alone.append(incoming, msg, joined)
            self.flush(key)
            return
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Open()
            batch.timer = asyncio.get_running_loop().call_later(self.spec.max_wait, self.flush, key)
        batch.append(incoming, msg, joined)
        if len(batch.msgs) >= self.spec.max_size:
            self.flush(key)

    def flush(self, key: Hashable = _NO_KEY) -> asyncio.Task[None] | None:
        """Run the open batch of `key` now; return the last batch task of `key` (or None)."""
        batch = self._open.pop(key, None)
        if batch is not None:
            if batch.timer is not None:
                batch.timer.cancel()
            after = self._tails.get(key)
            task = self.consumer._spawn(self._run(batch, after))
            self._tails[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return self._tails.get(key)

    def flush_all(self) -> None:
        """Run every open batch now (shutdown): nothing waits for `max_wait` any more."""
        for key in list(self._open):
            self.flush(key)

    def _forget(self, key: Hashable, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _run(self, batch: _Open, after: asyncio.Task[None] | None) -> None:
        consumer = self.consumer
        try:
            if after is not None and not after.done():
                await asyncio.wait([after])  # a key's batches run in order
        except asyncio.CancelledError:
            self._abandon(batch)
            raise
        with contextlib.ExitStack() as spans:
            observed: list[_telemetry.Processing | None] | None = None
            if _telemetry.active():
                observed = [None] * len(batch.msgs)
                for index, incoming in enumerate(batch.incomings):
                    if batch.joined[index] is None:  # (a chained one has its span in _through)
                        observed[index] = spans.enter_context(
                            consumer._processing(incoming.meta, incoming.span_attributes)
                        )
            try:
                failures = await self._call(batch.msgs)
            except asyncio.CancelledError:
                self._abandon(batch)
                raise
            await self._conclude(batch, failures, observed)

    async def _call(self, msgs: list[Any]) -> Mapping[int, BaseException]:
        """Run the handler on the batch; the failed indexes and why. The handler is given
        the batch's own list: counted first, so a handler that empties it fails no fewer."""
        size = len(msgs)
        try:
            await self.handler(msgs)
        except BatchError as exc:
            return _checked(exc, size)
        except Exception as exc:
            return dict.fromkeys(range(size), exc)
        return {}

    async def _conclude(
        self,
        batch: _Open,
        failures: Mapping[int, BaseException],
        observed: list[_telemetry.Processing | None] | None,
    ) -> None:
        consumer = self.consumer
        failing: list[tuple[int, Awaitable[tuple[str, BaseException | None]]]] = []
        for index, incoming in enumerate(batch.incomings):
            error = failures.get(index)
            joined = batch.joined[index]
            if joined is not None:  # its middleware chain concludes it
                if error is None:
                    joined.set_result(None)
                else:
                    joined.set_exception(error)
            elif error is None:
                # Settled one after another in this loop iteration, so the transport's
                # settle window acknowledges them together.
                if not incoming.wants_reply and incoming.settle_now():
                    consumer._handled(incoming)  # (no await: the batch's hot path)
                    _observe(observed, index, _OK)
                else:
                    _observe(observed, index, await consumer._conclude(incoming))
            else:
                failure = _failure(incoming.meta, error)
                failing.append((index, consumer._conclude(incoming, failure)))
        if failing:  # a failure publishes a copy (a retry may wait out its delay): at once
            outcomes = await asyncio.gather(*(conclusion for _, conclusion in failing))
            for (index, _), outcome in zip(failing, outcomes, strict=True):
                _observe(observed, index, outcome)

    def _abandon(self, batch: _Open) -> None:
        for incoming, joined in zip(batch.incomings, batch.joined, strict=True):
            if joined is not None:
                joined.cancel()  # its chain abandons it
            else:
                incoming.abandon()
                self.consumer._delivery_done()


def _observe(
    observed: list[_telemetry.Processing | None] | None,
    index: int,
    outcome: tuple[str, BaseException | None],
) -> None:
    if observed is not None and (processing := observed[index]) is not None:
        processing.outcome, processing.error = outcome


def _checked(error: BatchError, size: int) -> Mapping[int, BaseException]:
    wrong = [index for index in error.failures if not 0 <= index < size]
    if wrong:
        # A BatchError naming messages the batch does not have is a bug of the handler's:
        # every message of the batch fails with it (none is settled unhandled).
        problem = StreamtoolsError(f"BatchError names indexes {wrong} of a batch of {size}")
        return dict.fromkeys(range(size), problem)
    return error.failures


def _failure(meta: Metadata, error: BaseException) -> HandlerError:
    failure = HandlerError(
        f"batch handler failed on message {meta.id}: {type(error).__name__}: {error}"
    )
    failure.__cause__ = error
    return failure
