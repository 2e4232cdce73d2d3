"""One timer bounding many waits: `asyncio.timeout` semantics without a timer per send.

A transport's publish path waits for the broker under a deadline (`send_timeout`). With
`asyncio.timeout` every send schedules a timer handle, reschedules and cancels it, and goes
through an async context manager: measurable at tens of thousands of sends a second. Here a
send costs a heap push and a flag; one timer per `Deadlines` fires at the earliest pending
deadline, cancels the tasks whose time is up, and re-arms for the next one. A send that
ends before its deadline never touches the timer.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable

# Deadlines this close are due now: the loop may run a timer up to its clock resolution early.
_SLACK = 0.001


class Wait:
    """One bounded wait: `expired` once its deadline cancelled the task."""

    __slots__ = ("cancelling", "done", "expired", "task")

    def __init__(self, task: asyncio.Task[object], cancelling: int) -> None:
        self.task = task
        self.cancelling = cancelling  # the task's cancel requests before the wait began
        self.done = False
        self.expired = False

    def timed_out(self) -> bool:
        """After a CancelledError: whether it came from this deadline alone (then consumed).

        The same rule as `asyncio.timeout`: a cancellation from elsewhere (the caller's, a
        shutdown) still propagates.
        """
        return self.expired and self.task.uncancel() <= self.cancelling


class Deadlines:
    """Deadlines of the waits in flight on one event loop, in a heap, with one timer."""

    __slots__ = ("_handle", "_heap", "_live", "_loop", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Wait]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._order = itertools.count()
        self._live = 0

    def start(self, timeout: float) -> Wait:
        """Bound the current task's wait to `timeout` seconds from now; `finish` it after."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()  # a new loop: the old one's timer is gone with it
            self._loop = loop
        task = asyncio.current_task()
        assert task is not None, "a bounded wait runs in a task"
        wait = Wait(task, task.cancelling())
        when = loop.time() + timeout
        heapq.heappush(self._heap, (when, next(self._order), wait))
        self._live += 1
        handle = self._handle
        if handle is None or when < handle.when():
            if handle is not None:
                handle.cancel()
            self._handle = loop.call_at(when, self._fire)
        return wait

    def finish(self, wait: Wait) -> None:
        """The wait is over (returned, raised or timed out)."""
        if wait.done:
            return
        wait.done = True
        self._live -= 1
        heap = self._heap
        # Finished waits leave from the front (sends mostly end in order); a long wait at the
        # front makes the heap hold finished ones behind it, so compact when they dominate.
        while heap and heap[0][2].done:
            heapq.heappop(heap)
        if len(heap) > 64 and len(heap) > 4 * self._live:
            heap[:] = [entry for entry in heap if not entry[2].done]
            heapq.heapify(heap)
        # The timer stays armed: it finds nothing due, or re-arms for the next deadline.

    def close(self) -> None:
        """Disarm the timer; waits still pending are no longer bounded."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._heap.clear()
        self._live = 0

    def _fire(self) -> None:
        self._handle = None
        loop = self._loop
        assert loop is not None
        due = loop.time() + _SLACK
        heap = self._heap
        while heap:
            when, _, wait = heap[0]
            if wait.done:
                heapq.heappop(heap)
                continue
            if when > due:
                break
            heapq.heappop(heap)
            wait.done = True
            wait.expired = True
            self._live -= 1
            wait.task.cancel()
        if heap:
            self._handle = loop.call_at(heap[0][0], self._fire)


async def again_until_accepted(
    deadlines: Deadlines,
    timeout: float,
    attempt: Callable[[], Awaitable[object]],
    retriable: tuple[type[BaseException], ...],
    on_retry: Callable[[BaseException], None],
    expired: Callable[[], BaseException],
    pause: float = 0.2,
) -> None:
    """Run `attempt` until it returns, once more `pause` seconds after each of `retriable`
    it raises (`on_retry` sees each first, to log it or to raise instead), for at most
    `timeout` seconds: then `expired()` is raised. The caller's own cancellation propagates.

    What the broker clients share (Kafka's produce, JetStream's publish): a message is sent
    again through a lost connection until the broker acknowledges it or the time is up.
    """
    wait = deadlines.start(timeout)
    try:
        while True:
            try:
                await attempt()
                return
            except retriable as exc:
                on_retry(exc)
                await asyncio.sleep(pause)
    except (asyncio.CancelledError, TimeoutError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not wait.timed_out():
            raise
        raise expired() from None
    finally:
        deadlines.finish(wait)
