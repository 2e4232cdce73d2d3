"""NATS JetStream-only behaviour against a real server (the shared one on NATS_URL, else
nats://127.0.0.1:4222; private `nats-server` instances for restarts and logins): settings
and their redaction, stream naming, competing consumers, dead-lettering with its headers,
retries and handlers longer than `ack_wait`, a consumer closed mid-backlog, a server
restart, logins. Every stream a test creates has a unique name and is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import msgspec
import nats
import nats.js.errors
import pytest
import trustme
from nats.aio.msg import Msg
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from streamtools import (
    CONSUMER_LOOPS,
    NATS,
    PRODUCERS,
    Limits,
    Queue,
    RetryPolicy,
    current_metadata,
)
from streamtools._binding import DEAD_LETTER_HEADERS
from streamtools._codec import Metadata, new_metadata
from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    PublishError,
    ReplyTimeoutError,
    StreamtoolsError,
)
from streamtools.transports.nats import NATSConsumer, NATSProducer
from streamtools.transports.nats._streams import stream_name
from tests.conftest import eventually, unique_name
from tests.support.nats_node import NATS_SERVER, NATSNode

SERVERS = "nats://127.0.0.1:4222"
WAIT = 30.0  # bound for every wait; never a timing threshold
FAST = RetryPolicy(attempts=2, delay=0.05)

needs_nats_server = pytest.mark.skipif(
    shutil.which(NATS_SERVER) is None, reason="nats-server is not installed"
)


class Order(msgspec.Struct, kw_only=True):
    seq: int
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")] = "ABC-123"


ORDERS = Queue("unused", Order)


@pytest.fixture
async def queues() -> AsyncIterator[Callable[[str], str]]:
    """A maker of unique queue names; their streams (and `.dlq` ones) are deleted after."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = unique_name(f"st-nats-{prefix}")
        made.append(name)
        return name

    yield make
    nc = await nats.connect(SERVERS)
    try:
        js = nc.jetstream()
        for name in made:
            for queue in (name, f"{name}.dlq"):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    await js.delete_stream(stream_name(queue))
    finally:
        await nc.close()


def consumer(name: str, **settings: object) -> NATSConsumer[Order]:
    options: dict[str, object] = {"servers": SERVERS, "retry": FAST, "shutdown_timeout": 10}
    options.update(settings)
    return NATSConsumer(Queue(name, Order), **options)  # type: ignore[arg-type]


def producer(name: str, **settings: object) -> NATSProducer[Order]:
    return NATSProducer(Queue(name, Order), **{"servers": SERVERS, **settings})  # type: ignore[arg-type]


async def read_all(subject: str, expected: int) -> list[Msg]:
    """Read `expected` messages from a stream with a plain nats-py pull consumer (acked)."""
    nc = await nats.connect(SERVERS)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe(subject, durable="reader", stream=stream_name(subject))
        got: list[Msg] = []
        async with asyncio.timeout(WAIT):
            while len(got) < expected:
                with contextlib.suppress(nats.errors.TimeoutError):
                    for msg in await sub.fetch(expected - len(got), timeout=1):
                        await msg.ack()
                        got.append(msg)
        return got
    finally:
        await nc.close()


# --- settings, no server needed ----------------------------------------------------------------


def test_registered_under_nats_and_jetstream() -> None:
    registered: list[object] = [PRODUCERS[NATS], CONSUMER_LOOPS["nats"]]
    registered.append(CONSUMER_LOOPS["jetstream"])
    assert registered == [NATSProducer, NATSConsumer, NATSConsumer]
    assert NATSConsumer.__module__ == "streamtools.transports.nats"


