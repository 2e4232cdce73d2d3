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

With `batch` and `linger`, settlements are gathered across loop iterations too: the
acknowledgement goes out once it would cover `batch` positions, or `linger` seconds after
the first settlement it covers, whichever comes first (one timer per window, not
per delivery). A crash then redelivers at most that many finished deliveries more.
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
        "batch",
        "finished",
        "flushing",
        "linger",
        "loose",
        "pending",
        "ready",
        "spill",
        "timer",
    )

    def __init__(self, ack: Ack, *, spill: int | None, batch: int = 1, linger: float = 0.0) -> None:
        self._ack = ack
        self.spill = spill
        self.batch = batch
        self.linger = linger
        self.timer: asyncio.TimerHandle | None = None
        self.pending: collections.deque[int] = collections.deque()  # in arrival order
        self.finished: set[int] = set()  # settled behind the head, not acknowledged yet
        self.alone: set[int] = set()  # settled behind the head, acknowledged one by one
        self.loose: list[int] = []  # of those, the ones whose single ack is not sent yet
        self.ready = -1  # the last plainly settled position of the settled prefix
        self.acked = -1  # the position last acknowledged with multiple=True
        self.flushing: asyncio.Task[None] | None = None

    def received(self, position: int) -> None:
        """A delivery at `position` arrived (positions arrive in increasing order)."""
        if self.acked < 0 and self.ready < 0 and not self.pending:
            # Nothing before the first position is outstanding: a batch counts from there.
            self.acked = self.ready = position - 1
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
        if self.flushing is not None:
            return  # the running flush sends this too (it drains until nothing is left)
        if self.loose or self.ready - self.acked >= self.batch:
            self._start_flush(self.batch)
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.linger, self._start_flush, 1)

    def _start_flush(self, batch: int) -> None:
        # Runs after the current loop iteration: completions in it share one frame. A full
        # batch goes out with `batch`; when the linger is over, whatever is settled (1).
        self._stop_timer()
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_task(self._flush(batch))

    async def _flush(self, batch: int) -> None:
        try:
            sent = await self.drain(batch=batch)
        finally:
            self.flushing = None
        # (A failed acknowledgement is not retried here: the next settlement sends it again.)
        if sent and self.ready > self.acked and self.timer is None:
            # Less than a batch settled meanwhile: it goes out when the timer fires.
            self.timer = asyncio.get_running_loop().call_later(self.linger, self._start_flush, 1)

    async def drain(self, *, batch: int = 1) -> bool:
        """Send the pending acknowledgements now (graceful close calls it before closing);
        with `batch`, a cumulative one only while it covers at least that many positions.

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
                elif self.ready - self.acked >= batch:
                    previous, position = self.acked, self.ready
                    self.acked = position
                    await self._ack(position, True)
                else:
                    return True
        except Exception as exc:
            # A closed channel redelivers everything unacknowledged on it; a failed commit
            # (Kafka) is sent again with the next drain, since `acked` goes back.
            self.acked = previous
            logger.info("acknowledgement failed, messages may be redelivered: %s", exc)
            return False

    async def close(self) -> None:
        """Wait for a running flush, then send what is left."""
        if self.flushing is not None:
            await asyncio.wait([self.flushing])
        self._stop_timer()
        await self.drain()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
