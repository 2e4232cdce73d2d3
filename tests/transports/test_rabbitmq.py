"""RabbitMQ-only behaviour against the real broker: configuration, topology, retries and
dead-lettering, foreign publishers, errors, request/reply, shutdown and re-subscription.

Every queue a test declares is deleted afterwards (with its `.dlq` and retry queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import aio_pika
import aio_pika.abc
import msgspec
import pytest

from streamtools import CONSUMER_LOOPS, PRODUCERS, RMQ, Limits, Queue, RetryPolicy, current_metadata
from streamtools.errors import (
    ConfigurationError,
    ConnectError,
    PublishError,
    ReplyTimeoutError,
    StreamtoolsError,
)
from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer
from tests.conftest import unique_name
from tests.support.queues import delete_queues

WAIT = 30.0  # bound for every wait; never a pass/fail timing threshold


class Order(msgspec.Struct, kw_only=True):
    seq: int
    sku: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}-\d{3}$")]
    qty: Annotated[int, msgspec.Meta(ge=1)] = 1
    tag: str = ""


class Total(msgspec.Struct, kw_only=True):
    seq: int
    doubled: int


@pytest.fixture
async def queue(rabbitmq_url: str, queue_name: str) -> AsyncIterator[str]:
    """A unique queue name; the queue, its .dlq and retry queues are deleted after the test."""
    yield queue_name
    await delete_queues(rabbitmq_url, [queue_name])


@pytest.fixture
async def raw(rabbitmq_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A plain aio-pika channel, as a foreign client would have."""
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


def order(seq: int, tag: str = "") -> Order:
    return Order(seq=seq, sku="ABC-123", qty=1 + seq % 3, tag=tag)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not condition():  # noqa: ASYNC110 - polling a plain predicate
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT} s waiting for {what}")


async def get_one(
    channel: aio_pika.abc.AbstractChannel, name: str
) -> aio_pika.abc.AbstractIncomingMessage:
    """The next message of queue `name` (acked), waiting for it to arrive."""
    q = await channel.get_queue(name)
    async with asyncio.timeout(WAIT):
        while True:
            message = await q.get(fail=False)
            if message is not None:
                await message.ack()
                return message
            await asyncio.sleep(0.02)


async def wait_until_stored(url: str, name: str) -> None:
    """Wait for queue `name` to exist and hold a message: a passive declare on a fresh
    connection each time (a refused one closes its channel, and a quorum queue declared a
    moment ago may answer a basic.get with INTERNAL_ERROR noproc, closing the connection)."""
    try:
        async with asyncio.timeout(WAIT):
            while True:
                connection = await aio_pika.connect(url)
                try:
                    declared = await (await connection.channel()).declare_queue(name, passive=True)
                    if declared.declaration_result.message_count:
                        return
                except aio_pika.exceptions.AMQPError:
                    pass
                finally:
                    await connection.close()
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT} s waiting for a message in queue {name!r}")


async def depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    q = await channel.declare_queue(name, passive=True)
    count = q.declaration_result.message_count
    assert count is not None
    return count


# --- configuration ---------------------------------------------------------------------------


def test_settings_come_from_env_and_the_password_is_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RMQ_URL", raising=False)
    monkeypatch.setenv("RMQ_HOST", "rabbit.internal")
    monkeypatch.setenv("RMQ_PORT", "5673")
    monkeypatch.setenv("RMQ_USER", "svc")
    monkeypatch.setenv("RMQ_PASS", "s3cret-pw")
    monkeypatch.setenv("RMQ_VHOST", "orders")
    producer = RabbitMQProducer("q-env", message_type=Order)
    consumer = RabbitMQConsumer("q-env", message_type=Order)
    # Read once at construction: later changes do not matter.
    monkeypatch.setenv("RMQ_HOST", "elsewhere")
    for endpoint in (producer, consumer):
        text = repr(endpoint)
        assert "rabbit.internal:5673" in text
        assert "svc" in text
        assert "/orders" in text
        assert "s3cret-pw" not in text
    assert "amqp://svc:***@rabbit.internal:5673/orders" in repr(producer)


