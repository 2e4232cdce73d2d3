"""The benchmark harness: contenders alternate A B A B over rounds; per-round ratios, medians.

A case pairs a streamtools workload with contenders doing the same work at equal
guarantees. Each workload returns how many operations it did and how long they took; the
report gives operations per second (median of rounds, min-max) and, per contender, the ratio
streamtools / contender of every round (round i against round i, so drift between rounds
cancels out), reported as the median of those ratios with their min-max. > 1 means
streamtools is faster.

Every run starts from a collected heap (`gc.collect()`, untimed): garbage the previous run
or the setup left is not collected on the next contender's clock, and a full collection of
the harness's own heap (prefilled messages, clients of earlier cases) does not land in one
contender's round by chance. What a workload allocates in its own run still costs it.

Cases where lower is better (latency, memory growth) return (operations, amount) and the
value is amount per operation; their ratio is contender / streamtools, so > 1 still means
streamtools is better. A case without contenders reports its value against `limit`.

A contender whose ratio is one of the targets of issues #14 and #24 names its `Target` (see
`TARGETS`); the report ends with a Targets table, one row per target and a column per
event loop, saying met / NOT met with the median ratio and its min-max.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

Workload = Callable[[], Awaitable[tuple[int, float]]]
"""Runs once, returns (operations, seconds) (or (operations, amount) when lower is better)."""
Hook = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """A target of an issue (#14, #24): a ratio to reach (`goal`), or with `limit` a value to
    stay under."""

    label: str  # the row of the Targets table
    goal: float  # the ratio (met when the median ratio >= goal), or the limit (value <= goal)
    words: str  # the goal in words, e.g. ">= 1.3x" or "within 1.05x"
    limit: bool = False
    issue: int = 14  # the issue that set it

    @property
    def text(self) -> str:
        """The goal in words and the issue that set it: ">= 1.0x (#24)"."""
        return f"{self.words} (#{self.issue})"


# The targets of issue #14, in its order, then #24's: ratios streamtools / raw in the same run.
RMQ_CONSUME = Target("RabbitMQ consume+ack vs aio-pika acking each", 1.3, ">= 1.3x")
RMQ_CONSUME_NO_ACK = Target(
    "RabbitMQ consume+ack vs the broker's no-ack delivery (moonshot)", 0.9, ">= 0.9x"
)
RMQ_PUBLISH_CONCURRENT = Target(
    "RabbitMQ publish, confirms, 256 in flight vs aio-pika", 1.1, ">= 1.1x"
)
RMQ_PUBLISH_MANY = Target("RabbitMQ send_many(256), confirms vs aio-pika", 1.1, ">= 1.1x")
RMQ_SEQUENTIAL = Target("RabbitMQ sequential send vs aio-pika", 1 / 1.05, "within 1.05x")
RMQ_LATENCY = Target("RabbitMQ latency p50 vs aio-pika", 1 / 1.05, "within 1.05x")
HTTP_SEND = {
    16: Target("HTTP send, concurrency 16 vs aiohttp", 0.95, ">= 0.95x"),
    64: Target("HTTP send, concurrency 64 vs aiohttp", 0.95, ">= 0.95x"),
}
HTTP_REQUEST = {
    16: Target("HTTP request/reply, concurrency 16 vs aiohttp", 0.95, ">= 0.95x"),
    64: Target("HTTP request/reply, concurrency 64 vs aiohttp", 0.95, ">= 0.95x"),
}
KAFKA_PRODUCE_CONCURRENT = Target(
    "Kafka produce acks=all, 256 in flight vs aiokafka", 1.0, ">= 1.0x"
)
KAFKA_PRODUCE_MANY = Target("Kafka produce acks=all, send_many(256) vs aiokafka", 1.0, ">= 1.0x")
KAFKA_CONSUME_RECORD = Target(
    "Kafka consume per record vs aiokafka per-record loop", 1.0, ">= 1.0x", issue=24
)
KAFKA_CONSUME_BATCH = Target("Kafka batch consume vs aiokafka getmany", 1.0, ">= 1.0x", issue=24)
CODEC_ENCODE = Target("Codec encode + metadata vs msgspec + uuid4 + RFC 3339 time", 2.5, ">= 2.5x")
CODEC_DECODE = Target("Codec decode + validate vs msgspec", 1 / 1.1, "within 1.1x")
RSS = {
    transport: Target(f"RSS growth 10k -> 200k msgs, {transport}", 5.0, "< 5 MiB", limit=True)
    for transport in ("memory", "rabbitmq", "http", "kafka")
}
TARGETS: list[Target] = [
    RMQ_CONSUME,
    RMQ_CONSUME_NO_ACK,
    RMQ_PUBLISH_CONCURRENT,
    RMQ_PUBLISH_MANY,
    RMQ_SEQUENTIAL,
    RMQ_LATENCY,
    *HTTP_SEND.values(),
    *HTTP_REQUEST.values(),
    KAFKA_PRODUCE_CONCURRENT,
    KAFKA_PRODUCE_MANY,
    KAFKA_CONSUME_RECORD,
    KAFKA_CONSUME_BATCH,
    CODEC_ENCODE,
    CODEC_DECODE,
    *RSS.values(),
]


@dataclass
class Contender:
    name: str
    run: Workload
    goal: float | None = None  # this contender's target ratio, where it differs from the case's
    target: Target | None = None  # the target this ratio is (its goal wins)
    rates: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


@dataclass
class Case:
    name: str
    ours: Contender
    theirs: list[Contender]
    note: str = "(reported)"  # the target column of contenders without a goal
    unit: str = "msg/s"  # "msg/s", "req/s", "s" (latency: seconds per operation) or "MiB"
    lower_is_better: bool = False  # latency and memory cases
    goal: float | None = None  # the ratio contenders without a goal of their own must reach
    limit: float | None = None  # no contenders: met when the value is <= limit
    target: Target | None = None  # no contenders: the target (a limit) this case is
    rounds: int | None = None  # overrides the run's rounds (e.g. 1 for a long memory case)
    setup: Hook | None = None  # untimed, once before the rounds (connections, queues)
    teardown: Hook | None = None  # once after, also when a round failed (delete queues)
    loop: str = ""  # the event loop the case ran on (set by benchmarks.run)
    error: str | None = None  # why the case stopped early, if it did
    seconds: float = 0.0  # wall time of the whole case, setup and teardown included

    def __post_init__(self) -> None:
        if self.target is not None and self.limit is None:
            self.limit = self.target.goal

    @property
    def label(self) -> str:
        return f"{self.name} [{self.loop}]" if self.loop else self.name

    def ratios(self, other: Contender) -> list[float]:
        """The ratio of every round: ours in round i against `other` in round i."""
        found = []
        for ours, theirs in zip(self.ours.rates, other.rates, strict=False):
            top, bottom = (theirs, ours) if self.lower_is_better else (ours, theirs)
            found.append(top / bottom if bottom else math.inf)
        return found

    def ratio(self, other: Contender) -> float:
        """The median of the per-round ratios (nan when no round completed)."""
        ratios = self.ratios(other)
        return statistics.median(ratios) if ratios else math.nan

    def goal_of(self, other: Contender) -> float | None:
        if other.target is not None:
            return other.target.goal
        return other.goal if other.goal is not None else self.goal

    def met(self, other: Contender | None) -> bool | None:
        """Whether the goal is reached (None: no goal, or no data)."""
        if other is None:
            if self.limit is None or not self.ours.rates:
                return None
            return self.ours.median <= self.limit
        goal = self.goal_of(other)
        ratio = self.ratio(other)
        if goal is None or math.isnan(ratio):
            return None
        return ratio >= goal

    def goal_text(self, other: Contender | None) -> str:
        if other is None:
            if self.target is not None:
                return self.target.text
            return self.note if self.limit is None else f"<= {self.limit:g} {self.unit}"
        if other.target is not None:
            return other.target.text
        goal = self.goal_of(other)
        # Goals that are not a Target's come from issue #6 (FastStream, pydantic).
        return self.note if goal is None else f">= {goal:g}x (#6)"


LOOPS = ("asyncio", "uvloop")


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A new event loop of the kind named (`asyncio` or `uvloop`)."""
    if loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    if loop != "asyncio":
        raise ValueError(f"unknown event loop {loop!r}: one of {', '.join(LOOPS)}")
    return asyncio.new_event_loop


def running_loop() -> str:
    """The kind of the running event loop (`asyncio` or `uvloop`)."""
    return (
        "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
    )


async def time_ops(ops: int, body: Callable[[], Awaitable[None]]) -> tuple[int, float]:
    """Time one run of `body`, which performs `ops` operations."""
    started = time.perf_counter()
    await body()
    return ops, time.perf_counter() - started


async def run_case(case: Case, rounds: int) -> None:
    """Run the case's rounds; a failure is recorded in `case.error` (the rounds done stay)."""
    contenders = [case.ours, *case.theirs]
    started = time.perf_counter()
    try:
        if case.setup is not None:
            await case.setup()
        try:
            for round_ in range(rounds if case.rounds is None else case.rounds):
                # Alternate the order each round so drift on this shared machine hits all alike.
                order = contenders if round_ % 2 == 0 else list(reversed(contenders))
                done: list[tuple[Contender, float]] = []
                for contender in order:
                    gc.collect()  # untimed: see the module's docstring
                    ops, seconds = await contender.run()
                    done.append(
                        (contender, seconds / ops if case.lower_is_better else ops / seconds)
                    )
                # Only whole rounds count, so that round i of every contender pairs up.
                for contender, value in done:
                    contender.rates.append(value)
        finally:
            if case.teardown is not None:
                await case.teardown()
    except Exception as exc:
        case.error = f"{type(exc).__name__}: {exc}"
        print(f"  FAILED: {case.error}", flush=True)
        traceback.print_exc()
    finally:
        case.seconds = time.perf_counter() - started


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "streamtools",
        "msgspec",
        "aiohttp",
        "aio-pika",
        "aiormq",
        "aiokafka",
        "uvloop",
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
    if not contender.rates:
        return "-"
    if len(contender.rates) == 1:
        return _fmt(contender.rates[0], case)
    return (
        f"{_fmt(contender.median, case)} "
        f"({_fmt(min(contender.rates), case)}-{_fmt(max(contender.rates), case)})"
    )


def _ratio_span(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def _met_text(met: bool | None, case: Case) -> str:
    if case.error is not None:
        return "FAILED"
    return {True: "yes", False: "NO", None: ""}[met]


def _record(contender: Contender) -> dict[str, object]:
    record: dict[str, object] = {
        "name": contender.name,
        "rates": contender.rates,
        "median": contender.median if contender.rates else None,
        "min": min(contender.rates, default=None),
        "max": max(contender.rates, default=None),
        "goal": contender.goal,
    }
    return record


@dataclass
class _Outcome:
    """One cell of the Targets table: a target on one loop."""

    case: Case
    contender: Contender | None

    def ratios(self) -> list[float]:
        if self.contender is None:
            return list(self.case.ours.rates)  # a limit: the values themselves
        return self.case.ratios(self.contender)

    def met(self) -> bool | None:
        return None if self.case.error is not None else self.case.met(self.contender)

    def text(self) -> str:
        values = self.ratios()
        if self.case.error is not None and not values:
            return "FAILED (no complete round)"
        span = _ratio_span(values) if self.contender else _span(self.case.ours, self.case)
        verdict = {True: "met", False: "NOT met", None: "FAILED"}[self.met()]
        if self.case.error is not None:
            verdict = f"FAILED after {len(values)} rounds"
        return f"{verdict}: {span}"

    def record(self) -> dict[str, object]:
        values = self.ratios()
        return {
            "case": self.case.name,
            "contender": None if self.contender is None else self.contender.name,
            "met": self.met(),
            "error": self.case.error,
            ("values" if self.contender is None else "ratios"): values,
            "median": statistics.median(values) if values else None,
            "min": min(values, default=None),
            "max": max(values, default=None),
        }


def _outcomes(cases: list[Case]) -> dict[Target, dict[str, _Outcome]]:
    """Each target's outcome per loop, from the cases that carry it."""
    found: dict[Target, dict[str, _Outcome]] = {}
    for case in cases:
        if case.target is not None and not case.theirs:
            found.setdefault(case.target, {}).setdefault(case.loop, _Outcome(case, None))
        for other in case.theirs:
            if other.target is not None:
                found.setdefault(other.target, {}).setdefault(case.loop, _Outcome(case, other))
    return found


def targets_table(cases: list[Case], loops: list[str], complete: bool) -> str:
    """The Targets table: one row per target (issues #14 and #24), a column per loop.

    With `complete` (an unfiltered run) a target that no case measured shows as not run.
    """
    outcomes = _outcomes(cases)
    loops = loops or [""]
    header = "| target | goal (issue) | " + " | ".join(loop or "result" for loop in loops) + " |"
    lines = [
        "Targets (median of the per-round ratios streamtools / raw, min-max over rounds):",
        "",
        header,
        "|---|---|" + "---|" * len(loops),
    ]
    for target in TARGETS:
        per_loop = outcomes.get(target)
        if per_loop is None and not complete:
            continue
        cells = []
        for loop in loops:
            outcome = (per_loop or {}).get(loop)
            cells.append("not run" if outcome is None else outcome.text())
        lines.append(f"| {target.label} | {target.text} | " + " | ".join(cells) + " |")
    verdicts = [o.met() for per_loop in outcomes.values() for o in per_loop.values()]
    lines.append("")
    lines.append(
        f"{sum(v is True for v in verdicts)} of {len(verdicts)} met"
        + (f" ({sum(v is None for v in verdicts)} failed)" if None in verdicts else "")
    )
    return "\n".join(lines)


def report(
    cases: list[Case],
    rounds: int,
    out: Path,
    *,
    loops: list[str] | None = None,
    complete: bool = True,
    settings: dict[str, object] | None = None,
) -> str:
    loops = loops or []
    lines = [
        f"Machine: {machine()}; rounds: {rounds} (A B A B alternating); "
        f"loops: {', '.join(loops) or 'asyncio'}",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
        "| case | streamtools (median, min-max) | contender | contender (median, min-max) "
        "| ratio (median of rounds, min-max) | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    records: list[dict[str, object]] = []
    for case in cases:
        base: dict[str, object] = {
            "case": case.name,
            "loop": case.loop,
            "unit": case.unit,
            "lower_is_better": case.lower_is_better,
            "error": case.error,
            "seconds": case.seconds,
            "streamtools": _record(case.ours),
        }
        if case.error is not None and not case.ours.rates:
            lines.append(f"| {case.label} | FAILED: {case.error} | | | | | FAILED |")
            records.append(base)
            continue
        if not case.ours.rates:
            continue  # a derived case whose source case did not run
        if not case.theirs:
            lines.append(
                f"| {case.label} | {_span(case.ours, case)} | - | - | - "
                f"| {case.goal_text(None)} | {_met_text(case.met(None), case)} |"
            )
            records.append(
                base
                | {
                    "target": case.goal_text(None),
                    "issue_14_target": None if case.target is None else case.target.label,
                    "limit": case.limit,
                    "met": case.met(None),
                }
            )
            continue
        for other in case.theirs:
            ratios = case.ratios(other)
            lines.append(
                f"| {case.label} | {_span(case.ours, case)} | {other.name} "
                f"| {_span(other, case)} | {_ratio_span(ratios)} | {case.goal_text(other)} "
                f"| {_met_text(case.met(other), case)} |"
            )
            records.append(
                base
                | {
                    "contender": _record(other),
                    "ratios": ratios,
                    "ratio": statistics.median(ratios) if ratios else None,
                    "ratio_min": min(ratios, default=None),
                    "ratio_max": max(ratios, default=None),
                    "goal": case.goal_of(other),
                    "target": case.goal_text(other),
                    "issue_14_target": None if other.target is None else other.target.label,
                    "met": case.met(other),
                }
            )
    failed = [case for case in cases if case.error is not None]
    if failed:
        lines.append("")
        lines.extend(f"FAILED: {case.label}: {case.error}" for case in failed)
    lines.append("")
    lines.append(targets_table(cases, loops, complete))
    outcomes = _outcomes(cases)
    targets = [
        {
            "target": target.label,
            "goal": target.goal,
            "goal_text": target.text,
            "limit": target.limit,
            "loops": {loop: o.record() for loop, o in outcomes.get(target, {}).items()},
        }
        for target in TARGETS
        if target in outcomes or complete
    ]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d", time.gmtime()),
                "machine": machine(),
                "versions": versions(),
                "rounds": rounds,
                "loops": loops,
                "settings": settings or {},
                "cases": records,
                "targets": targets,
            },
            indent=2,
            default=str,
        )
    )
    return text
