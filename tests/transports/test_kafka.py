"""Kafka-only behaviour against a real broker (the bundled Tansu, or `KAFKA_BOOTSTRAP_SERVERS`):
per-key order under concurrency, consumer groups (fan-out and sharing), dead-lettering with
its headers, interop both ways with plain aiokafka and the CloudEvents SDK's Kafka binding,
settings and send options.

Group joins are slow (seconds): each test starts as few consumers as it can, and checks
that reach the broker without a group (the DLQ, interop reads) use a plain consumer on
assigned partitions. Every topic a test creates has a unique name and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]
from cloudevents.core.bindings import kafka as ce_kafka

from streamtools import (
    CONSUMER_LOOPS,
    KAFKA,
    PRODUCERS,
    Consumer,
    Limits,
    Queue,
    RetryPolicy,
    current_metadata,
)
from streamtools._binding import DEAD_LETTER_HEADERS
from streamtools._codec import Metadata
from streamtools.errors import ConfigurationError, ConnectError, PublishError, StreamtoolsError
from streamtools.transports.kafka import KafkaConsumer, KafkaProducer
from tests.conftest import free_port, unique_name

WAIT = 60.0  # bound for every wait (a group join takes ~5-15 s); never a timing threshold
CONSUMER = {"session_timeout": 6, "shutdown_timeout": 10, "connect_timeout": 10}


class Order(msgspec.Struct, kw_only=True):
    seq: int
    key: str = ""
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")] = "ABC-123"


# --- helpers ---------------------------------------------------------------------------------


async def delete_topics(servers: str, names: list[str]) -> None:
    """Delete each topic and its `.dlq` (missing ones are fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        gone = [t for name in names for t in (name, f"{name}.dlq") if t in existing]
        if gone:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[Callable[[str], str]]:
    """`topics("label")` gives a unique topic name; all of them (and their .dlq) are
    deleted after the test."""
    made: list[str] = []

    def make(label: str = "t") -> str:
        made.append(unique_name(f"st-kafka-{label}"))
        return made[-1]

    yield make
    await delete_topics(kafka_bootstrap, made)


def consumer_for(topic: str, servers: str, **settings: Any) -> KafkaConsumer[Order]:
    consumer = CONSUMER_LOOPS[KAFKA](
        Queue(topic, Order), bootstrap_servers=servers, **{**CONSUMER, **settings}
    )
    assert isinstance(consumer, KafkaConsumer)
    return consumer


def producer_for(topic: str, servers: str, **settings: Any) -> KafkaProducer[Order]:
    producer = PRODUCERS[KAFKA](Queue(topic, Order), bootstrap_servers=servers, **settings)
    assert isinstance(producer, KafkaProducer)
    return producer


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - polling a plain predicate
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")


def assigned(consumer: Consumer[Any]) -> int:
    """How many partitions the group gave this Kafka member (0 while it joins)."""
    return len(getattr(consumer, "_partitions", ()))


async def read_records(servers: str, topic: str, count: int) -> list[Any]:
    """`count` records of `topic` from the start, read by a plain aiokafka consumer on
    assigned partitions (no group, no commit), in partition then offset order."""
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False)
    records: list[Any] = []
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata partitions_for_topic reads
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        async with asyncio.timeout(WAIT):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for tp in sorted(batches, key=lambda tp: tp.partition):
                    records.extend(batches[tp])
        return sorted(records, key=lambda r: (r.partition, r.offset))
    except TimeoutError:
        pytest.fail(f"only {len(records)} of {count} records arrived in {topic}")
    finally:
        await consumer.stop()


