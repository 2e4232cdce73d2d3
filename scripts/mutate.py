"""Hand-made mutation check: each mutant is a plausible bug; the suite must catch every one.

Run with `make mutate`. For each mutant the file is changed in place, the tests that should
catch it run, and the file is restored (also on Ctrl-C). A mutant the tests do not catch is
"survived": the tests have a gap. Exits 1 when any mutant survives or the unmutated tests fail.

`python scripts/mutate.py WORDS...` runs only the mutants whose name contains one of WORDS
(case-insensitive), and only their tests unmutated first: e.g. `python scripts/mutate.py nack`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-W", "ignore"]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant(
        "backoff_delay ignores its maximum",
        "src/streamtools/_delivery.py",
        "ceiling = min(maximum, initial * 2.0 ** min(attempt - 1, 64))",
        "ceiling = initial * 2.0 ** min(attempt - 1, 64)",
        ("tests/test_delivery.py",),
    ),
    Mutant(
        "a_init races (no re-check under the lock)",
        "src/streamtools/_base.py",
        "            if not self._opened:\n                await self._open()",
        "            if True:\n                await self._open()",
        ("tests/test_delivery.py::test_concurrent_a_init_opens_once",),
    ),
    Mutant(
        "the original is acked before its retry copy is confirmed",
        "src/streamtools/_delivery.py",
        "                reply = await self._process(route, incoming.body, meta)",
        "                await incoming.settle()\n"
        "                reply = await self._process(route, incoming.body, meta)",
        ("tests/test_delivery.py::test_the_original_is_settled_only_after_its_copy_is_confirmed",),
    ),
    Mutant(
        "every message is delivered twice",
        "src/streamtools/transports/memory.py",
        "        await broker._put(self.queue.name, _Delivery(body, meta))",
        "        await broker._put(self.queue.name, _Delivery(body, meta))\n"
        "        await broker._put(self.queue.name, _Delivery(body, meta))",
        (
            "tests/conformance/test_conformance.py::test_publish_then_subscribe_delivers_all_intact[MemoryHandler]",
        ),
    ),
    Mutant(
        "close() marks closed but does not stop the consumer",
        "src/streamtools/_base.py",
        "            try:\n                await self._shutdown()",
        "            try:\n                pass",
        (
            "tests/conformance/test_conformance.py::test_concurrent_close_is_safe_and_idempotent[MemoryHandler]",
        ),
    ),
    Mutant(
        "a failing .dlq consumer dead-letters to .dlq.dlq",
        "src/streamtools/_delivery.py",
        "        self.dead_letter_queue = dead_letter_queue(name)",
        "        self.dead_letter_queue = f'{name}.dlq'",
        (
            "tests/conformance/test_conformance.py"
            "::test_failing_dead_letter_consumer_keeps_the_message_in_its_queue",
            "-k",
            "MemoryHandler or RMQIOHandler",
        ),
    ),
    Mutant(
        "the dead-letter headers lose x-original-queue",
        "src/streamtools/_delivery.py",
        '                "x-original-queue": self.queue.name,\n',
        "",
        (
            "tests/conformance/test_conformance.py::test_poison_message_is_dead_lettered_after_retry_limit[MemoryHandler]",
        ),
    ),
    Mutant(
        "the settle window acks past an unfinished head",
        "src/streamtools/_window.py",
        "            if self.spill is None or len(finished) < self.spill:\n                return",
        "            self.ready = max(self.ready, position)\n"
        "            if self.spill is None or len(finished) < self.spill:\n                return",
        ("tests/test_delivery.py::test_window_acks_exactly_the_finished_prefix",),
    ),
    Mutant(
        "internal failures requeue without end",
        "src/streamtools/_delivery.py",
        "        if count >= _MAX_INTERNAL_FAILURES:",
        "        if False:",
        ("tests/test_delivery.py::test_internal_failures_end_in_the_dead_letter_queue_not_a_loop",),
    ),
    Mutant(
        "a foreign attempt count is trusted",
        "src/streamtools/_delivery.py",
        "        if meta.attempt > self.max_retries + 1:",
        "        if False:",
        ("tests/test_delivery.py::test_a_foreign_attempt_count_is_clamped",),
    ),
    Mutant(
        "deeply nested JSON is an internal failure (RecursionError unmapped)",
        "src/streamtools/_codec.py",
        "        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:",
        "        except (msgspec.ValidationError, msgspec.DecodeError) as exc:",
        ("tests/test_binding.py", "tests/test_core.py"),
    ),
    Mutant(
        "the body-size check is off by one (streamed body)",
        "src/streamtools/transports/http/_body.py",
        "            if size > limit:",
        "            if size >= limit:",
        (
            "tests/transports/test_http.py::test_a_body_of_exactly_max_message_size_passes_one_more_byte_is_413",
        ),
    ),
    Mutant(
        "the body-size check is off by one (buffered body)",
        "src/streamtools/transports/http/_body.py",
        "    return body if len(body) <= limit else None",
        "    return body if len(body) < limit else None",
        (
            "tests/transports/test_http.py::test_a_body_of_exactly_max_message_size_passes_one_more_byte_is_413",
        ),
    ),
    Mutant(
        "the early 413 is removed (the body is read first)",
        "src/streamtools/transports/http/_consumer.py",
        "            if length is not None and length > self.max_body_size:",
        "            if False:",
        ("tests/transports/test_http.py::test_413_is_answered_before_the_upload_is_complete",),
    ),
    Mutant(
        "a foreign attempt header is trusted as is",
        "src/streamtools/_binding.py",
        "    return attempt if attempt >= 1 else 1",
        "    return attempt",
        ("tests/test_binding.py",),
    ),
    Mutant(
        "a reopened RabbitMQ channel is not subscribed again",
        "src/streamtools/transports/rabbitmq/_consumer.py",
        "                    channel.reopen_callbacks.add(self._on_reopen)",
        "                    pass",
        (
            "tests/transports/test_rabbitmq.py::"
            "test_a_consume_channel_closed_by_the_broker_is_reopened_and_subscribed_again",
        ),
    ),
    Mutant(
        "a nacked RabbitMQ publish is retried on the same channel (issue #20)",
        "src/streamtools/transports/rabbitmq/_link.py",
        '                        self._leave(underlay, "a publish was nacked")',
        "                        pass",
        ("tests/transports/test_rabbitmq_failover_matrix.py::test_failover_matrix[PL-shared]",),
    ),
    Mutant(
        "a subscription the broker cancelled (queue deleted) is not renewed",
        "src/streamtools/transports/rabbitmq/_consumer.py",
        "            on_consumer_cancel(underlay, self._on_cancel)",
        "            pass",
        (
            "tests/transports/test_rabbitmq.py::"
            "test_a_queue_deleted_under_a_running_consumer_comes_back_and_is_served",
        ),
    ),
    Mutant(
        "the middlewares run innermost first (issue #24)",
        "src/streamtools/_middleware.py",
        "    for middleware in reversed(middlewares):\n        if getattr(type(middleware), hook)",
        "    for middleware in middlewares:\n        if getattr(type(middleware), hook)",
        ("tests/test_middleware.py::test_order_is_the_list_order_outermost_first",),
    ),
    Mutant(
        "a RabbitMQ consumer's prefetch ignores limits.max_in_flight (issue #21)",
        "src/streamtools/_settings.py",
        '    "prefetch": ("limits", "max_in_flight"),',
        '    "prefetch": ("retry", "attempts"),',
        (
            "tests/test_delivery.py::test_an_old_keyword_still_works_for_one_release_with_a_warning_at_the_caller",
        ),
    ),
    Mutant(
        "a deleted .dlq or .retry queue is not declared again (issue #21)",
        "src/streamtools/transports/rabbitmq/_incoming.py",
        "            await link.declare(consumer._topology())\n            await publish()",
        "            await publish()",
        (
            "tests/transports/test_rabbitmq.py::"
            "test_a_dlq_deleted_under_a_running_consumer_is_declared_again",
        ),
    ),
)


def run(tests: tuple[str, ...]) -> bool:
    """Whether the tests pass."""
    done = subprocess.run([*PYTEST, *tests], cwd=ROOT, capture_output=True, timeout=600)
    return done.returncode == 0


def main(words: list[str]) -> int:
    started = time.monotonic()
    mutants = [m for m in MUTANTS if not words or any(w.lower() in m.name.lower() for w in words)]
    if not mutants:
        print(f"mutate: no mutant's name contains any of {words}", file=sys.stderr)
        return 1
    every = tuple(dict.fromkeys(t for m in mutants for t in m.tests if t.startswith("tests/")))
    if not run(every):
        print("mutate: the unmutated tests fail; fix them first", file=sys.stderr)
        return 1
    survived = []
    for mutant in mutants:
        path = ROOT / mutant.path
        original = path.read_text()
        if original.count(mutant.old) != 1:
            print(f"mutate: {mutant.name}: the code it mutates changed; update the mutant")
            survived.append(mutant)
            continue
        try:
            path.write_text(original.replace(mutant.old, mutant.new))
            caught = not run(mutant.tests)
        finally:
            path.write_text(original)
        print(f"{'killed  ' if caught else 'SURVIVED'} {mutant.name}")
        if not caught:
            survived.append(mutant)
    killed = len(mutants) - len(survived)
    print(f"mutation score: {killed}/{len(mutants)} killed in {time.monotonic() - started:.0f} s")
    return 1 if survived else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
