"""A RabbitMQ consumer in its own process, for tests that SIGKILL it mid-work.

Run as `python -m tests.support.consumer_child URL QUEUE JOURNAL --prefetch N --sleep S`.
The handler appends `start <id>` to JOURNAL when it begins and `done <id>` only after its
body (a sleep) completed; each line is one O_APPEND write, so a SIGKILL leaves whole lines.
`ready` is written once the consumer is subscribed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec

from streamtools import CONSUMER_LOOPS, RMQ, Consumer, Limits, Queue, RetryPolicy, current_metadata

_ROOT = Path(__file__).resolve().parents[2]


class Tick(msgspec.Struct, kw_only=True):
    """The message of the resilience tests: a sequence number, so ids map to sends."""

    seq: int


async def kill_midway(
    argv: list[str], journal: Path, log: Path, *, done: int, inflight: int, timeout: float
) -> tuple[list[str], list[str]]:
    """Run a consumer child (`argv`, journalling to `journal`), SIGKILL it once it finished
    `done` handlers and runs `inflight` more, reap it; return (ids started, ids done).

    Polls (bounded by `timeout`): the journal is written by another process, nothing here
    can signal a change. Fails the test with the child's output if it never gets there.
    """
    import pytest  # the tests' helper; the child itself runs without pytest

    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *argv,
            cwd=_ROOT,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
    state: tuple[bool, list[str], list[str]] = (False, [], [])
    reached = False
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while proc.returncode is None:
                    state = await asyncio.to_thread(read_journal, journal)
                    ready, started, finished = state
                    if (
                        ready
                        and len(finished) >= done
                        and len(set(started) - set(finished)) >= inflight
                    ):
                        os.kill(proc.pid, signal.SIGKILL)
                        reached = True
                        break
                    await asyncio.sleep(0.02)
    finally:
        if proc.returncode is None:
            proc.kill()
        async with asyncio.timeout(10):
            await proc.wait()
    if not reached or proc.returncode != -signal.SIGKILL:
        output = await asyncio.to_thread(lambda: log.read_text() if log.exists() else "")
        pytest.fail(f"consumer child (exit {proc.returncode}) did not get there: {state}\n{output}")
    _, started, finished = await asyncio.to_thread(read_journal, journal)
    return started, finished


def read_journal(path: Path) -> tuple[bool, list[str], list[str]]:
    """(ready, ids started, ids done) from a child's journal, in the order written."""
    ready, started, done = False, [], []
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        event, _, ident = line.partition(" ")
        if event == "ready":
            ready = True
        elif event == "start":
            started.append(ident)
        elif event == "done":
            done.append(ident)
    return ready, started, done


async def run_journalled(
    consumer: Consumer[Tick],
    journal: Path,
    sleep: float,
    ready: Callable[[], bool] = lambda: True,
) -> None:
    """Serve `consumer` until killed, its handler journalling `start`/`done` around a sleep;
    `ready` is written once `ready()` holds after the start."""
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(line: str) -> None:
        os.write(fd, f"{line}\n".encode())

    @consumer()
    async def handle(msg: Tick) -> None:
        ident = current_metadata().id
        write(f"start {ident}")
        await asyncio.sleep(sleep)
        write(f"done {ident}")

    await consumer.start()
    while not ready():  # noqa: ASYNC110 - e.g. a Kafka assignment, which has no event
        await asyncio.sleep(0.05)
    write("ready")
    try:
        await consumer.run()  # until killed
    finally:
        os.close(fd)


async def serve(url: str, queue: str, journal: Path, prefetch: int, sleep: float) -> None:
    consumer = CONSUMER_LOOPS[RMQ](
        Queue(queue, Tick),
        url=url,
        limits=Limits(max_in_flight=prefetch),
        retry=RetryPolicy(attempts=3, delay=0.1),
    )
    await run_journalled(consumer, journal, sleep)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("queue")
    parser.add_argument("journal", type=Path)
    parser.add_argument("--prefetch", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.3)
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.queue, args.journal, args.prefetch, args.sleep))


if __name__ == "__main__":
    main()