def test_defaults_and_explicit_url(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RMQ_URL", "RMQ_HOST", "RMQ_PORT", "RMQ_USER", "RMQ_PASS", "RMQ_VHOST"):
        monkeypatch.delenv(var, raising=False)
    assert "amqp://guest:***@localhost:5672/" in repr(RabbitMQProducer("q"))
    monkeypatch.setenv("RMQ_URL", "amqp://a:b@from-env:1234/")
    assert "from-env:1234" in repr(RabbitMQProducer("q"))
    explicit = RabbitMQProducer("q", url="amqps://u:pw@tls-host/vh")
    assert "amqps://u:***@tls-host:5671/vh" in repr(explicit)


@pytest.mark.parametrize(
    ("settings", "mentions"),
    [
        ({"url": "http://u:topsecret@host/"}, "amqp://"),
        ({"queue_type": "stream"}, "queue_type"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"limits": 64}, "limits must be a Limits"),
        ({"retry": 3}, "retry must be a RetryPolicy"),
        ({"url": "amqp://u:topsecret@host/", "ssl": ssl.create_default_context()}, "amqps://"),
    ],
)
def test_bad_settings_are_configuration_errors(settings: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RabbitMQConsumer("q", **settings)
    assert mentions in str(info.value)
    assert "topsecret" not in str(info.value)


def test_several_addresses_from_url_rmq_url_and_rmq_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RMQ_URL", "RMQ_HOST", "RMQ_PORT", "RMQ_USER", "RMQ_PASS", "RMQ_VHOST"):
        monkeypatch.delenv(var, raising=False)
    # Credentials may differ per address; every password is redacted.
    listed = RabbitMQProducer("q", url=["amqp://a:pw-one@n1:5701/", "amqps://b:pw-two@n2/vh"])
    assert "url='amqp://a:***@n1:5701/,amqps://b:***@n2:5671/vh'" in repr(listed)
    # In a sequence each item is one URL: a raw comma in a password stays in the password.
    raw_comma = RabbitMQConsumer("q", url=["amqp://u:p,w-x@n1/", "amqp://u:p,w-x@n2/"])
    assert "amqp://u:***@n1:5672/,amqp://u:***@n2:5672/" in repr(raw_comma)
    assert "p,w-x" not in repr(raw_comma)
    commas = RabbitMQProducer("q", url="amqp://u:pw-c@n1, amqp://u:pw-c@n2:5999/")
    assert "amqp://u:***@n1:5672,amqp://u:***@n2:5999/" in repr(commas)
    monkeypatch.setenv("RMQ_URL", "amqp://e:pw-env@r1:1111/,amqp://e:pw-env@r2:2222/")
    assert "amqp://e:***@r1:1111/,amqp://e:***@r2:2222/" in repr(RabbitMQConsumer("q"))
    monkeypatch.delenv("RMQ_URL")
    monkeypatch.setenv("RMQ_HOST", "h1,h2:5673, [::1]:5674")
    monkeypatch.setenv("RMQ_PORT", "5700")
    monkeypatch.setenv("RMQ_PASS", "pw-host")
    hosts = repr(RabbitMQProducer("q"))
    assert "guest:***@h1:5700/,amqp://guest:***@h2:5673/,amqp://guest:***@[::1]:5674/" in hosts
    assert "pw-" not in repr(listed) + repr(commas) + hosts


@pytest.mark.parametrize(
    ("settings", "mentions"),
    [
        # A list of addresses repeats the scheme: the shorthand is refused, not a bare ValueError.
        ({"url": "amqp://g:topsecret@127.0.0.1:5681,127.0.0.1:5682/"}, "address 2 of 2"),
        ({"url": "amqp://g:topsecret@h1/,,amqp://g:topsecret@h2/"}, "address 2 of 3"),
        ({"url": "amqp://g:topsecret@h1:99999/"}, "Port out of range"),
        ({"url": "amqp://g:topsecret@h1:0/"}, "port 0"),
        ({"url": "amqp://g:topsecret@[::1/"}, "not a valid URL"),
        ({"url": ["amqp://g:topsecret@h1/", "http://g:topsecret@h2/"]}, "address 2 of 2"),
        ({"url": "amqp://g:topsecret@h1/?heartbeat=5,amqp://g:topsecret@h2/"}, "?options"),
        ({"url": ""}, "no RabbitMQ address"),
        ({"url": 5672}, "sequence"),
        ({"url": "amqp://g:topsecret@h1/", "failover": "random"}, "failover"),
    ],
)
def test_malformed_addresses_are_configuration_errors_naming_the_part(
    settings: dict[str, Any], mentions: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        RabbitMQProducer("q", **settings)
    assert mentions in str(info.value)
    assert "topsecret" not in str(info.value)


@pytest.mark.parametrize(
    ("env", "mentions"),
    [
        ({"RMQ_URL": "amqp://g:topsecret@h1/,g:topsecret@h2"}, "address 2 of 2 in RMQ_URL"),
        ({"RMQ_HOST": "h1,h2:x"}, "RMQ_HOST entry 2 of 2"),
        ({"RMQ_HOST": "h1,,h3"}, "RMQ_HOST entry 2 of 3"),
        ({"RMQ_HOST": "g:topsecret@h1"}, "RMQ_USER"),
        ({"RMQ_PORT": "70000"}, "RMQ_PORT"),
        ({"RMQ_FAILOVER": "sideways"}, "failover"),
    ],
)
def test_malformed_address_variables_are_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mentions: str
) -> None:
    for var in ("RMQ_URL", "RMQ_HOST", "RMQ_PORT", "RMQ_FAILOVER"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigurationError) as info:
        RabbitMQConsumer("q")
    assert mentions in str(info.value)
    assert "topsecret" not in str(info.value)


async def test_unknown_send_option_lists_the_accepted_ones(rabbitmq_url: str, queue: str) -> None:
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        with pytest.raises(ConfigurationError) as info:
            await producer.send(order(1), method="POST")
    assert "method" in str(info.value)
    assert "expiration, headers" in str(info.value)


# --- connection errors -----------------------------------------------------------------------


async def test_wrong_credentials_name_host_and_port_not_the_password(
    rabbitmq_url: str, queue: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    url = f"amqp://guest:wrong-pass-123@{parts.hostname}:{parts.port}/"
    producer = RabbitMQProducer(queue, url=url, connect_timeout=10)
    with pytest.raises(ConnectError) as info:
        async with asyncio.timeout(WAIT):
            await producer.a_init()
    message = str(info.value)
    assert f"{parts.hostname}:{parts.port}" in message
    assert "guest" in message
    assert "wrong-pass-123" not in message
    assert "wrong-pass-123" not in repr(producer)
    await producer.close()


async def test_refused_port_is_a_connection_error_naming_host_and_port() -> None:
    consumer = RabbitMQConsumer("q", url="amqp://guest:pw-xyz@127.0.0.1:1/", connect_timeout=5)
    with pytest.raises(ConnectError) as info:
        async with asyncio.timeout(WAIT):
            await consumer.a_init()
    assert "127.0.0.1:1" in str(info.value)
    assert "pw-xyz" not in str(info.value)
    await consumer.close()


async def test_refused_vhost_says_so_with_the_brokers_reply(rabbitmq_url: str) -> None:
    parts = urlsplit(rabbitmq_url)
    url = f"amqp://guest:guest@{parts.hostname}:{parts.port}/st-no-such-vhost"
    producer = RabbitMQProducer("q", url=url, connect_timeout=10)
    with pytest.raises(ConnectError) as info:
        async with asyncio.timeout(WAIT):
            await producer.a_init()
    await producer.close()
    message = str(info.value)
    assert "refused vhost 'st-no-such-vhost' to user 'guest'" in message
    assert "NOT_ALLOWED - vhost st-no-such-vhost not found" in message  # the broker's words
    assert "Connection.Close object" not in message


async def test_refused_login_carries_the_brokers_reply(rabbitmq_url: str) -> None:
    parts = urlsplit(rabbitmq_url)
    url = f"amqp://guest:wrong-pass-456@{parts.hostname}:{parts.port}/"
    consumer = RabbitMQConsumer("q", url=url, connect_timeout=10)
    with pytest.raises(ConnectError) as info:
        async with asyncio.timeout(WAIT):
            await consumer.a_init()
    await consumer.close()
    assert "refused the login of user 'guest'" in str(info.value)
    assert "ACCESS_REFUSED" in str(info.value)
    assert "wrong-pass-456" not in str(info.value)


async def test_a_port_that_hangs_up_in_the_handshake_is_not_ready() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    producer = RabbitMQProducer("q", url=f"amqp://guest:pw-nr@127.0.0.1:{port}/")
    try:
        with pytest.raises(ConnectError) as info:
            async with asyncio.timeout(WAIT):
                await producer.a_init()
    finally:
        await producer.close()
        server.close()
        await server.wait_closed()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "closed it during the AMQP handshake" in str(info.value)
    assert "not ready" in str(info.value)
    assert "pw-nr" not in str(info.value)


@pytest.mark.parametrize("failover", ["in_order", "shuffle"])
async def test_connects_through_the_first_address_that_answers(
    rabbitmq_url: str, queue: str, failover: Literal["in_order", "shuffle"]
) -> None:
    parts = urlsplit(rabbitmq_url)
    dead = f"amqp://guest:pw-dead@127.0.0.1:{free_port()}/"
    url = [dead, rabbitmq_url]
    async with (
        RabbitMQProducer(queue, message_type=Order, url=url, failover=failover) as producer,
        RabbitMQProducer(queue, message_type=Order, url=url, failover=failover) as second,
    ):
        await producer.send(order(1))
        connection = producer._link.connection
        assert connection is not None
        assert (connection.url.host, connection.url.port) == (parts.hostname, parts.port)
        # One connection per process and broker set, shared.
        assert second._link.connection is connection
    assert "pw-dead" not in repr(producer)


async def test_no_address_answers_lists_each_with_its_reason() -> None:
    ports = [free_port(), free_port()]
    url = [f"amqp://u1:pw-a@127.0.0.1:{ports[0]}/", f"amqp://u2:pw-b@127.0.0.1:{ports[1]}/"]
    consumer = RabbitMQConsumer("q", url=url, connect_timeout=5)
    with pytest.raises(ConnectError) as info:
        async with asyncio.timeout(WAIT):
            await consumer.a_init()
    await consumer.close()
    message = str(info.value)
    assert "none of the 2 RabbitMQ addresses" in message
    assert f"127.0.0.1:{ports[0]}" in message
    assert f"127.0.0.1:{ports[1]}" in message
    assert "pw-a" not in message
    assert "pw-b" not in message


def free_port() -> int:
    """A port nothing listens on (bound a moment ago, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_silent_server_times_out_after_connect_timeout() -> None:
    # Accepts TCP connections and never says a word: only connect_timeout ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        producer = RabbitMQProducer(
            "q", url=f"amqp://guest:pw-abc@127.0.0.1:{port}/", connect_timeout=0.5
        )
        with pytest.raises(ConnectError) as info:
            async with asyncio.timeout(WAIT):
                await producer.a_init()
        await producer.close()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "0.5 s" in str(info.value)
    assert "pw-abc" not in str(info.value)


# --- topology --------------------------------------------------------------------------------


async def test_existing_queue_with_other_arguments_is_a_configuration_error(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    await raw.declare_queue(queue, durable=True)  # classic, no dead-letter route
    for endpoint in (
        RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url),
        RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url),
    ):
        with pytest.raises(ConfigurationError) as info:
            await endpoint.a_init()
        await endpoint.close()
        message = str(info.value)
        assert queue in message
        assert "inequivalent arg" in message  # the broker's own explanation
        assert "queue_type=" in message  # and how to fix it


async def test_quorum_queue_dlq_and_retry_queues_are_declared(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    consumer = RabbitMQConsumer(
        queue, message_type=Order, url=rabbitmq_url, retry=RetryPolicy(attempts=2)
    )
    await consumer.a_init()
    await consumer.close()
    for name in (queue, f"{queue}.dlq", f"{queue}.retry.1", f"{queue}.retry.2"):
        assert await depth(raw, name) == 0  # passive declare: it exists
    # Same arguments from the producer: no mismatch.
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        await producer.send(order(1))
    assert await depth(raw, queue) == 1


async def test_classic_queue_type_is_selectable(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    async with RabbitMQProducer(
        queue, message_type=Order, url=rabbitmq_url, queue_type="classic"
    ) as producer:
        await producer.send(order(1))
    # A quorum declaration of the same name now mismatches.
    with pytest.raises(ConfigurationError):
        async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url):
            pass
    assert await depth(raw, queue) == 1


# --- producing -------------------------------------------------------------------------------


async def test_seed_style_usage_with_env(
    monkeypatch: pytest.MonkeyPatch, rabbitmq_url: str, queue: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    monkeypatch.delenv("RMQ_URL", raising=False)
    monkeypatch.setenv("RMQ_HOST", parts.hostname or "127.0.0.1")
    monkeypatch.setenv("RMQ_PORT", str(parts.port or 5672))
    monkeypatch.setenv("RMQ_USER", parts.username or "guest")
    monkeypatch.setenv("RMQ_PASS", parts.password or "guest")
    got: list[object] = []

    producer = PRODUCERS[RMQ](queue)
    await producer.a_init()
    consumer = CONSUMER_LOOPS[RMQ](queue)
    await consumer.a_init()

    @consumer()
    async def handle(msg: object) -> None:
        got.append(msg)

    try:
        message_id = await producer.send({"order": 1, "items": ["a", "b"]})
        await consumer.start()
        await wait_until(lambda: bool(got), "the message")
    finally:
        await asyncio.gather(producer.close(), consumer.close())
    assert got == [{"order": 1, "items": ["a", "b"]}]
    assert message_id


async def test_message_carries_cloudevents_headers_and_properties(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    async with RabbitMQProducer(
        queue, message_type=Order, url=rabbitmq_url, source="//test/orders"
    ) as producer:
        message_id = await producer.send(order(5), headers={"x-tenant": "acme"})
    message = await get_one(raw, queue)
    assert msgspec.json.decode(message.body, type=Order) == order(5)  # the body is the message
    headers = message.headers
    assert headers["ce-id"] == message_id == message.message_id
    assert headers["ce-type"] == "Order" == message.type
    assert headers["ce-source"] == "//test/orders"
    assert headers["ce-specversion"] == "1.0"
    assert isinstance(headers["ce-time"], str)
    assert headers["x-tenant"] == "acme"
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.timestamp is not None


async def test_unroutable_message_is_a_publish_error(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        await raw.queue_delete(queue)  # nothing takes the message any more
        with pytest.raises(PublishError) as info:
            await producer.send(order(1))
        assert "unroutable" in str(info.value)
        with pytest.raises(PublishError) as many:
            await producer.send_many([order(2), order(3)])
        assert "2 of 2" in str(many.value)


async def test_send_many_pipelines_and_returns_ids_in_order(rabbitmq_url: str, queue: str) -> None:
    got: dict[str, int] = {}
    consumer = RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> None:
        got[current_metadata().id] = msg.seq

    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        ids = await producer.send_many([order(i) for i in range(100)])
    assert len(set(ids)) == 100
    await consumer.start()
    try:
        await wait_until(lambda: len(got) == 100, "100 messages")
    finally:
        await consumer.close()
    assert [got[i] for i in ids] == list(range(100))


async def test_send_many_validates_everything_before_publishing(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        bad = order(2)
        bad.qty = 0
        with pytest.raises(StreamtoolsError):
            await producer.send_many([order(1), bad])
    assert await depth(raw, queue) == 0


# --- consuming: retries, dead letters, foreign publishers ------------------------------------


async def test_poison_message_backs_off_then_dead_letters_while_others_flow(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    events: list[tuple[str, int, int, float]] = []  # (tag, seq, attempt, monotonic time)
    # max_in_flight=1 (the prefetch): a consumer that held the poison while backing off
    # would stall the others.
    consumer = RabbitMQConsumer(
        queue,
        message_type=Order,
        url=rabbitmq_url,
        limits=Limits(max_in_flight=1),
        retry=RetryPolicy(attempts=3, delay=0.4),
    )

    @consumer()
    async def handle(msg: Order) -> None:
        events.append((msg.tag, msg.seq, current_metadata().attempt, time.monotonic()))
        if msg.tag == "poison":
            raise RuntimeError("cannot ship to the moon")

    await consumer.start()
    try:
        async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
            poison_id = await producer.send(order(0, tag="poison"))
            await producer.send_many([order(i) for i in range(1, 11)])
        dead = await get_one(raw, f"{queue}.dlq")
    finally:
        await consumer.close()

    poison = [(attempt, at) for tag, _, attempt, at in events if tag == "poison"]
    assert [attempt for attempt, _ in poison] == [1, 2, 3, 4]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(poison)]
    assert gaps == sorted(gaps), f"backoff must grow: {gaps}"
    good_done = max(i for i, (tag, *_) in enumerate(events) if tag == "")
    last_poison = max(i for i, (tag, *_) in enumerate(events) if tag == "poison")
    assert good_done < last_poison, "good messages waited for the poison message"
    assert {seq for tag, seq, *_ in events if tag == ""} == set(range(1, 11))

    assert msgspec.json.decode(dead.body, type=Order).tag == "poison"
    headers = dead.headers
    assert headers["ce-id"] == poison_id == dead.message_id
    assert headers["x-death-reason"] == "max-retries"
    assert headers["x-error-type"] == "RuntimeError"
    assert "cannot ship to the moon" in str(headers["x-error-message"])
    assert headers["x-attempts"] == "4"
    assert headers["x-original-queue"] == queue
    assert await depth(raw, queue) == 0


async def test_foreign_invalid_messages_are_dead_lettered_and_valid_ones_handled(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    got: list[tuple[Order, str, str, str]] = []
    consumer = RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> None:
        meta = current_metadata()
        got.append((msg, meta.id, meta.type, meta.content_type))

    await consumer.start()  # declares the topology the foreign client publishes into
    exchange = raw.default_exchange
    try:
        # No ce-* headers at all, as from a non-streamtools peer.
        await exchange.publish(aio_pika.Message(b'{"seq": 1, "sku": '), routing_key=queue)
        await exchange.publish(
            aio_pika.Message(b'{"seq": 2, "sku": "lowercase"}', message_id="foreign-2"),
            routing_key=queue,
        )
        await exchange.publish(
            aio_pika.Message(
                b'{"seq": 3, "sku": "XYZ-999"}',
                message_id="foreign-3",
                type="LegacyOrder",
                content_type="application/json; charset=utf-8",
            ),
            routing_key=queue,
        )
        await wait_until(lambda: bool(got), "the valid foreign message")
        malformed = await get_one(raw, f"{queue}.dlq")
        invalid = await get_one(raw, f"{queue}.dlq")
    finally:
        await consumer.close()
    assert got == [(Order(seq=3, sku="XYZ-999"), "foreign-3", "LegacyOrder", "application/json")]

    assert malformed.body == b'{"seq": 1, "sku": '
    assert malformed.headers["x-death-reason"] == "invalid"
    assert malformed.headers["x-error-type"] == "DecodeError"
    assert malformed.headers["x-attempts"] == "1"
    assert invalid.body == b'{"seq": 2, "sku": "lowercase"}'
    assert invalid.message_id == invalid.headers["ce-id"] == "foreign-2"
    assert invalid.headers["x-death-reason"] == "invalid"
    assert invalid.headers["x-error-type"] == "ValidationError"
    assert "$.sku" in str(invalid.headers["x-error-message"])
    assert invalid.headers["x-original-queue"] == queue


async def test_dlq_is_consumable_with_error_headers_in_metadata(
    rabbitmq_url: str, queue: str
) -> None:
    consumer = RabbitMQConsumer(
        queue, message_type=Order, url=rabbitmq_url, retry=RetryPolicy(attempts=0, delay=0.01)
    )

    @consumer()
    async def handle(msg: Order) -> None:
        raise ValueError("nope")

    dead: list[tuple[Order, dict[str, str]]] = []
    dlq = RabbitMQConsumer(f"{queue}.dlq", message_type=Order, url=rabbitmq_url)

    @dlq()
    async def handle_dead(msg: Order) -> None:
        dead.append((msg, dict(current_metadata().headers)))

    await consumer.start()
    await dlq.start()
    try:
        async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
            await producer.send(order(9))
        await wait_until(lambda: bool(dead), "the dead letter")
    finally:
        await asyncio.gather(consumer.close(), dlq.close())
    msg, headers = dead[0]
    assert msg == order(9)
    assert headers["x-death-reason"] == "max-retries"
    assert headers["x-error-type"] == "ValueError"
    assert headers["x-attempts"] == "1"


# --- request / reply -------------------------------------------------------------------------


async def test_request_reply_round_trip(rabbitmq_url: str, queue: str) -> None:
    consumer = RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> Total:
        return Total(seq=msg.seq, doubled=msg.qty * 2)

    await consumer.start()
    try:
        async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
            replies = await asyncio.gather(
                *(producer.request(order(i), reply_type=Total, timeout=WAIT) for i in range(20))
            )
    finally:
        await consumer.close()
    assert replies == [Total(seq=i, doubled=2 * (1 + i % 3)) for i in range(20)]


async def test_request_without_consumer_times_out(rabbitmq_url: str, queue: str) -> None:
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        with pytest.raises(ReplyTimeoutError) as info:
            await producer.request(order(1), reply_type=Total, timeout=0.3)
    assert queue in str(info.value)


# --- shutdown --------------------------------------------------------------------------------


async def test_graceful_close_drains_and_acks_the_inflight_message(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[int] = []
    consumer = RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> None:
        started.set()
        await release.wait()
        finished.append(msg.seq)

    await consumer.start()
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        await producer.send(order(1))
    async with asyncio.timeout(WAIT):
        await started.wait()
    closing = asyncio.create_task(consumer.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # waiting for the handler
    release.set()
    async with asyncio.timeout(WAIT):
        await closing
    assert finished == [1]
    assert await depth(raw, queue) == 0  # acked: nothing left for the next consumer


async def test_handler_stuck_past_shutdown_timeout_is_redelivered(
    rabbitmq_url: str, queue: str
) -> None:
    started = asyncio.Event()
    first = RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url, shutdown_timeout=0.2)

    @first()
    async def stuck(msg: Order) -> None:
        started.set()
        await asyncio.Event().wait()

    await first.start()
    async with RabbitMQProducer(queue, message_type=Order, url=rabbitmq_url) as producer:
        sent_id = await producer.send(order(4))
    async with asyncio.timeout(WAIT):
        await started.wait()
        await first.close()

    got: list[tuple[int, str]] = []
    second = RabbitMQConsumer(queue, message_type=Order, url=rabbitmq_url)

    @second()
    async def handle(msg: Order) -> None:
        got.append((msg.seq, current_metadata().id))

    await second.start()
    try:
        await wait_until(lambda: bool(got), "the redelivered message")
    finally:
        await second.close()
    assert got == [(4, sent_id)]


# --- reconnect -------------------------------------------------------------------------------


class CuttingProxy:
    """A TCP forwarder to the broker whose `cut()` drops every open connection."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.port = 0
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(pump(src, dst))
            self.pumps.add(task)
            task.add_done_callback(self.pumps.discard)

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.pumps):
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)


