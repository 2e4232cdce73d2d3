"""The benchmark harness: contenders alternate A B A B over rounds; medians and ratios.

A case pairs a streamtools workload with a contender doing the same work at equal
guarantees. Each workload returns how many operations it did and how long they took; the
report gives operations per second (median of rounds, min-max) and the ratio
streamtools / contender, where > 1 means streamtools is faster.
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
"""Runs once, returns (operations, seconds)."""


@dataclass
class Contender:
    name: str
    run: Workload
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
    unit: str = "msg/s"
    lower_is_better: bool = False  # latency cases: rates hold seconds per operation

    def ratio(self, other: Contender) -> float:
        if self.lower_is_better:
            return other.median / self.ours.median
        return self.ours.median / other.median


async def time_ops(ops: int, body: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """Time one run of `body`, which performs `ops` operations."""
    started = time.perf_counter()
    await body()
    return ops, time.perf_counter() - started


async def run_case(case: Case, rounds: int) -> None:
    contenders = [case.ours, *case.theirs]
    for round_ in range(rounds):
        # Alternate the order each round so drift on this shared machine hits all alike.
        order = contenders if round_ % 2 == 0 else list(reversed(contenders))
        for contender in order:
            ops, seconds = await contender.run()
            value = seconds / ops if case.lower_is_better else ops / seconds
            contender.rates.append(value)


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
    if case.lower_is_better:
        return f"{value * 1e6:,.0f} us"
    return f"{value:,.0f}"


def report(cases: list[Case], rounds: int, out: Path) -> str:
    lines = [
        f"Machine: {machine()}; rounds: {rounds} (A B A B alternating)",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "| case | streamtools | contender | contender value | ratio (median) | target |",
        "|---|---|---|---|---|---|",
    ]
    records = []
    for case in cases:
        for other in case.theirs:
            ratio = case.ratio(other)
            lines.append(
                f"| {case.name} | {_fmt(case.ours.median, case)} "
                f"({_fmt(min(case.ours.rates), case)}-{_fmt(max(case.ours.rates), case)}) "
                f"| {other.name} | {_fmt(other.median, case)} "
                f"({_fmt(min(other.rates), case)}-{_fmt(max(other.rates), case)}) "
                f"| {ratio:.2f}x | {case.target} |"
            )
            records.append(
                {
                    "case": case.name,
                    "unit": "s/op" if case.lower_is_better else case.unit,
                    "target": case.target,
                    "streamtools": asdict(case.ours) | {"run": None, "median": case.ours.median},
                    "contender": asdict(other) | {"run": None, "median": other.median},
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
