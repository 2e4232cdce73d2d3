"""One timer bounding many waits: `asyncio.timeout` semantics without a timer per send.

A transport's publish path waits for the broker under a deadline (`send_timeout`). With
`asyncio.timeout` every send schedules a timer handle, reschedules and cancels it, and goes
through an async context manager: measurable at tens of thousands of sends a second. Here a
send costs an append and a flag; one timer per timeout fires at the earliest pending
deadline, cancels the tasks whose time is up, and re-arms for the next one. A send that
ends before its deadline never touches the timer.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

# Deadlines this close are due now: the loop may run a timer up to its clock resolution early.
_SLACK = 0.001
_MAX_QUEUES = 16  # distinct timeouts kept before idle queues are dropped


class Wait:
    """One bounded wait: `expired` once its deadline cancelled the task."""

    __slots__ = ("cancelling", "done", "expired", "queue", "task", "when")

    def __init__(
        self, task: asyncio.Task[object], cancelling: int, when: float, queue: _Queue
    ) -> None:
        self.task = task
        self.cancelling = cancelling  # the task's cancel requests before the wait began
        self.when = when
        self.queue = queue
        self.done = False
        self.expired = False

    def timed_out(self) -> bool:
        """After a CancelledError: whether it came from this deadline alone (then consumed).

        The same rule as `asyncio.timeout`: a cancellation from elsewhere (the caller's, a
        shutdown) still propagates.
        """
        return self.expired and self.task.uncancel() <= self.cancelling


class _Queue:
    """The waits of one timeout, oldest first: their deadlines come in the same order (a
    monotonic clock plus a constant), so a deque does what a heap would, for less."""

    __slots__ = ("handle", "live", "loop", "waits")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waits: collections.deque[Wait] = collections.deque()
        self.handle: asyncio.TimerHandle | None = None
        self.live = 0

    def fire(self) -> None:
        self.handle = None
        due = self.loop.time() + _SLACK
        waits = self.waits
        while waits:
            wait = waits[0]
            if not wait.done:
                if wait.when > due:
                    self.handle = self.loop.call_at(wait.when, self.fire)
                    return
                wait.done = wait.expired = True
                self.live -= 1
                wait.task.cancel()
            waits.popleft()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        self.waits.clear()
        self.live = 0


class Deadlines:
    """Deadlines of the waits in flight on one event loop: per timeout a queue, one timer
    each, armed at its oldest pending deadline."""

    __slots__ = ("_loop", "_queues")

    def __init__(self) -> None:
        self._queues: dict[float, _Queue] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float) -> Wait:
        """Bound the current task's wait to `timeout` seconds from now; `finish` it after."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self.close()  # a new loop: the old one's timers are gone with it
            self._loop = loop
        queue = self._queues.get(timeout)
        if queue is None:
            if len(self._queues) >= _MAX_QUEUES:  # timeouts computed per call: drop idle ones
                for idle in [t for t, q in self._queues.items() if not q.live]:
                    self._queues.pop(idle).close()
            queue = self._queues[timeout] = _Queue(loop)
        task = asyncio.current_task()
        assert task is not None, "a bounded wait runs in a task"
        wait = Wait(task, task.cancelling(), loop.time() + timeout, queue)
        queue.waits.append(wait)
        queue.live += 1
        if queue.handle is None:
            queue.handle = loop.call_at(wait.when, queue.fire)
        return wait

    def finish(self, wait: Wait) -> None:
        """The wait is over (returned, raised or timed out)."""
        if wait.done:
            return
        wait.done = True
        queue = wait.queue
        queue.live -= 1
        waits = queue.waits
        # Finished waits leave from the front (sends mostly end in order); a long wait at the
        # front makes the queue hold finished ones behind it, so compact when they dominate
        # (amortised: at least 64 more waits, or 3 times the live ones, before the next).
        while waits and waits[0].done:
            waits.popleft()
        if len(waits) > 64 and len(waits) > 4 * queue.live:
            kept = [entry for entry in waits if not entry.done]
            waits.clear()
            waits.extend(kept)
        # The timer stays armed: it finds nothing due, or re-arms for the next deadline.

    def close(self) -> None:
        """Disarm the timers; waits still pending are no longer bounded."""
        for queue in self._queues.values():
            queue.close()
        self._queues.clear()

    def _fire(self) -> None:
        """Run every timer now (what is due expires; a test's hook)."""
        for queue in list(self._queues.values()):
            if queue.handle is not None:
                queue.handle.cancel()
            queue.fire()


async def again_until_accepted(
    deadlines: Deadlines,
    timeout: float,
    attempt: Callable[..., Awaitable[object]],
    args: tuple[object, ...],
    retriable: tuple[type[BaseException], ...],
    on_retry: Callable[[BaseException, str], None],
    expired: Callable[[str, float], BaseException],
    what: str,
    refused: tuple[type[BaseException], ...] = (),
    refusal: Callable[[BaseException, str], BaseException] | None = None,
    pause: float = 0.2,
) -> None:
    """Run `attempt(*args)` until it returns, once more `pause` seconds after each of
    `retriable` it raises (`on_retry(exc, what)` sees each first, to log it or to raise
    instead), for at most `timeout` seconds: then `expired(what, timeout)` is raised. The
    caller's own cancellation propagates. Any of `refused` it raises (the broker said no) is
    raised as `refusal(exc, what)`.

    What the broker clients share (Kafka's produce, JetStream's publish): a message is sent
    again through a lost connection until the broker acknowledges it or the time is up. The
    callables are the client's, made once: no closure per send (on a busy producer the
    garbage collector's passes over short-lived closures cost more than the closures).
    """
    wait = deadlines.start(timeout)
    try:
        while True:
            try:
                await attempt(*args)
                return
            except retriable as exc:
                on_retry(exc, what)
                await asyncio.sleep(pause)
    except refused as exc:
        assert refusal is not None
        raise refusal(exc, what) from exc
    except (asyncio.CancelledError, TimeoutError) as exc:
        if isinstance(exc, asyncio.CancelledError) and not wait.timed_out():
            raise
        raise expired(what, timeout) from None
    finally:
        deadlines.finish(wait)
