"""The core delivery pieces without a broker: backoff, the settle window, settings, lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamtools import (
    CONSUMER_LOOPS,
    PRODUCERS,
    Batch,
    ConfigurationError,
    Limits,
    Queue,
    RetryPolicy,
)
from streamtools._codec import Metadata, new_metadata
from streamtools._delivery import Incoming, QueuedConsumer, backoff_delay, dead_letter_queue
from streamtools._window import SettleWindow
from streamtools.transports.memory import MemoryBroker, MemoryConsumer, MemoryProducer
from tests.conftest import eventually, unique_name


class Point(msgspec.Struct):
    x: int


# -- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 10, 40, 2000])
def test_backoff_stays_within_its_ceiling_and_maximum(attempt: int) -> None:
    rnd = random.Random(attempt)
    random.seed(rnd.random())
    ceiling = min(4.0, 0.1 * 2 ** min(attempt - 1, 64))
    for _ in range(200):
        delay = backoff_delay(attempt, 0.1, 4.0)
        # Full jitter in the upper half: never early, never past the maximum.
        assert ceiling / 2 <= delay <= ceiling
        assert delay <= 4.0


def test_backoff_doubles_until_the_maximum() -> None:
    highest = [max(backoff_delay(n, 1.0, 10.0) for _ in range(300)) for n in range(1, 7)]
    assert highest[0] <= 1.0 < highest[1] <= 2.0 < highest[2] <= 4.0 < highest[3] <= 8.0
    assert all(h <= 10.0 for h in highest[4:])


def test_a_dead_letter_queue_keeps_its_own_failures() -> None:
    assert dead_letter_queue("orders") == "orders.dlq"
    assert dead_letter_queue("orders.dlq") == "orders.dlq"


# -- the settle window, against a model of RabbitMQ's acknowledgement rules ----------------


class _Broker:
    """What RabbitMQ allows: an ack (single or multiple) must name an outstanding tag."""

    def __init__(self, tags: list[int]) -> None:
        self.outstanding = set(tags)
        self.acked: set[int] = set()

    def reject(self, tag: int) -> None:
        self.outstanding.remove(tag)

    async def ack(self, tag: int, multiple: bool) -> None:
        if tag not in self.outstanding:
            raise AssertionError(f"ack of {tag} which is not outstanding: the channel closes")
        covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
        self.outstanding -= covered
        self.acked |= covered


@settings(max_examples=150, deadline=None)
@given(
    count=st.integers(1, 80),
    spill=st.sampled_from([None, 1, 3, 16]),
    seed=st.integers(0, 2**32),
    first=st.integers(0, 1),
    batch=st.sampled_from([1, 4, 32]),
)
def test_window_acks_exactly_the_finished_prefix(
    count: int, spill: int | None, seed: int, first: int, batch: int
) -> None:
    """Property: no unfinished or rejected delivery is ever acked, no ack is refused, and
    what stays unacked among the finished is only the tail behind an unfinished head."""
    rnd = random.Random(seed)
    tags = list(range(first, first + count))  # RabbitMQ tags start at 1, Kafka offsets at 0

    async def scenario() -> None:
        broker = _Broker(tags)
        window = SettleWindow(broker.ack, spill=spill, batch=batch, linger=0.001)
        for tag in tags:
            window.received(tag)
        order = tags[:]
        rnd.shuffle(order)
        done = order[: rnd.randint(0, count)]
        finished, rejected = set(), set()
        for tag in done:
            if spill is not None and rnd.random() < 0.15:
                broker.reject(tag)  # nacked on its own first, as the requeue hook does
                window.settled(tag, alone=True)
                rejected.add(tag)
            else:
                window.settled(tag)
                finished.add(tag)
            if rnd.random() < 0.3:
                await asyncio.sleep(0 if rnd.random() < 0.8 else 0.002)  # a linger may pass
        await window.close()
        unfinished = set(tags) - finished - rejected
        assert broker.acked <= finished
        assert not broker.acked & unfinished
        head = min(unfinished, default=None)
        prefix = {t for t in finished if head is None or t < head}
        assert prefix <= broker.acked  # the whole settled prefix went out
        left = finished - broker.acked
        if spill is not None:
            assert len(left) < spill

    asyncio.run(scenario())


async def test_window_sends_one_cumulative_ack_for_a_batch() -> None:
    calls: list[tuple[int, bool]] = []

    async def ack(tag: int, multiple: bool) -> None:
        calls.append((tag, multiple))

    window = SettleWindow(ack, spill=None)
    for tag in range(1, 11):
        window.received(tag)
    for tag in reversed(range(1, 11)):  # all finish in one loop iteration, out of order
        window.settled(tag)
    await window.close()
    assert calls == [(10, True)]


async def test_window_batches_acks_across_iterations_and_lingers_for_the_rest() -> None:
    calls: list[tuple[int, bool]] = []

    async def ack(tag: int, multiple: bool) -> None:
        calls.append((tag, multiple))

    window = SettleWindow(ack, spill=None, batch=4, linger=0.05)
    for tag in range(1, 11):
        window.received(tag)
    for tag in range(1, 4):  # three, each in a loop iteration of its own: below the batch
        window.settled(tag)
        await asyncio.sleep(0)
    assert calls == []
    window.settled(4)  # the fourth makes a batch: out at once
    await asyncio.sleep(0.001)
    assert calls == [(4, True)]
    window.settled(5)  # one more: it waits for the linger, not for a batch that never comes
    await asyncio.sleep(0.001)
    assert calls == [(4, True)]
    await asyncio.sleep(0.1)
    assert calls == [(4, True), (5, True)]
    window.settled(6)
    await window.close()  # close sends what is left without waiting for the linger
    assert calls == [(4, True), (5, True), (6, True)]


async def test_a_failed_batched_ack_is_not_retried_in_a_loop() -> None:
    calls: list[int] = []

    async def ack(tag: int, multiple: bool) -> None:
        calls.append(tag)
        raise ConnectionError("channel closed")

    window = SettleWindow(ack, spill=None, batch=2, linger=0.001)
    for tag in range(1, 4):
        window.received(tag)
    window.settled(1)
    window.settled(2)
    await asyncio.sleep(0.05)
    assert calls == [2]  # tried once; the next settlement sends it again
    window.settled(3)
    await asyncio.sleep(0.05)
    assert calls == [2, 3]


# -- settings: one checker, one message style ------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "setting", "value", "message"),
    [
        ("RMQIOHandler", "retry", 3, "RabbitMQConsumer: retry must be a RetryPolicy, got 3"),
        ("MemoryHandler", "limits", {}, "MemoryConsumer: limits must be a Limits, got {}"),
        ("RMQIOHandler", "queue_type", "stream", "queue_type must be 'quorum' or 'classic'"),
        ("RMQIOHandler", "connect_timeout", float("nan"), "connect_timeout must be seconds > 0"),
        (
            "KafkaHandler",
            "idempotence",
            "yes",
            "KafkaConsumer: idempotence must be True, False or None",
        ),
        (
            "KafkaHandler",
            "session_timeout",
            0,
            "KafkaConsumer: session_timeout must be seconds > 0",
        ),
    ],
)
def test_a_bad_setting_names_the_class_the_setting_and_the_value(
    transport: str, setting: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        CONSUMER_LOOPS[transport]("orders", **{setting: value})


@pytest.mark.parametrize("transport", ["MemoryHandler", "RMQIOHandler", "HTTPHandler"])
def test_a_keyword_the_transport_does_not_take_is_a_configuration_error(transport: str) -> None:
    with pytest.raises(
        ConfigurationError, match=r"takes no setting nonsense; it accepts: "
    ) as info:
        PRODUCERS[transport]("orders", nonsense=1)
    assert transport in str(info.value)
    with pytest.raises(ConfigurationError, match="takes no setting nonsense"):
        CONSUMER_LOOPS[transport]("orders", nonsense=1)


@pytest.mark.parametrize(
    ("transport", "old", "value", "new"),
    [
        ("MemoryHandler", "max_retries", 5, "retry=RetryPolicy(attempts=5)"),
        ("MemoryHandler", "max_in_flight", 2, "limits=Limits(max_in_flight=2)"),
        ("RMQIOHandler", "prefetch", 8, "limits=Limits(max_in_flight=8)"),
        ("RMQIOHandler", "retry_delay", 0.5, "retry=RetryPolicy(delay=0.5)"),
        ("KafkaHandler", "max_retry_delay", 9.0, "retry=RetryPolicy(max_delay=9.0)"),
        ("KafkaHandler", "max_message_size", 10, "limits=Limits(max_message_size=10)"),
        ("HTTPHandler", "max_body_size", 10, "limits=Limits(max_message_size=10)"),
        ("HTTPHandler", "max_in_flight", 7, "limits=Limits(max_in_flight=7)"),
    ],
)
def test_an_old_keyword_still_works_for_one_release_with_a_warning_at_the_caller(
    transport: str, old: str, value: object, new: str
) -> None:
    with pytest.warns(DeprecationWarning, match=r"is deprecated") as record:
        consumer = CONSUMER_LOOPS[transport]("orders", **{old: value})
    [warning] = record
    cls = type(consumer).__name__
    assert str(warning.message) == f"{cls}: {old}= is deprecated, pass {new} instead"
    assert warning.filename == __file__  # points at the user's constructor call
    field = new.split("(")[1].split("=")[0]
    holder = getattr(consumer, new.split("=")[0])  # .retry or .limits
    assert getattr(holder, field) == value


@pytest.mark.parametrize(
    ("old", "value", "new", "attribute", "expected"),
    [
        ("timeout", 5.0, "send_timeout=5.0", "send_timeout", 5.0),
        ("retries", 7, "resend=RetryPolicy(attempts=7)", "resend", RetryPolicy(7, 0.1, 5.0)),
        ("retry_backoff", 0.5, "resend=RetryPolicy(delay=0.5)", "resend", RetryPolicy(3, 0.5, 5.0)),
        (
            "max_retry_backoff",
            9,
            "resend=RetryPolicy(max_delay=9)",
            "resend",
            RetryPolicy(3, 0.1, 9),
        ),
    ],
)
def test_the_http_producers_old_keywords_still_work_with_a_warning_at_the_caller(
    old: str, value: object, new: str, attribute: str, expected: object
) -> None:
    with pytest.warns(DeprecationWarning, match=r"is deprecated") as record:
        producer = PRODUCERS["HTTPHandler"]("orders", **{old: value})
    [warning] = record
    assert str(warning.message) == f"HTTPProducer: {old}= is deprecated, pass {new} instead"
    assert warning.filename == __file__
    assert getattr(producer, attribute) == expected


def test_rabbitmq_refuses_http_settings_with_the_list_it_takes() -> None:
    with pytest.raises(ConfigurationError) as info:
        PRODUCERS["RMQIOHandler"]("orders", port=9000)
    assert "takes no setting port" in str(info.value)
    assert "send_timeout" in str(info.value)
    assert "url" in str(info.value)


# -- lifecycle ------------------------------------------------------------------------------


class _CountingProducer(MemoryProducer[Any]):
    opens = 0

    async def _open(self) -> None:
        await asyncio.sleep(0.01)  # a real transport awaits its connection here
        type(self).opens += 1
        await super()._open()


async def test_concurrent_a_init_opens_once() -> None:
    producer = _CountingProducer(unique_name())
    await asyncio.gather(*(producer.a_init() for _ in range(5)))
    await asyncio.gather(*(producer.send({"n": n}) for n in range(3)))
    assert _CountingProducer.opens == 1
    await producer.close()


async def test_send_many_sends_all_in_order_on_every_base_producer() -> None:
    broker = MemoryBroker()
    name = unique_name()
    producer = MemoryProducer(Queue(name, Point), broker=broker)
    got: list[tuple[int, Metadata]] = []
    consumer = MemoryConsumer(Queue(name, Point), broker=broker)

    @consumer()
    async def handle(msg: Point) -> None:
        from streamtools import current_metadata

        got.append((msg.x, current_metadata()))

    async with producer:
        ids = await producer.send_many([Point(x=n) for n in range(20)])
        await consumer.start()
        for _ in range(200):
            if len(got) == 20:
                break
            await asyncio.sleep(0.01)
        await consumer.close()
    assert len(ids) == len(set(ids)) == 20
    assert sorted(x for x, _ in got) == list(range(20))
    assert {meta.id for _, meta in got} == set(ids)


async def test_send_many_names_what_was_not_accepted() -> None:
    producer = MemoryProducer(unique_name(), broker=MemoryBroker())
    async with producer:
        with pytest.raises(ConfigurationError, match="takes no options"):
            await producer.send_many([{"a": 1}], priority=1)
    with pytest.raises(ConfigurationError, match="is closed"):
        await producer.send_many([{"a": 1}])


# -- the policy's order of hooks, on a recording Incoming --------------------------------


class _Recorded(Incoming):
    """An Incoming that records the policy's calls; `fail` names targets whose copy fails."""

    def __init__(self, meta: Metadata, fail: set[str], calls: list[str]) -> None:
        super().__init__(b'{"x": 1}', meta)
        self.fail = fail
        self.calls = calls

    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        self.calls.append(f"publish {target} attempt={meta.attempt}")
        if target in self.fail:
            raise RuntimeError(f"the broker refused the copy to {target}")

    async def settle(self) -> None:
        self.calls.append("settle")

    async def requeue(self) -> None:
        self.calls.append("requeue")