def test_settings_from_keywords_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS"):
        monkeypatch.delenv(var, raising=False)
    assert NATSProducer("q")._settings.servers == ("nats://localhost:4222",)
    monkeypatch.setenv("NATS_URL", "nats://a:4222, b:4223")
    monkeypatch.setenv("NATS_USER", "alice")
    monkeypatch.setenv("NATS_PASSWORD", "s3cret-env")
    settings = NATSConsumer("q")._settings
    assert settings.servers == ("nats://a:4222", "nats://b:4223")
    assert (settings.user, settings.password) == ("alice", "s3cret-env")
    explicit = NATSProducer("q", servers="nats://c:1", user="bob", password="pw-kw")._settings
    assert explicit.servers == ("nats://c:1",)
    assert (explicit.user, explicit.password) == ("bob", "pw-kw")
    client = explicit.client()
    assert client["user"] == "bob"
    assert client["password"] == "pw-kw"


def test_secrets_never_in_repr_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS"):
        monkeypatch.delenv(var, raising=False)
    p = NATSProducer("q", servers="nats://carol:url-secret@h:4222", user="u", password="pw-1")
    shown = repr(p) + repr(p._settings) + p._settings.where
    assert "url-secret" not in shown
    assert "pw-1" not in shown
    assert "h:4222" in shown
    assert "'u'" in shown
    t = NATSConsumer("q", token="tok-secret")
    assert "tok-secret" not in repr(t) + repr(t._settings) + t._settings.where
    with pytest.raises(ConfigurationError) as info:
        NATSProducer("q", servers="http://x:y-secret@h:1")
    assert "y-secret" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"password": "pw"}, "no user"),
        ({"user": "u"}, "no password"),
        ({"user": "u", "password": "p", "token": "t"}, "one way to log in"),
        ({"creds": "/nonexistent/x.creds"}, "does not exist"),
        ({"servers": "ftp://h:1"}, "servers must be"),
        ({"ssl": "yes"}, "SSLContext"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"send_timeout": -1}, "send_timeout"),
        ({"replicas": 0}, "replicas"),
    ],
)
def test_wrong_settings_are_configuration_errors(
    settings: dict[str, object], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("NATS_URL", "NATS_USER", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigurationError, match=says):
        NATSProducer("q", **settings)  # type: ignore[arg-type]


def test_consumer_settings() -> None:
    with pytest.raises(ConfigurationError, match="ack_wait"):
        NATSConsumer("q", ack_wait=0.5)
    with pytest.raises(ConfigurationError, match="takes no setting group"):
        NATSConsumer("q", group="g")  # type: ignore[call-arg]
    c = NATSConsumer("q", limits=Limits(max_in_flight=5), retry=RetryPolicy(attempts=7))
    assert (c.max_in_flight, c.max_retries, c.durable, c.stream) == (5, 7, "q", "q")


def test_stream_names_are_deterministic_and_valid() -> None:
    assert stream_name("orders") == "orders"
    assert stream_name("Orders_2-x") == "Orders_2-x"
    dotted = stream_name("orders.created")
    assert dotted.startswith("orders_created-")
    assert len(dotted) == len("orders_created-") + 8
    assert stream_name("orders.created") == dotted
    assert stream_name("orders_created") == "orders_created"  # apart from the dotted one
    assert stream_name("orders.dlq") != stream_name("orders_dlq")
    for name in (dotted, stream_name("a b/c*>.dlq")):
        assert all(c.isalnum() or c in "_-" for c in name)


@pytest.mark.parametrize("queue", ["a b", "orders.*", "orders.>", "a..b", ".a", "a."])
def test_a_queue_that_is_no_subject_is_refused(queue: str) -> None:
    # The core refuses most of these names already; the transport checks the rest (a..b).
    with pytest.raises(ConfigurationError, match=r"not a NATS subject|not a queue name"):
        NATSProducer(queue)


# --- against the shared server -----------------------------------------------------------------


async def test_messages_carry_the_cloudevents_nats_binding_and_are_deduplicated(
    queues: Callable[[str], str],
) -> None:
    name = queues("wire")
    async with producer(name) as p:
        message_id = await p.send(Order(seq=1), headers={"x-tenant": "t1"})
        body = msgspec.json.encode(Order(seq=1))
        meta = fresh_meta(p)
        # Sent twice with one id: JetStream's duplicate window stores it once.
        await p.send_encoded(body, meta)
        await p.send_encoded(body, meta)
    got = await read_all(name, 2)
    first, second = got
    assert first.headers is not None
    assert second.headers is not None
    assert first.headers["ce-id"] == message_id
    assert first.headers["Nats-Msg-Id"] == message_id
    assert first.headers["ce-type"] == "Order"
    assert first.headers["ce-specversion"] == "1.0"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["x-tenant"] == "t1"
    assert msgspec.json.decode(first.data) == {"seq": 1, "sku": "ABC-123"}
    assert second.headers["ce-id"] == meta.id
    nc = await nats.connect(SERVERS)
    try:
        info = await nc.jetstream().stream_info(stream_name(name))
    finally:
        await nc.close()
    assert info.state.messages == 0  # both read and acknowledged: work-queue retention
    assert getattr(info.config.storage, "value", info.config.storage) == "file"


def fresh_meta(p: NATSProducer[Order]) -> Metadata:
    """The metadata `send` would give a new message."""
    return new_metadata("Order", p.source, "application/json")


async def test_an_existing_stream_with_other_settings_is_a_clear_error(
    queues: Callable[[str], str],
) -> None:
    name = queues("other")
    nc = await nats.connect(SERVERS)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(name=stream_name(name), subjects=[name], retention=RetentionPolicy.LIMITS)
        )
    finally:
        await nc.close()
    with pytest.raises(ConfigurationError) as info:
        async with producer(name):
            pass
    message = str(info.value)
    assert stream_name(name) in message
    assert "retention" in message
    assert "nats stream rm" in message


