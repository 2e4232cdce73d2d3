"""`make bench` / `make bench-quick`: run every case and print the tables with ratios.

python -m benchmarks.run [--quick | --full] [--loop asyncio|uvloop|both] [--only SUBSTRING]
                         [--rounds N] [--out PATH]

Every case runs entirely on one event loop (a fresh one per group of cases), all its
contenders alike; with `--loop both` each group runs on asyncio's loop, then on uvloop, and
every row carries its loop (`[uvloop]`).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import codec
from benchmarks.harness import LOOPS, Case, loop_factory, report, run_case

RESULTS = Path(__file__).parent / "results" / "latest.json"


def main(quick: bool, only: str | None, out: Path, loops: list[str], rounds: int | None) -> None:
    rounds = rounds or (3 if quick else 7)
    scale = 1 if quick else 4
    builders: list[Callable[[], list[Case]]] = [lambda: codec.cases(20_000 * scale)]
    try:
        transports = importlib.import_module("benchmarks.transports")
    except ImportError as exc:  # a transport's client is missing
        print(f"(transport cases unavailable: {exc})")
    else:
        builders.extend(transports.builders(quick))
    started = time.perf_counter()
    cases: list[Case] = []
    for build in builders:
        for loop in loops:
            # A fresh loop per group: a case's contenders all run on it, and nothing
            # (connections, servers, tasks) outlives it into the next group.
            with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
                for case in build():
                    case.loop = loop
                    if only and only not in case.label:
                        continue
                    print(f"running: {case.label}", flush=True)
                    runner.run(run_case(case, rounds))
                    cases.append(case)
    elapsed = time.perf_counter() - started
    print()
    print(
        report(
            cases,
            rounds,
            out,
            loops=loops,
            complete=not only,
            settings={"quick": quick, "scale": scale, "only": only, "seconds": elapsed},
        )
    )
    if quick:
        print(
            "\nA quick run (3 rounds, a quarter of the loads, RSS up to 60,000 messages) checks "
            "the harness; the targets are judged on a full run (make bench)."
        )
    print(f"\nJSON: {out}")
    print(f"Took {elapsed / 60:.1f} min ({len(cases)} cases, {', '.join(loops)})")


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="3 rounds, small loads")
    mode.add_argument("--full", action="store_true", help="the full run (default)")
    parser.add_argument(
        "--loop",
        choices=[*LOOPS, "both"],
        default="asyncio",
        help="the event loop every case runs on (both: each case on each, asyncio first)",
    )
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--rounds", type=int, help="override the rounds (3 quick, 7 full)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    loops = list(LOOPS) if args.loop == "both" else [args.loop]
    if "uvloop" in loops and importlib.util.find_spec("uvloop") is None:
        parser.error("uvloop is not installed: pip install -e '.[bench]' (or streamtools[speed])")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    main(args.quick, args.only, args.out, loops, args.rounds)


if __name__ == "__main__":
    cli()