class _PolicyOnly(QueuedConsumer[Any]):
    """The core policy with no transport under it: messages are fed with `_accept`."""

    transport = "test"
    capabilities = MemoryConsumer.capabilities

    async def _open(self) -> None:
        pass

    async def _start(self) -> None:
        pass

    async def _stop_intake(self) -> None:
        pass

    async def _close(self) -> None:
        pass


def _policy(handler_fails: bool, **settings: Any) -> _PolicyOnly:
    consumer = _PolicyOnly(Queue("orders", Point), **{"retry": RetryPolicy(delay=0.0), **settings})

    @consumer()
    async def handle(msg: Point) -> None:
        if handler_fails:
            raise ValueError("handler fails")

    return consumer


async def _feed(consumer: _PolicyOnly, incoming: Incoming) -> None:
    consumer._accept(incoming)
    await consumer._idle.wait()


async def test_the_original_is_settled_only_after_its_copy_is_confirmed() -> None:
    calls: list[str] = []
    consumer = _policy(True, retry=RetryPolicy(attempts=2, delay=0.0))
    meta = new_metadata("Point", "//test")
    await _feed(consumer, _Recorded(meta, {"orders"}, calls))
    # The retry copy failed: the original is requeued, never settled.
    assert calls == ["publish orders attempt=2", "requeue"]
    calls.clear()
    await _feed(consumer, _Recorded(meta, set(), calls))
    assert calls == ["publish orders attempt=2", "settle"]