async def test_a_puback_error_is_a_publish_error(queues: Callable[[str], str]) -> None:
    """A stream made by someone else with a 1000-byte message limit: JetStream refuses the
    message in its PubAck."""
    name = queues("puback")
    nc = await nats.connect(SERVERS)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(
                name=stream_name(name),
                subjects=[name],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                max_msg_size=1000,
            )
        )
    finally:
        await nc.close()
    async with producer(name, send_timeout=5) as p:
        await p.send(Order(seq=1))  # small enough
        with pytest.raises(PublishError, match="refused it"):
            await p.send_encoded(b'{"seq": 1, "pad": "' + b"x" * 2000 + b'"}', fresh_meta(p))


async def test_a_request_whose_message_is_dead_lettered_raises_at_once(
    queues: Callable[[str], str],
) -> None:
    name = queues("request")
    c = consumer(name)

    @c()
    async def handle(msg: Order) -> Order:
        if msg.seq < 0:
            raise ValueError("never")
        return Order(seq=msg.seq * 10)

    await c.start()
    try:
        async with producer(name) as p:
            reply = await p.request(Order(seq=4), reply_type=Order, timeout=WAIT)
            assert reply.seq == 40
            started = time.monotonic()
            with pytest.raises(PublishError, match="dead-lettered"):
                await p.request(Order(seq=-1), reply_type=Order, timeout=WAIT)
            assert time.monotonic() - started < WAIT / 2
            async with producer(queues("nobody")) as unanswered:
                with pytest.raises(ReplyTimeoutError):
                    await unanswered.request(Order(seq=1), reply_type=Order, timeout=1)
        dead = await read_all(f"{name}.dlq", 1)
    finally:
        await c.close()
    assert dead[0].headers is not None
    assert "x-streamtools-reply-to" not in dead[0].headers  # a dead letter answers nobody