async def committed_offsets(servers: str, group: str, topic: str) -> dict[int, int | None]:
    """The offsets `group` committed on each partition of `topic` (None where it has none),
    read with an OffsetFetch: the probe does not join the group."""
    probe = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await probe.start()
    try:
        await probe.topics()  # fetches the metadata partitions_for_topic reads
        partitions = sorted(probe.partitions_for_topic(topic) or ())
        return {p: await probe.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        with contextlib.suppress(Exception):
            await probe.stop()


def headers_of(record: Any) -> dict[str, str]:
    return {key: value.decode() for key, value in record.headers or ()}


async def plain_send(
    servers: str, topic: str, records: list[tuple[bytes, list[tuple[str, bytes]]]]
) -> None:
    """Produce (value, headers) records with a plain aiokafka producer, as a foreign service."""
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all")
    await producer.start()
    try:
        for value, headers in records:
            await producer.send_and_wait(topic, value, headers=headers)
    finally:
        await producer.stop()


# --- per-key order ---------------------------------------------------------------------------


async def test_per_key_order_holds_under_concurrency(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    """Within a key strictly in send order, one at a time; across keys concurrently."""
    topic = topics("order")
    keys = [f"k{n}" for n in range(12)]
    per_key = 25
    handled: dict[str, list[int]] = {key: [] for key in keys}
    running: dict[str, int] = dict.fromkeys(keys, 0)
    overlap = {"keys_at_once": 0, "same_key_at_once": 0}

    consumer = consumer_for(topic, kafka_bootstrap, limits=Limits(max_in_flight=32))

    @consumer()
    async def handle(msg: Order) -> None:
        running[msg.key] += 1
        overlap["same_key_at_once"] = max(overlap["same_key_at_once"], running[msg.key])
        overlap["keys_at_once"] = max(
            overlap["keys_at_once"], sum(1 for n in running.values() if n)
        )
        await asyncio.sleep(random.uniform(0, 0.01))
        running[msg.key] -= 1
        handled[msg.key].append(msg.seq)

    producer = producer_for(topic, kafka_bootstrap)
    try:
        await producer.a_init()
        await consumer.start()

        async def send_key(key: str) -> None:
            for seq in range(per_key):  # in order within the key, awaited one by one
                await producer.send(Order(seq=seq, key=key), key=key)

        await asyncio.gather(*(send_key(key) for key in keys))
        await wait_until(
            lambda: all(len(seqs) >= per_key for seqs in handled.values()),
            "every message of every key",
        )
    finally:
        await producer.close()
        await consumer.close()
    print(f"\nper-key order: {len(keys)} keys x {per_key}, concurrency seen {overlap}")
    assert handled == {key: list(range(per_key)) for key in keys}
    assert overlap["same_key_at_once"] == 1, "two messages of one key ran at once"
    assert overlap["keys_at_once"] > 1, "handlers of different keys never overlapped"


# --- consumer groups -------------------------------------------------------------------------


async def test_two_groups_fan_out_and_one_group_shares(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    topic = topics("groups")
    seen: dict[str, list[int]] = {"a1": [], "a2": [], "b": []}
    consumers: dict[str, KafkaConsumer[Order]] = {}
    for name, group in (("a1", "a"), ("a2", "a"), ("b", "b")):
        consumer = consumer_for(topic, kafka_bootstrap, group=f"{topic}-{group}")

        @consumer()
        async def handle(msg: Order, name: str = name) -> None:
            seen[name].append(msg.seq)

        consumers[name] = consumer
    count = 120
    producer = producer_for(topic, kafka_bootstrap, partitions=4)
    try:
        await producer.a_init()  # the topic, with 4 partitions: 2 for each member of group a
        await asyncio.gather(*(c.start() for c in consumers.values()))
        await wait_until(
            lambda: (
                assigned(consumers["a1"]) + assigned(consumers["a2"]) == 4
                and assigned(consumers["a1"]) > 0
                and assigned(consumers["a2"]) > 0
                and assigned(consumers["b"]) == 4
            ),
            "both groups formed (a: two members sharing 4 partitions; b: one member)",
        )
        await producer.send_many([Order(seq=seq, key=f"k{seq}") for seq in range(count)])
        await wait_until(
            lambda: len(seen["a1"]) + len(seen["a2"]) >= count and len(seen["b"]) >= count,
            "every message in both groups",
        )
        await asyncio.sleep(0.5)  # a duplicate would arrive now
    finally:
        await producer.close()
        await asyncio.gather(*(c.close() for c in consumers.values()))
    everything = list(range(count))
    shares = {name: len(seqs) for name, seqs in seen.items()}
    print(f"\ngroups: {count} sent; handled per member {shares}")
    assert sorted(seen["b"]) == everything, "group b did not get every message exactly once"
    assert sorted(seen["a1"] + seen["a2"]) == everything, "group a handled one not exactly once"
    assert seen["a1"], "member a1 got nothing: no sharing"
    assert seen["a2"], "member a2 got nothing: no sharing"


# --- dead-lettering --------------------------------------------------------------------------


async def test_poison_and_invalid_go_to_dlq_with_headers(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    topic = topics("dlq")
    attempts: dict[int, int] = {}
    ok: list[int] = []
    consumer = consumer_for(topic, kafka_bootstrap, retry=RetryPolicy(attempts=2, delay=0.02))

    @consumer()
    async def handle(msg: Order) -> None:
        if msg.seq < 0:
            attempts[msg.seq] = attempts.get(msg.seq, 0) + 1
            raise ValueError(f"poison {msg.seq}")
        ok.append(msg.seq)

    producer = producer_for(topic, kafka_bootstrap)
    try:
        poison_id = await producer.send(Order(seq=-1), key="p")
        await plain_send(
            kafka_bootstrap,
            topic,
            [
                (b"{not json", [("ce_id", b"malformed-1")]),  # does not decode
                (b'{"seq": 1, "sku": "lowercase"}', [("ce_id", b"invalid-1")]),  # schema
            ],
        )
        await producer.send(Order(seq=7))
        await consumer.start()
        await wait_until(lambda: ok == [7] and attempts.get(-1) == 3, "the poison's 3 attempts")
        records = await read_records(kafka_bootstrap, f"{topic}.dlq", 3)
    finally:
        await producer.close()
        await consumer.close()

    by_id = {headers_of(r)["ce_id"]: r for r in records}
    assert set(by_id) == {poison_id, "malformed-1", "invalid-1"}
    poison = headers_of(by_id[poison_id])
    print(f"\npoison on the DLQ, read by a plain consumer: {poison}")
    assert set(DEAD_LETTER_HEADERS) <= set(poison)
    assert poison["x-death-reason"] == "max-retries"
    assert poison["x-error-type"] == "ValueError"
    assert poison["x-error-message"] == "poison -1"
    assert poison["x-attempts"] == "3"
    assert poison["x-original-queue"] == topic
    assert poison["ce_type"] == "Order"
    assert poison["content-type"] == "application/json"
    assert "x-streamtools-attempt" not in poison  # reset to 1 on the DLQ
    assert by_id[poison_id].key == b"p"  # the copy keeps the record key
    assert msgspec.json.decode(by_id[poison_id].value, type=Order) == Order(seq=-1)
    for ident, error_type in (("malformed-1", "DecodeError"), ("invalid-1", "ValidationError")):
        headers = headers_of(by_id[ident])
        assert headers["x-death-reason"] == "invalid", headers
        assert headers["x-error-type"] == error_type, headers
        assert headers["x-attempts"] == "1"
        assert headers["x-original-queue"] == topic
        assert headers["x-error-message"]
    assert by_id["malformed-1"].value == b"{not json"  # the body as it came


# --- interop ---------------------------------------------------------------------------------


async def test_foreign_records_reach_a_typed_handler(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    """A plain aiokafka producer's JSON records, with and without ce_ headers."""
    topic = topics("foreign")
    got: list[tuple[Order, Metadata]] = []
    consumer = consumer_for(topic, kafka_bootstrap)

    @consumer()
    async def handle(msg: Order) -> None:
        got.append((msg, current_metadata()))

    # The consumer creates the topic (and its .dlq) on a_init.
    await consumer.a_init()
    ce_headers = [
        ("ce_id", b"their-1"),
        ("ce_type", b"com.example.order"),
        ("ce_source", b"//their/service"),
        ("ce_specversion", b"1.0"),
        ("ce_time", b"2024-05-01T12:00:00Z"),
        ("content-type", b"application/json"),
        ("x-tenant", b"acme"),
    ]
    try:
        await plain_send(
            kafka_bootstrap,
            topic,
            [(b'{"seq": 1, "key": "with"}', ce_headers), (b'{"seq": 2, "key": "bare"}', [])],
        )
        await consumer.start()
        await wait_until(lambda: len(got) >= 2, "both foreign records")
    finally:
        await consumer.close()
    by_seq = {msg.seq: (msg, meta) for msg, meta in got}
    assert by_seq[1][0] == Order(seq=1, key="with")
    meta = by_seq[1][1]
    assert (meta.id, meta.type, meta.source) == ("their-1", "com.example.order", "//their/service")
    assert meta.time == "2024-05-01T12:00:00Z"
    assert meta.headers == {"x-tenant": "acme"}
    assert by_seq[2][0] == Order(seq=2, key="bare")
    bare = by_seq[2][1]
    assert bare.id  # made up by the binding: the record's position
    assert bare.type == "Order"  # the consumer's message type
    assert bare.time.endswith("Z")  # the record's timestamp
    assert bare.content_type == "application/json"


async def test_our_records_read_by_plain_aiokafka_and_cloudevents_sdk(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    topic = topics("ours")
    async with producer_for(topic, kafka_bootstrap, source="//test/orders") as producer:
        ident = await producer.send(
            Order(seq=5, key="o-5"), key="o-5", headers={"x-tenant": "acme"}
        )
    (record,) = await read_records(kafka_bootstrap, topic, 1)
    headers = headers_of(record)
    # The plain client's view: the value is the message's JSON alone, attributes in headers.
    assert msgspec.json.decode(record.value) == {"seq": 5, "key": "o-5", "sku": "ABC-123"}
    assert record.key == b"o-5"
    assert headers["ce_id"] == ident
    assert headers["ce_type"] == "Order"
    assert headers["ce_source"] == "//test/orders"
    assert headers["ce_specversion"] == "1.0"
    assert headers["ce_time"]
    assert headers["content-type"] == "application/json"
    assert headers["x-tenant"] == "acme"
    # The CloudEvents SDK's Kafka binding reads the same event.
    event = ce_kafka.from_binary_event(
        ce_kafka.KafkaMessage(
            headers={key: value for key, value in record.headers},
            key=record.key,
            value=record.value,
        )
    )
    assert event.get_id() == ident
    assert event.get_type() == "Order"
    assert event.get_source() == "//test/orders"
    assert event.get_specversion() == "1.0"
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == {"seq": 5, "key": "o-5", "sku": "ABC-123"}
    assert event.get_time() is not None
    assert event.get_extension("partitionkey") == "o-5"


# --- settings and send options -----------------------------------------------------------------


@pytest.mark.parametrize("cls", [KafkaProducer, KafkaConsumer])
def test_settings_errors_are_configuration_errors(cls: type[Any]) -> None:
    with pytest.raises(ConfigurationError, match="bootstrap_servers"):
        cls("q", message_type=Order, bootstrap_servers="nohost")
    with pytest.raises(ConfigurationError, match="password"):
        cls("q", message_type=Order, sasl_mechanism="PLAIN", sasl_username="svc")
    with pytest.raises(ConfigurationError, match="mechanism"):
        cls("q", message_type=Order, sasl_password="hunter2-secret")
    with pytest.raises(ConfigurationError, match="sasl_mechanism"):
        cls("q", message_type=Order, sasl_mechanism="GSSAPI", sasl_username="u", sasl_password="p")
    with pytest.raises(ConfigurationError, match="partitions"):
        cls("q", message_type=Order, partitions=0)
    with pytest.raises(ConfigurationError, match="no setting"):
        cls("q", message_type=Order, url="amqp://x")


async def test_sasl_password_never_in_repr_or_errors(kafka_bootstrap: str) -> None:
    secret = "s3cr3t-Pa55w0rd"
    settings: dict[str, Any] = {
        "bootstrap_servers": kafka_bootstrap,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "svc",
        "sasl_password": secret,
        "connect_timeout": 3,
    }
    producer = KafkaProducer("st-kafka-sasl", message_type=Order, **settings)
    consumer = KafkaConsumer("st-kafka-sasl", message_type=Order, **settings)
    texts = [repr(producer), repr(consumer), repr(producer._settings), str(vars(consumer))]
    # The broker has no SASL listener: connecting fails, and the error must not leak it.
    for endpoint in (producer, consumer):
        with pytest.raises(StreamtoolsError) as caught:
            await endpoint.a_init()
        error: BaseException | None = caught.value
        while error is not None:  # the whole chain
            texts.append(f"{type(error).__name__}: {error} {error.args!r}")
            error = error.__cause__ or error.__context__
        await endpoint.close()
    print(f"\nSASL errors seen: {texts[4:]}")
    assert all(secret not in text for text in texts), [t for t in texts if secret in t]
    assert "svc" in repr(producer)  # the user is named, the password is not


async def test_unreachable_broker_fails_after_the_timeout_never_silently() -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    producer = KafkaProducer(
        "st-kafka-unreachable", message_type=Order, bootstrap_servers=dead, connect_timeout=2
    )
    with pytest.raises((ConnectError, PublishError)) as caught:
        await producer.send(Order(seq=1))
    await producer.close()
    assert dead in str(caught.value)
    consumer = KafkaConsumer(
        "st-kafka-unreachable", message_type=Order, bootstrap_servers=dead, connect_timeout=2
    )

    @consumer()
    async def handle(msg: Order) -> None:
        pass

    with pytest.raises(ConnectError, match="cannot reach"):
        await consumer.start()
    await consumer.close()


async def test_send_options_key_and_headers(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    topic = topics("options")
    async with producer_for(topic, kafka_bootstrap) as producer:
        for bad, match in (
            ({"headers": {"ce_id": "mine"}}, "ce_id"),
            ({"headers": {"content-type": "text/plain"}}, "content-type"),
            ({"headers": {"x-streamtools-attempt": "3"}}, "x-streamtools-attempt"),
            ({"headers": {"x-n": 1}}, "mapping of str to str"),
            ({"key": 42}, "key must be str or bytes"),
            ({"partition": 1}, "no option partition"),
        ):
            with pytest.raises(ConfigurationError, match=match):
                await producer.send(Order(seq=0), **bad)
            with pytest.raises(ConfigurationError, match=match):
                await producer.send_many([Order(seq=0)], **bad)
        await producer.send(Order(seq=1), key=b"bytes-key", headers={"x-a": "1"})
        await producer.send(Order(seq=2), key="bytes-key")
        await producer.send_many([Order(seq=3), Order(seq=4)], key="bytes-key")
    records = await read_records(kafka_bootstrap, topic, 4)
    # One key, one partition, in send order: nothing refused above reached the topic.
    assert {r.partition for r in records} == {records[0].partition}
    assert sorted(msgspec.json.decode(r.value, type=Order).seq for r in records) == [1, 2, 3, 4]
    assert [msgspec.json.decode(r.value, type=Order).seq for r in records][:2] == [1, 2]
    assert all(r.key == b"bytes-key" for r in records)
    assert headers_of(records[0])["x-a"] == "1"
    assert "x-a" not in headers_of(records[1])


async def test_topics_created_with_dlq_and_existing_partition_count_kept(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    topic = topics("create")
    async with producer_for(topic, kafka_bootstrap, partitions=2):
        pass
    # Another partition count later: the topic is used as it is.
    async with producer_for(topic, kafka_bootstrap, partitions=5) as producer:
        await producer.send(Order(seq=1))
    probe = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap)
    await probe.start()
    try:
        await probe.topics()
        assert probe.partitions_for_topic(topic) == {0, 1}
        assert probe.partitions_for_topic(f"{topic}.dlq") == {0, 1}
    finally:
        await probe.stop()


async def test_close_commits_what_was_handled(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    """A graceful close commits the settled offsets: the group's next member starts after them."""
    topic = topics("commit")
    group = f"{topic}-g"
    handled: list[int] = []
    consumer = consumer_for(topic, kafka_bootstrap, group=group)

    @consumer()
    async def handle(msg: Order) -> None:
        handled.append(msg.seq)

    async with producer_for(topic, kafka_bootstrap) as producer:
        await producer.send_many([Order(seq=seq) for seq in range(30)])
    try:
        await consumer.start()
        await wait_until(lambda: len(handled) >= 30, "the 30 messages")
    finally:
        await consumer.close()
    offsets = await committed_offsets(kafka_bootstrap, group, topic)
    committed = sum(offset or 0 for offset in offsets.values())
    assert sorted(handled) == list(range(30))
    assert committed == 30, f"committed offsets sum to {committed}, handled 30"
