"""The publish paths' shared deadline timer: `asyncio.timeout` semantics, one timer (#14)."""

from __future__ import annotations

import asyncio

import pytest

from streamtools._deadlines import Deadlines


async def bounded(deadlines: Deadlines, timeout: float, work: float) -> str:
    wait = deadlines.start(timeout)
    try:
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if not wait.timed_out():
            raise
        return "timed out"
    finally:
        deadlines.finish(wait)


async def test_a_wait_past_its_deadline_times_out_and_the_others_finish() -> None:
    deadlines = Deadlines()
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        bounded(deadlines, 0.2, 5),
        bounded(deadlines, 5, 0.05),
        bounded(deadlines, 0.1, 5),  # an earlier deadline than the first: the timer re-arms
        bounded(deadlines, 5, 0.3),
    )
    assert list(results) == ["timed out", "done", "timed out", "done"]
    assert loop.time() - started < 2
    task = asyncio.current_task()
    assert task is not None
    assert not task.cancelling()


async def test_a_cancellation_from_elsewhere_still_propagates() -> None:
    deadlines = Deadlines()
    task = asyncio.create_task(bounded(deadlines, 5, 5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Cancelled by the caller and timed out at once: the caller's cancellation wins.
    late = asyncio.create_task(bounded(deadlines, 0, 5))
    await asyncio.sleep(0)  # it waits now, its deadline due
    late.cancel()
    deadlines._fire()  # the timer's callback, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await late


async def test_finished_waits_do_not_accumulate() -> None:
    deadlines = Deadlines()
    blocker = asyncio.create_task(bounded(deadlines, 30, 30))  # holds the front of its queue
    await asyncio.sleep(0)
    for _ in range(20):
        await asyncio.gather(*(bounded(deadlines, 30, 0) for _ in range(100)))
    assert sum(len(queue.waits) for queue in deadlines._queues.values()) <= 4 * 1 + 100
    blocker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocker
    assert all(not queue.waits for queue in deadlines._queues.values())
    deadlines.close()
