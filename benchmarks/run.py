"""`make bench` / `make bench-quick`: run every case and print the table with ratios.

python -m benchmarks.run [--quick | --full] [--only SUBSTRING] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Callable
from pathlib import Path

from benchmarks import codec
from benchmarks.harness import Case, report, run_case

RESULTS = Path(__file__).parent / "results" / "latest.json"


async def main(quick: bool, only: str | None, out: Path) -> None:
    rounds = 3 if quick else 7
    scale = 1 if quick else 4
    builders: list[Callable[[], list[Case]]] = [lambda: codec.cases(20_000 * scale)]
    try:
        transports = importlib.import_module("benchmarks.transports")
    except ImportError as exc:  # transports not benchmarked yet
        print(f"(transport cases unavailable: {exc})")
    else:
        builders.extend(transports.builders(quick))
    cases: list[Case] = []
    for build in builders:
        for case in build():
            if only and only not in case.name:
                continue
            print(f"running: {case.name}", flush=True)
            await run_case(case, rounds)
            cases.append(case)
    print()
    print(report(cases, rounds, out))
    print(f"\nJSON: {out}")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer rounds, smaller loads (< 3 min)")
    mode.add_argument("--full", action="store_true", help="the full run (default)")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    asyncio.run(main(args.quick, args.only, args.out))


if __name__ == "__main__":
    cli()