async def test_consumer_resubscribes_and_producer_recovers_after_a_cut_connection(
    rabbitmq_url: str, queue: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    via_proxy = f"amqp://{parts.username}:{parts.password}@127.0.0.1:{proxy.port}/"
    got: set[int] = set()
    consumer = RabbitMQConsumer(queue, message_type=Order, url=via_proxy)

    @consumer()
    async def handle(msg: Order) -> None:
        got.add(msg.seq)

    producer = RabbitMQProducer(queue, message_type=Order, url=via_proxy, send_timeout=WAIT)
    try:
        await consumer.start()
        await producer.send(order(1))
        await wait_until(lambda: got == {1}, "the first message")
        proxy.cut()
        # The producer waits for its reconnect; the consumer must re-subscribe by itself.
        await producer.send(order(2))
        await wait_until(lambda: got == {1, 2}, "a message after the cut")
        proxy.cut()
        await asyncio.gather(*(producer.send(order(i)) for i in range(3, 23)))
        await wait_until(lambda: got == set(range(1, 23)), "every message after two cuts")
    finally:
        await asyncio.gather(producer.close(), consumer.close())
        await proxy.close()


async def test_send_while_the_broker_is_unreachable_fails_after_send_timeout(
    rabbitmq_url: str, queue: str
) -> None:
    parts = urlsplit(rabbitmq_url)
    proxy = CuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    via_proxy = f"amqp://{parts.username}:{parts.password}@127.0.0.1:{proxy.port}/"
    producer = RabbitMQProducer(queue, message_type=Order, url=via_proxy, send_timeout=0.5)
    try:
        await producer.send(order(1))
        await proxy.close()  # the connection drops and no reconnect can succeed
        with pytest.raises(PublishError) as info:
            async with asyncio.timeout(WAIT):
                await producer.send(order(2))
        assert "not confirmed" in str(info.value)
        assert "0.5 s" in str(info.value)
    finally:
        await producer.close()


@pytest.mark.parametrize("seed", range(12))
async def test_ack_window_acks_exactly_the_finished_deliveries(
    rabbitmq_url: str, seed: int
) -> None:
    """Batched acks on a real channel: finished in random order, some nacked on their own.

    After the window drains and the channel closes, the broker must hold every delivery
    that never finished (an ack covering unfinished work would lose it), none that was
    rejected, and fewer than `spill` finished ones (those waiting behind an unfinished head
    for a multiple=True ack: redelivered, as at-least-once allows). A double or unknown ack
    would close the channel.
    """
    import random

    from streamtools._window import SettleWindow

    rnd = random.Random(seed)
    count = 120
    name = f"st-ackwin-{seed}-{time.monotonic_ns()}"
    connection = await aio_pika.connect(rabbitmq_url)
    try:
        setup = await connection.channel()
        await setup.declare_queue(name, auto_delete=False)
        for n in range(count):
            await setup.default_exchange.publish(aio_pika.Message(str(n).encode()), name)
        channel = await connection.channel()
        underlay = await channel.get_underlay_channel()
        await underlay.basic_qos(prefetch_count=count)
        tags: dict[int, int] = {}
        all_in = asyncio.Event()

        async def on_message(message: Any) -> None:
            tags[message.delivery.delivery_tag] = int(message.body)
            if len(tags) == count:
                all_in.set()

        await underlay.basic_consume(name, on_message, no_ack=False)
        async with asyncio.timeout(30):
            await all_in.wait()

        async def ack(tag: int, multiple: bool) -> None:
            await underlay.basic_ack(tag, multiple=multiple)

        window = SettleWindow(ack, spill=rnd.choice([1, 4, 16, 64]))
        for tag in sorted(tags):
            window.received(tag)
        order = sorted(tags)
        rnd.shuffle(order)
        if seed % 2:  # mostly in order, with local swaps: the common case
            order.sort(key=lambda t: t + rnd.randint(0, 8))
        finished, dropped = set(), set()
        for tag in order[: int(count * 0.7)]:
            if rnd.random() < 0.1:
                await underlay.basic_reject(tag, requeue=False)
                window.settled(tag, alone=True)
                dropped.add(tags[tag])
            else:
                window.settled(tag)
                finished.add(tags[tag])
            if rnd.random() < 0.3:
                await asyncio.sleep(0)
        await window.close()
        assert not underlay.is_closed, "an ack was refused: double or unknown delivery tag"
        await channel.close()  # unacked deliveries go back to the queue

        unfinished = set(range(count)) - finished - dropped
        check = await connection.channel()
        queue = await check.declare_queue(name, passive=True)
        back: set[int] = set()
        async with asyncio.timeout(30):
            while not unfinished <= back:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.01)
                    continue
                back.add(int(message.body))
        await asyncio.sleep(0.1)
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            back.add(int(message.body))
        assert unfinished <= back
        assert not back & dropped
        assert window.spill is not None
        assert len(back - unfinished) < window.spill, (len(back - unfinished), window.spill)
    finally:
        await connection.close()
        await delete_queues(rabbitmq_url, [name])


