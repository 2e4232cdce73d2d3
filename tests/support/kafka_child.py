"""A Kafka consumer in its own process, for tests that SIGKILL it mid-work.

Run as `python -m tests.support.kafka_child SERVERS TOPIC GROUP JOURNAL --max-in-flight N
--sleep S`. The journal is `tests.support.consumer_child`'s: the handler appends `start <id>`
when it begins and `done <id>` only after its body (a sleep) completed, one O_APPEND write per
line, so a SIGKILL leaves whole lines. `ready` is written once the group has given this member
its partitions.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from streamtools import CONSUMER_LOOPS, KAFKA, Limits, Queue, RetryPolicy
from tests.support.consumer_child import Tick, run_journalled


async def serve(
    servers: str, topic: str, group: str, journal: Path, max_in_flight: int, sleep: float
) -> None:
    consumer = CONSUMER_LOOPS[KAFKA](
        Queue(topic, Tick),
        bootstrap_servers=servers,
        group=group,
        limits=Limits(max_in_flight=max_in_flight),
        retry=RetryPolicy(attempts=3, delay=0.1),
        session_timeout=6,
    )
    # Ready once the group has given this member its partitions.
    await run_journalled(
        consumer, journal, sleep, lambda: bool(getattr(consumer, "_partitions", None))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("servers")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("journal", type=Path)
    parser.add_argument("--max-in-flight", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.3)
    args = parser.parse_args()
    asyncio.run(
        serve(args.servers, args.topic, args.group, args.journal, args.max_in_flight, args.sleep)
    )


if __name__ == "__main__":
    main()