async def test_competing_consumers_share_the_work(queues: Callable[[str], str]) -> None:
    name = queues("share")
    handled: list[Counter[int]] = [Counter(), Counter()]
    members = [consumer(name, limits=Limits(max_in_flight=4)) for _ in range(2)]
    for index, member in enumerate(members):

        @member()
        async def handle(msg: Order, index: int = index) -> None:
            await asyncio.sleep(0.005)
            handled[index][msg.seq] += 1

    try:
        await asyncio.gather(*(m.start() for m in members))
        async with producer(name) as p:
            await asyncio.gather(*(p.send(Order(seq=i)) for i in range(300)))
        await eventually(
            lambda: set(handled[0]) | set(handled[1]) == set(range(300)), "all 300", WAIT
        )
    finally:
        await asyncio.gather(*(m.close() for m in members))
    assert handled[0], "both members got some"
    assert handled[1], "both members got some"
    assert sum(handled[0].values()) + sum(handled[1].values()) == 300, "no duplicates"


async def test_invalid_and_poison_messages_are_dead_lettered_with_their_headers(
    queues: Callable[[str], str],
) -> None:
    name = queues("dlq")
    c = consumer(name)

    @c()
    async def handle(msg: Order) -> None:
        if msg.seq < 0:
            raise ValueError(f"poison {msg.seq}\nsecond line")

    await c.start()
    try:
        async with producer(name) as p:
            await p.send(Order(seq=-1))
            await p.send_encoded(b'{"seq": 1, "sku": "bad"}', fresh_meta(p))
        dead = await read_all(f"{name}.dlq", 2)
    finally:
        await c.close()
    by_reason = {m.headers["x-death-reason"]: m for m in dead if m.headers}
    assert set(by_reason) == {"max-retries", "invalid"}
    poison = by_reason["max-retries"].headers
    assert poison is not None
    assert set(DEAD_LETTER_HEADERS) <= set(poison)
    assert poison["x-error-type"] == "ValueError"
    assert poison["x-error-message"].startswith("poison -1")  # one header line
    assert poison["x-attempts"] == "3"
    assert poison["x-original-queue"] == name
    assert poison["ce-type"] == "Order"
    invalid = by_reason["invalid"].headers
    assert invalid is not None
    assert invalid["x-error-type"] in ("ValidationError", "DecodeError")
    assert by_reason["invalid"].data == b'{"seq": 1, "sku": "bad"}'


async def test_retry_delay_and_handler_longer_than_ack_wait_duplicate_nothing(
    queues: Callable[[str], str],
) -> None:
    """ack_wait=2 s; the retry waits 3-6 s and the second attempt's handler 4.5 s: the
    in-progress heartbeat keeps the held message from being redelivered meanwhile.

    The heartbeat cannot beat through a stalled event loop (one that stalled over about
    1.3 s here would see a redelivery, as the server's ack_wait says it should): the
    failure message gives the longest stall measured, to tell the two apart."""
    name = queues("ackwait")
    c = consumer(name, ack_wait=2.0, retry=RetryPolicy(attempts=2, delay=6.0, max_delay=6.0))
    attempts: list[tuple[int, int]] = []
    finished: list[int] = []

    @c()
    async def handle(msg: Order) -> None:
        attempt = current_metadata().attempt
        attempts.append((msg.seq, attempt))
        if attempt == 1:
            raise RuntimeError("first attempt fails")
        await asyncio.sleep(4.5)
        finished.append(msg.seq)

    longest_stall = 0.0

    async def watch_the_loop() -> None:
        nonlocal longest_stall
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.05)
            longest_stall = max(longest_stall, loop.time() - before - 0.05)

    watcher = asyncio.get_running_loop().create_task(watch_the_loop())
    await c.start()
    try:
        async with producer(name) as p:
            await asyncio.gather(*(p.send(Order(seq=i)) for i in range(3)))
        await eventually(lambda: len(finished) >= 3, "three second attempts handled", WAIT)
        await asyncio.sleep(2 * 2.0)  # twice ack_wait: room for any redelivery to show
    finally:
        await c.close()
        watcher.cancel()
    assert sorted(attempts) == [(i, a) for i in range(3) for a in (1, 2)], (
        f"longest event-loop stall during the test: {longest_stall:.2f} s"
    )