async def test_internal_failures_end_in_the_dead_letter_queue_not_a_loop() -> None:
    calls: list[str] = []
    consumer = _policy(True, retry=RetryPolicy(attempts=2, delay=0.0))
    meta = new_metadata("Point", "//test")
    for _ in range(3):  # the same message, redelivered after each requeue
        await _feed(consumer, _Recorded(meta, {"orders"}, calls))
    assert calls == [
        "publish orders attempt=2",
        "requeue",
        "publish orders attempt=2",
        "requeue",
        "publish orders attempt=2",
        "publish orders.dlq attempt=1",
        "settle",
    ]


async def test_a_foreign_attempt_count_is_clamped() -> None:
    calls: list[str] = []
    consumer = _policy(True, retry=RetryPolicy(attempts=2, delay=0.0))
    meta = msgspec.structs.replace(new_metadata("Point", "//test"), attempt=10**12)
    incoming = _Recorded(meta, set(), calls)
    await _feed(consumer, incoming)
    assert calls == ["publish orders.dlq attempt=1", "settle"]
    assert incoming.meta.attempt == 3  # attempts + 1: dead-lettered, with x-attempts 3


async def test_a_message_over_max_message_size_is_dead_lettered_undecoded() -> None:
    calls: list[str] = []
    consumer = _policy(False, limits=Limits(max_message_size=4))
    await _feed(consumer, _Recorded(new_metadata("Point", "//test"), set(), calls))
    assert calls == ["publish orders.dlq attempt=1", "settle"]


