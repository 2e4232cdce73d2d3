"""A NATS JetStream consumer in its own process, for tests that SIGKILL it mid-work.

Run as `python -m tests.support.nats_child SERVERS QUEUE JOURNAL --max-in-flight N --sleep S
--ack-wait A`. The journal is `tests.support.consumer_child`'s: the handler appends
`start <id>` when it begins and `done <id>` only after its body (a sleep) completed, one
O_APPEND write per line, so a SIGKILL leaves whole lines. `ready` is written once the
consumer is bound to the queue's durable consumer.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from streamtools import CONSUMER_LOOPS, NATS, Limits, Queue, RetryPolicy
from tests.support.consumer_child import Tick, run_journalled


async def serve(
    servers: str, queue: str, journal: Path, max_in_flight: int, sleep: float, ack_wait: float
) -> None:
    consumer = CONSUMER_LOOPS[NATS](
        Queue(queue, Tick),
        servers=servers,
        limits=Limits(max_in_flight=max_in_flight),
        retry=RetryPolicy(attempts=3, delay=0.1),
        ack_wait=ack_wait,
    )
    await run_journalled(consumer, journal, sleep)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("servers")
    parser.add_argument("queue")
    parser.add_argument("journal", type=Path)
    parser.add_argument("--max-in-flight", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.3)
    parser.add_argument("--ack-wait", type=float, default=3.0)
    args = parser.parse_args()
    asyncio.run(
        serve(args.servers, args.queue, args.journal, args.max_in_flight, args.sleep, args.ack_wait)
    )


if __name__ == "__main__":
    main()