async def test_a_consumer_closed_mid_backlog_hands_its_messages_to_the_other(
    queues: Callable[[str], str],
) -> None:
    """The closing member's cancelled and fetched messages are nak'ed: the other member gets
    them at once, long before ack_wait (60 s here)."""
    name = queues("handover")
    handled: Counter[int] = Counter()
    slow = consumer(name, ack_wait=60.0, shutdown_timeout=0.5, limits=Limits(max_in_flight=8))
    fast = consumer(name, ack_wait=60.0, limits=Limits(max_in_flight=8))

    @slow()
    async def handle_slow(msg: Order) -> None:
        await asyncio.sleep(30)  # never finishes before the close cancels it
        handled[msg.seq] += 1

    @fast()
    async def handle_fast(msg: Order) -> None:
        await asyncio.sleep(0.01)
        handled[msg.seq] += 1

    async with producer(name) as p:
        await asyncio.gather(*(p.send(Order(seq=i)) for i in range(100)))
    await slow.start()
    await eventually(lambda: len(slow._held) == 8, "the slow member holding 8", WAIT)
    await fast.start()
    try:
        started = time.monotonic()
        await slow.close()
        await eventually(lambda: set(handled) == set(range(100)), "all 100 by the other", WAIT)
        elapsed = time.monotonic() - started
    finally:
        await fast.close()
    assert sum(handled.values()) == 100
    assert elapsed < 30, f"handed over in {elapsed:.1f} s, not after ack_wait"


async def test_a_deleted_durable_is_declared_again_and_consuming_goes_on(
    queues: Callable[[str], str],
) -> None:
    """Fetches on a deleted durable time out as if the queue were empty: the idle consumer
    looks (every ~10 s) and declares it again."""
    name = queues("durable")
    c = consumer(name)
    handled: list[int] = []

    @c()
    async def handle(msg: Order) -> None:
        handled.append(msg.seq)

    await c.start()
    try:
        async with producer(name) as p:
            await p.send(Order(seq=1))
            await eventually(lambda: handled == [1], "the first message", WAIT)
            nc = await nats.connect(SERVERS)
            try:
                await nc.jetstream().delete_consumer(c.stream, c.durable)
            finally:
                await nc.close()
            await p.send(Order(seq=2))
            await eventually(lambda: handled == [1, 2], "the message after the deletion", WAIT)
    finally:
        await c.close()


# --- private servers ---------------------------------------------------------------------------


@needs_nats_server
@pytest.mark.slow
async def test_server_restart_loses_nothing_confirmed_and_consuming_resumes() -> None:
    with NATSNode() as node:
        name = unique_name("st-nats-restart")
        handled: Counter[int] = Counter()
        c = NATSConsumer(
            Queue(name, Order), servers=node.url, retry=FAST, shutdown_timeout=5, ack_wait=5
        )

        @c()
        async def handle(msg: Order) -> None:
            handled[msg.seq] += 1

        await c.start()
        confirmed: list[int] = []
        async with NATSProducer(Queue(name, Order), servers=node.url, send_timeout=30) as p:
            for i in range(50):
                await p.send(Order(seq=i))
                confirmed.append(i)
            await eventually(lambda: set(handled) == set(range(50)), "the first 50", WAIT)

            async def send_through(first: int) -> None:
                for i in range(first, first + 50):
                    await p.send(Order(seq=i))  # waits through the restart
                    confirmed.append(i)

            await node.astop()
            sending = asyncio.create_task(send_through(50))  # sent while the server is down
            await asyncio.sleep(1.0)
            assert not confirmed[50:], "nothing confirmed while the server is down"
            await node.astart()
            await asyncio.wait_for(sending, WAIT)
            await eventually(lambda: set(handled) >= set(confirmed), "all confirmed", WAIT)
            await eventually(lambda: c.connected, "the consumer reconnected", WAIT)
            for i in range(100, 110):  # and consuming goes on afterwards
                await p.send(Order(seq=i))
            await eventually(lambda: set(handled) >= set(range(110)), "after the restart", WAIT)
        await c.close()
        runs = sum(handled.values())
        lost = set(range(110)) - set(handled)
        print(
            f"\nNATS server restarted: sent 110, acknowledged 110, handled {len(handled)}, "
            f"lost {len(lost)}, duplicates {runs - len(handled)}"
        )
        assert len(confirmed) == 100
        assert not lost


