"""A Redis consumer in its own process, for tests that SIGKILL it mid-work.

Run as `python -m tests.support.redis_child URL STREAM JOURNAL --max-in-flight N --sleep S
--claim-idle C`; the journal is `tests.support.consumer_child`'s (`ready`, `start <id>`,
`done <id>`).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from streamtools import CONSUMER_LOOPS, REDIS, Limits, Queue, RetryPolicy
from tests.support.consumer_child import Tick, run_journalled


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("journal", type=Path)
    parser.add_argument("--max-in-flight", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.3)
    parser.add_argument("--claim-idle", type=float, default=2.0)
    args = parser.parse_args()
    consumer = CONSUMER_LOOPS[REDIS](
        Queue(args.stream, Tick),
        url=args.url,
        claim_idle=args.claim_idle,
        limits=Limits(max_in_flight=args.max_in_flight),
        retry=RetryPolicy(attempts=3, delay=0.1),
    )
    asyncio.run(run_journalled(consumer, args.journal, args.sleep))


if __name__ == "__main__":
    main()
