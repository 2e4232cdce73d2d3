"""The benchmark harness: contenders alternate A B A B over rounds; medians and ratios.

A case pairs a streamtools workload with contenders doing the same work at equal
guarantees. Each workload returns how many operations it did and how long they took; the
report gives operations per second (median of rounds, min-max) and the ratio
streamtools / contender, where > 1 means streamtools is faster.

Cases where lower is better (latency, memory growth) return (operations, amount) and the
value is amount per operation; their ratio is contender / streamtools, so > 1 still means
streamtools is better. A case without contenders reports its value against `limit`.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

Workload = Callable[[], Awaitable[tuple[int, float]]]
"""Runs once, returns (operations, seconds) (or (operations, amount) when lower is better)."""
Hook = Callable[[], Awaitable[None]]


@dataclass
class Contender:
    name: str
    run: Workload
    goal: float | None = None  # this contender's target ratio, where it differs from the case's
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass
class Case:
    name: str
    target: str  # the goal, e.g. ">= 1.0x"
    ours: Contender
    theirs: list[Contender]
    unit: str = "msg/s"  # "msg/s", "s" (latency: seconds per operation) or "MiB"
    lower_is_better: bool = False  # latency and memory cases
    goal: float | None = None  # the ratio the target asks for (met when ratio >= goal)
    limit: float | None = None  # no contenders: met when the value is <= limit
    rounds: int | None = None  # overrides the run's rounds (e.g. 1 for a long memory case)
    setup: Hook | None = None  # untimed, once before the rounds (connections, queues)
    teardown: Hook | None = None  # once after, also when a round failed (delete queues)

    def ratio(self, other: Contender) -> float:
        if self.lower_is_better:
            return other.median / self.ours.median
        return self.ours.median / other.median

    def met(self, other: Contender | None) -> str:
        if other is None:
            return "" if self.limit is None else ("yes" if self.ours.median <= self.limit else "NO")
        goal = other.goal if other.goal is not None else self.goal
        return "" if goal is None else ("yes" if self.ratio(other) >= goal else "NO")


async def time_ops(ops: int, body: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """Time one run of `body`, which performs `ops` operations."""
    started = time.perf_counter()
    await body()
    return ops, time.perf_counter() - started


async def run_case(case: Case, rounds: int) -> None:
    contenders = [case.ours, *case.theirs]
    if case.setup is not None:
        await case.setup()
    try:
        for round_ in range(rounds if case.rounds is None else case.rounds):
            # Alternate the order each round so drift on this shared machine hits all alike.
            order = contenders if round_ % 2 == 0 else list(reversed(contenders))
            for contender in order:
                ops, seconds = await contender.run()
                value = seconds / ops if case.lower_is_better else ops / seconds
                contender.rates.append(value)
    finally:
        if case.teardown is not None:
            await case.teardown()


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "streamtools",
        "msgspec",
        "aiohttp",
        "aio-pika",
        "aiormq",
        "faststream",
        "pydantic",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[package] = metadata.version(package)
    return found


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}"


def _fmt(value: float, case: Case) -> str:
    if case.unit == "s":
        return f"{value * 1e6:,.0f} us"
    if case.unit == "MiB":
        return f"{value:,.2f} MiB"
    return f"{value:,.0f}"


def _span(contender: Contender, case: Case) -> str:
    return (
        f"{_fmt(contender.median, case)} "
        f"({_fmt(min(contender.rates), case)}-{_fmt(max(contender.rates), case)})"
    )


def _record(contender: Contender) -> dict[str, object]:
    return asdict(contender) | {"run": None, "median": contender.median}


def report(cases: list[Case], rounds: int, out: Path) -> str:
    lines = [
        f"Machine: {machine()}; rounds: {rounds} (A B A B alternating)",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "| case | streamtools (median, min-max) | contender | contender (median, min-max) "
        "| ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    records: list[dict[str, object]] = []
    for case in cases:
        if not case.ours.rates:
            continue  # a derived case whose source case did not run
        unit = case.unit
        if not case.theirs:
            lines.append(
                f"| {case.name} | {_span(case.ours, case)} | - | - | - "
                f"| {case.target} | {case.met(None)} |"
            )
            records.append(
                {
                    "case": case.name,
                    "unit": unit,
                    "target": case.target,
                    "met": case.met(None),
                    "streamtools": _record(case.ours),
                }
            )
            continue
        for other in case.theirs:
            ratio = case.ratio(other)
            lines.append(
                f"| {case.name} | {_span(case.ours, case)} | {other.name} "
                f"| {_span(other, case)} | {ratio:.2f}x | {case.target} | {case.met(other)} |"
            )
            records.append(
                {
                    "case": case.name,
                    "unit": unit,
                    "target": case.target,
                    "met": case.met(other),
                    "streamtools": _record(case.ours),
                    "contender": _record(other),
                    "ratio": ratio,
                }
            )
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": machine(), "versions": versions(), "rounds": rounds, "cases": records},
            indent=2,
            default=str,
        )
    )
    return text