@needs_nats_server
async def test_user_and_password_accepted_and_wrong_ones_refused() -> None:
    with NATSNode(user="svc", password="right-pw") as node:
        name = unique_name("st-nats-login")
        async with NATSProducer(
            Queue(name, Order), servers=node.url, user="svc", password="right-pw"
        ) as p:
            await p.send(Order(seq=1))
        for user, password in (("svc", "wrong-pw"), ("nobody", "right-pw")):
            with pytest.raises((ConfigurationError, ConnectError)) as info:
                async with NATSConsumer(
                    Queue(name, Order),
                    servers=node.url,
                    user=user,
                    password=password,
                    connect_timeout=5,
                ):
                    pass
            message = str(info.value)
            assert "user and password" in message
            assert "NATS_USER" in message
            assert password not in message
        with pytest.raises((ConfigurationError, ConnectError), match="wants a login"):
            async with NATSProducer(Queue(name, Order), servers=node.url, connect_timeout=5):
                pass


@needs_nats_server
async def test_token_accepted_and_a_wrong_one_refused() -> None:
    with NATSNode(token="right-token") as node:
        name = unique_name("st-nats-token")
        async with NATSProducer(Queue(name, Order), servers=node.url, token="right-token") as p:
            await p.send(Order(seq=1))
        with pytest.raises((ConfigurationError, ConnectError)) as info:
            async with NATSProducer(
                Queue(name, Order), servers=node.url, token="wrong-token", connect_timeout=5
            ):
                pass
        assert "token" in str(info.value)
        assert "wrong-token" not in str(info.value)


async def test_an_unreachable_server_is_a_connect_error() -> None:
    with pytest.raises(ConnectError, match="NATS_URL"):
        async with NATSProducer("q", servers="nats://127.0.0.1:1", connect_timeout=2):
            pass


async def test_errors_are_streamtools_errors() -> None:
    assert issubclass(ConnectError, StreamtoolsError)


@needs_nats_server
async def test_tls_with_an_ssl_context_and_a_refused_certificate(tmp_path: Path) -> None:
    """A server that requires TLS: a client trusting its CA (ssl=) sends and consumes; one
    with the system's trust store is refused with an error that names the TLS problem."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    with NATSNode(tls=(chain, key)) as node:
        name = unique_name("st-nats-tls")
        got: list[int] = []
        consumer = NATSConsumer(Queue(name, Order), servers=node.url, ssl=trusted, retry=FAST)

        @consumer()
        async def handle(msg: Order) -> None:
            got.append(msg.seq)

        await consumer.start()
        try:
            async with NATSProducer(Queue(name, Order), servers=node.url, ssl=trusted) as p:
                await p.send(Order(seq=7))
            await eventually(lambda: got == [7], "the message over TLS", WAIT)
        finally:
            await consumer.close()
        untrusting = NATSProducer(
            Queue(name, Order),
            servers=node.url,
            ssl=ssl.create_default_context(),
            connect_timeout=3,
        )
        with pytest.raises(StreamtoolsError) as refused:
            await untrusting.a_init()
        await untrusting.close()
        assert isinstance(refused.value, ConnectError)
        assert "TLS with NATS at" in str(refused.value)
        assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
        assert "check the ssl= context" in str(refused.value)
