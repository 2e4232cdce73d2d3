"""The settle window: acknowledge out-of-order completions without acking unfinished work.

One window per stream of integer positions that the broker acknowledges cumulatively:
RabbitMQ delivery tags of one channel (`basic.ack(multiple=True)`), Kafka offsets of one
partition (a commit). Handlers finish out of order, so the window acknowledges only up to
the highest position below which every delivery is settled; everything settled in one loop
iteration goes out as one acknowledgement. At-least-once holds (an acknowledgement only ever
covers finished work) and a crash redelivers at most the finished-but-unacknowledged tail.

A slow handler at the head must not hold the credit of everything finished behind it: with
`spill`, once that many deliveries wait behind the head they are acknowledged one by one
(a later cumulative acknowledgement skips them, as they are no longer outstanding). Brokers
without single acknowledgements (Kafka) pass `spill=None`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable

logger = logging.getLogger("streamtools")

Ack = Callable[[int, bool], Awaitable[None]]
"""`ack(position, multiple)`: acknowledge `position` and, with `multiple`, all before it."""


class SettleWindow:
    """Settles one stream of positions (received in increasing order) in batches."""

    __slots__ = (
        "_ack",
        "acked",
        "alone",
        "finished",
        "flushing",
        "loose",
        "pending",
        "ready",
        "spill",
    )

    def __init__(self, ack: Ack, *, spill: int | None) -> None:
        self._ack = ack
        self.spill = spill
        self.pending: collections.deque[int] = collections.deque()  # in arrival order
        self.finished: set[int] = set()  # settled behind the head, not acknowledged yet
        self.alone: set[int] = set()  # settled behind the head, acknowledged one by one
        self.loose: list[int] = []  # of those, the ones whose single ack is not sent yet
        self.ready = -1  # the last plainly settled position of the settled prefix
        self.acked = -1  # the position last acknowledged with multiple=True
        self.flushing: asyncio.Task[None] | None = None

    def received(self, position: int) -> None:
        """A delivery at `position` arrived (positions arrive in increasing order)."""
        self.pending.append(position)

    @property
    def outstanding(self) -> int:
        """Deliveries received and not yet settled or acknowledged."""
        return len(self.pending)

    def settled(self, position: int, *, alone: bool = False) -> None:
        """Mark `position` done; schedule an acknowledgement of the contiguous settled prefix.

        `alone`: the delivery was already settled on its own (nacked, rejected), so it must
        never be acknowledged singly; a cumulative acknowledgement passing it is fine.

        A cumulative acknowledgement must name a position still outstanding (RabbitMQ closes
        the channel with PRECONDITION_FAILED otherwise), so `ready` only ever moves to a
        position settled plainly; positions settled alone advance the prefix without
        becoming it.
        """
        pending, finished, single = self.pending, self.finished, self.alone
        if pending and pending[0] == position:
            pending.popleft()
            if not alone:
                self.ready = position
            while pending and (pending[0] in finished or pending[0] in single):
                head = pending.popleft()
                if head in finished:
                    finished.discard(head)
                    self.ready = head
                else:
                    single.discard(head)
        elif alone:
            single.add(position)
            return
        else:
            finished.add(position)
            if self.spill is None or len(finished) < self.spill:
                return
            single.update(finished)
            self.loose.extend(sorted(finished))
            finished.clear()
        if self.flushing is None:
            # Runs after the current loop iteration: completions in it share one frame.
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            await self.drain()
        finally:
            self.flushing = None

    async def drain(self) -> None:
        """Send the pending acknowledgements now (graceful close calls it before closing).

        The only sender of a window's acknowledgements, so single ones always precede the
        cumulative one that passes their positions (acking a position twice is refused).
        """
        previous = self.acked
        try:
            while True:
                if self.loose:
                    loose, self.loose = self.loose, []
                    for position in loose:
                        await self._ack(position, False)
                elif self.ready > self.acked:
                    previous, position = self.acked, self.ready
                    self.acked = position
                    await self._ack(position, True)
                else:
                    return
        except Exception as exc:
            # A closed channel redelivers everything unacknowledged on it; a failed commit
            # (Kafka) is sent again with the next drain, since `acked` goes back.
            self.acked = previous
            logger.info("acknowledgement failed, messages may be redelivered: %s", exc)

    async def close(self) -> None:
        """Wait for a running flush, then send what is left."""
        if self.flushing is not None:
            await asyncio.wait([self.flushing])
        await self.drain()