async def test_producers_and_consumers_of_a_process_share_one_connection(
    rabbitmq_url: str,
) -> None:
    names = [unique_name("st-share"), unique_name("st-share")]
    got: list[int] = []
    consumers = [RabbitMQConsumer(Queue(name, Order), url=rabbitmq_url) for name in names]
    for consumer in consumers:

        @consumer()
        async def handle(msg: Order) -> None:
            got.append(msg.seq)

        await consumer.start()
    producer = RabbitMQProducer(Queue(names[0], Order), url=rabbitmq_url)
    try:
        await producer.a_init()
        shared = producer._link.connection
        assert shared is not None
        assert all(c._link.connection is shared for c in consumers)
        await consumers[1].close()  # one goes: the others keep the connection
        assert not shared.is_closed
        await producer.send(order(1))
        await wait_until(lambda: got == [1], "the message on the remaining consumer")
    finally:
        await asyncio.gather(producer.close(), *(c.close() for c in consumers))
        await delete_queues(rabbitmq_url, names)
    assert shared.is_closed  # the last one closed it


async def test_a_retry_queue_deleted_under_the_consumer_is_declared_again(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    """The retry copy comes back unroutable: the consumer declares its topology again and
    retries through it, instead of requeueing and re-running the handler without end."""
    calls: list[int] = []
    consumer = RabbitMQConsumer(
        Queue(queue, Order), url=rabbitmq_url, retry=RetryPolicy(attempts=1, delay=0.05)
    )

    @consumer()
    async def handle(msg: Order) -> None:
        calls.append(current_metadata().attempt)
        if len(calls) == 1:
            raise RuntimeError("fails once")

    await consumer.a_init()
    await raw.queue_delete(f"{queue}.retry.1")
    await consumer.start()
    try:
        async with RabbitMQProducer(Queue(queue, Order), url=rabbitmq_url) as producer:
            await producer.send(order(1))
        await wait_until(lambda: len(calls) >= 2, "the retried message")
    finally:
        await consumer.close()
    assert calls == [1, 2]  # a retry copy (attempt 2), not the requeued original again
    await raw.declare_queue(f"{queue}.retry.1", passive=True)  # it exists again


async def test_a_dlq_deleted_under_a_running_consumer_is_declared_again(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    """An invalid message finds `<queue>.dlq` deleted under the running consumer: the
    consumer declares its topology again (as for a retry queue) and dead-letters it there,
    instead of leaving it unacked on the main queue until someone else declares the DLQ."""
    got: list[int] = []
    consumer = RabbitMQConsumer(Queue(queue, Order), url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> None:
        got.append(msg.seq)

    await consumer.start()
    try:
        await raw.queue_delete(f"{queue}.dlq")
        await raw.default_exchange.publish(  # breaks the schema: dead-lettered at once
            aio_pika.Message(b'{"seq": 1, "sku": "lowercase"}', message_id="invalid-1"),
            routing_key=queue,
        )
        await wait_until_stored(rabbitmq_url, f"{queue}.dlq")  # declared again, holding it
        dead = await get_one(raw, f"{queue}.dlq")
        assert dead.body == b'{"seq": 1, "sku": "lowercase"}'
        assert dead.headers["x-death-reason"] == "invalid"
        assert dead.headers["x-original-queue"] == queue
    finally:
        await consumer.close()  # returns whatever it left unacked to the queue
    assert got == []
    assert await depth(raw, queue) == 0  # the original was acked, not left unacked


async def test_a_queue_locked_by_another_connection_is_a_configuration_error(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    await raw.declare_queue(queue, exclusive=True)
    consumer = RabbitMQConsumer(Queue(queue, Order), url=rabbitmq_url, queue_type="classic")
    with pytest.raises(ConfigurationError, match="locked") as info:
        await consumer.a_init()
    assert "retrying will not help" in str(info.value)


async def test_a_queue_deleted_under_a_running_consumer_comes_back_and_is_served(
    rabbitmq_url: str, queue: str, raw: aio_pika.abc.AbstractChannel
) -> None:
    """A purge or a delete of the consumer's own queue: the broker cancels the subscription,
    the robust channel declares the queue again and subscribes anew; sends go on."""
    got: list[int] = []
    consumer = RabbitMQConsumer(Queue(queue, Order), url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> None:
        got.append(msg.seq)

    await consumer.start()
    try:
        async with RabbitMQProducer(Queue(queue, Order), url=rabbitmq_url) as producer:
            await producer.send(order(1))
            await wait_until(lambda: got == [1], "the first message")
            await (await raw.get_queue(queue)).purge()
            await raw.queue_delete(queue)
            # Until the consumer's channel has declared it again, a send is refused clearly
            # (unroutable), never silently dropped; then sends are served as before.
            refusals: list[str] = []
            async with asyncio.timeout(WAIT):
                while True:
                    try:
                        await producer.send(order(2))
                        break
                    except PublishError as exc:
                        refusals.append(str(exc))
                        await asyncio.sleep(0.1)
            assert all("unroutable" in refusal for refusal in refusals)
            await wait_until(lambda: got == [1, 2], "a message after the delete")
            assert consumer.health()["consuming"]
    finally:
        await consumer.close()


async def test_a_consume_channel_closed_by_the_broker_is_reopened_and_subscribed_again(
    rabbitmq_url: str, queue: str
) -> None:
    """The broker closes the consumer's channel (here: an ack of a tag it never delivered,
    PRECONDITION_FAILED) while the connection stays up: aio-pika reopens the robust channel,
    its reopen callback subscribes again on the new aiormq channel, and the messages that
    were unacked on the old channel are redelivered and handled; none is lost."""
    got: list[int] = []
    consumer = RabbitMQConsumer(Queue(queue, Order), url=rabbitmq_url)

    @consumer()
    async def handle(msg: Order) -> None:
        got.append(msg.seq)

    await consumer.start()
    try:
        async with RabbitMQProducer(Queue(queue, Order), url=rabbitmq_url) as producer:
            await producer.send(order(1))
            await wait_until(lambda: got == [1], "the first message")
            old = consumer._consuming_on
            assert old is not None
            await old.basic_ack(10**6)  # an unknown tag: the broker closes the channel
            await wait_until(
                lambda: consumer._consuming_on is not None and consumer._consuming_on is not old,
                "a subscription on the reopened channel",
            )
            assert old.is_closed
            for seq in range(2, 12):
                await producer.send(order(seq))
            await wait_until(lambda: sorted(set(got)) == list(range(1, 12)), "every message")
            assert consumer.health()["consuming"]
    finally:
        await consumer.close()


@pytest.mark.parametrize(
    ("type_name", "source"),
    [
        ("OrderCreated", "//host/orders-service"),
        ("Ünïcode_Type", "//hôst/sërvice/" + "x" * 300),  # a long source: a long string
        ("json", ""),
    ],
)
def test_prepared_properties_encode_exactly_as_pamqp_does(type_name: str, source: str) -> None:
    """A plain send's properties are encoded from prebuilt parts (`_Stamp`): byte for byte
    what pamqp writes field by field, for every message id, time and second."""
    import pamqp.commands
    import pamqp.header

    from streamtools._codec import new_metadata
    from streamtools._foreign.pamqp import WiredProperties
    from streamtools.transports.rabbitmq import _wire as rabbitmq

    stamp = rabbitmq._Stamp(type_name, source, "application/json")
    checked = 0
    for _ in range(300):
        meta = new_metadata(type_name, source)
        properties = stamp.properties(meta)
        assert isinstance(properties, WiredProperties)
        expected = pamqp.commands.Basic.Properties.marshal(properties)  # pamqp's own encoding
        assert properties.marshal() == expected
        # and it reads back as the same metadata
        header = pamqp.header.ContentHeader()
        frame = pamqp.header.ContentHeader(body_size=10, properties=properties).marshal()
        header.unmarshal(frame)
        assert header.properties.headers == properties.headers
        assert header.properties.message_id == meta.id
        checked += 1
    assert checked == 300
    # Extra headers (trace context) and messages of another shape take pamqp's encoding.
    meta = new_metadata(type_name, source)
    traced = msgspec.structs.replace(meta, headers={"traceparent": "00-" + "1" * 32 + "-x-01"})
    assert not isinstance(stamp.properties(traced), WiredProperties)
    retried = msgspec.structs.replace(meta, attempt=2)
    assert not isinstance(stamp.properties(retried), WiredProperties)