def test_message_ids_are_unguessable_and_unique() -> None:
    ids = [new_metadata("T", "//s").id for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    # No shared prefix or counter: neighbours agree on about 1 of 16 hex digits by chance.
    same = sum(a[k] == b[k] for a, b in itertools.pairwise(ids) for k in range(32))
    assert same < 2000 * 32 / 16 * 1.5


async def test_a_batch_handler_that_empties_its_list_and_raises_fails_every_message() -> None:
    # The handler is given the batch's own list: what it does to the list must not change
    # which messages failed (none may be left unsettled).
    broker, queue = MemoryBroker(), Queue(unique_name("st-batch-clear"), Point)
    consumer = MemoryConsumer(queue, broker=broker, retry=RetryPolicy(attempts=0))
    dead: list[int] = []

    @consumer(batch=Batch(max_size=3, max_wait=5.0))
    async def handle(batch: list[Point]) -> None:
        batch.clear()
        raise RuntimeError("gave up")

    dlq = MemoryConsumer(Queue(dead_letter_queue(queue.name), Point), broker=broker)

    @dlq()
    async def collect(msg: Point) -> None:
        dead.append(msg.x)

    await consumer.start()
    await dlq.start()
    try:
        producer = MemoryProducer(queue, broker=broker)
        for n in range(3):
            await producer.send(Point(n))
        await eventually(lambda: len(dead) == 3, "the three dead letters", timeout=10)
    finally:
        await consumer.close()
        await dlq.close()
    assert sorted(dead) == [0, 1, 2]
