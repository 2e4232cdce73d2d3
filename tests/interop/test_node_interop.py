"""Another language at the other end: a plain Node.js service talks to streamtools.

The Node side (tests/interop/node/: amqplib, kafkajs, fetch and node:http, nothing of
ours) sends the camelCase JSON of tests/contracts/polyglot/ to streamtools consumers and
reads what streamtools producers send, over RabbitMQ, Kafka and HTTP. The Python side uses
the package `streamtools codegen` generates from those schemas at test time:

- the handler gets the validated Struct (snake_case attributes, the wire's values);
- an invalid message never reaches the handler: it is dead-lettered to `<queue>.dlq` with
  an `x-error-message` naming the wire field (`$.total.amountCents`), or answered 422 with
  that path, and the next valid message is still handled;
- Node gets the exact wire JSON streamtools encoded: camelCase keys, no snake_case ones.

Real brokers only (RabbitMQ at `RMQ_URL`, Kafka from the `kafka_bootstrap` fixture), unique
queue names per test. Node.js 20+ and npm must be on PATH: the session fixture runs
`npm ci` when tests/interop/node/node_modules is missing or stale; on CI (`CI` set) a
missing node or npm fails the tests, elsewhere it skips them, saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any
from uuid import UUID, uuid4

import msgspec
import pytest
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

from streamtools import Queue, RetryPolicy, current_metadata
from streamtools._codec import codec_for
from streamtools.transports.http import HTTPConsumer, HTTPProducer
from streamtools.transports.kafka import KafkaConsumer, KafkaProducer
from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer
from tests.conftest import unique_name
from tests.support.queues import delete_queues

NODE_DIR = Path(__file__).parent / "node"
WAIT = 60.0  # bound for every wait on a peer or a broker; never a pass/fail timing threshold


# --- Node.js -----------------------------------------------------------------------------------


def _installed(package: str, version: str) -> bool:
    manifest = NODE_DIR / "node_modules" / package / "package.json"
    try:
        return bool(json.loads(manifest.read_text())["version"] == version)
    except (OSError, ValueError, KeyError):
        return False


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` executable, with the packages of tests/interop/node installed (`npm ci`)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing = " and ".join(name for name, path in (("node", node), ("npm", npm)) if not path)
        why = f"{missing} not on PATH: the Node.js interop test needs Node.js 20+ and npm"
        if os.environ.get("CI"):
            pytest.fail(why, pytrace=False)
        pytest.skip(f"{why} (skipped outside CI only; on CI this fails)")
    version = subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=True, timeout=WAIT
    ).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 20:
        pytest.fail(f"Node.js {version} is too old: the interop test needs 20+", pytrace=False)
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    if not all(_installed(name, version) for name, version in pinned.items()):
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"npm ci in {NODE_DIR} failed:\n{done.stdout}\n{done.stderr}")
    return node


class Peer:
    """A running Node.js script: JSON events from its stdout, its stderr kept for failures."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: IO[bytes], what: str):
        self.process = process
        self._stderr = stderr
        self.what = what

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    async def event(self) -> dict[str, Any]:
        """The next JSON line the script prints; fails the test if it exits or stalls first."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(WAIT):
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
        except TimeoutError:
            pytest.fail(f"{self.what} printed nothing in {WAIT} s; stderr:\n{self.stderr()}")
        if not line:
            pytest.fail(
                f"{self.what} exited {self.process.returncode} early; stderr:\n{self.stderr()}"
            )
        event: dict[str, Any] = json.loads(line)
        return event

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next `count` events other than `{"ready": true}`."""
        got: list[dict[str, Any]] = []
        while len(got) < count:
            event = await self.event()
            if event != {"ready": True}:
                got.append(event)
        return got

    async def finish(self) -> None:
        """Wait for the script to exit; anything but exit 0 fails the test."""
        try:
            async with asyncio.timeout(WAIT):
                code = await self.process.wait()
        except TimeoutError:
            pytest.fail(f"{self.what} did not exit in {WAIT} s; stderr:\n{self.stderr()}")
        if code != 0:
            pytest.fail(f"{self.what} exited {code}; stderr:\n{self.stderr()}")


@contextlib.asynccontextmanager
async def node_peer(node: str, script: str, *args: str) -> AsyncIterator[Peer]:
    """Run `node <script> <args>` in tests/interop/node; killed and reaped on the way out."""
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            node,
            str(NODE_DIR / script),
            *args,
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        try:
            yield Peer(process, stderr, f"node {script} {args[0]}")
        finally:
            if process.returncode is None:
                process.kill()
            async with asyncio.timeout(WAIT):
                await process.wait()


async def node_run(node: str, script: str, *args: str, events: int) -> list[dict[str, Any]]:
    """Run a Node.js script to its end: its `events` JSON lines, and exit 0."""
    async with node_peer(node, script, *args) as peer:
        got = await peer.events(events)
        await peer.finish()
    return got


# --- contracts -----------------------------------------------------------------------------


CONTRACTS_DIR = Path(__file__).parents[1] / "contracts" / "polyglot"


@pytest.fixture(scope="session")
def contracts(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The package `streamtools codegen` generates from tests/contracts/polyglot/, imported.

    Imported under a name of its own, and the queues it registers on import are taken back
    out of the process-wide registry: another test generating the same schemas (other
    classes, same queue names) must not clash with these. The tests use unique queue names.
    """
    from streamtools import _contracts
    from streamtools.codegen import generate

    out = tmp_path_factory.mktemp("interop")
    package = "interop_polyglot_contracts"
    generate(CONTRACTS_DIR, out / package)
    registered = dict(_contracts._contracts)
    sys.path.insert(0, str(out))
    try:
        _contracts._contracts.clear()
        module = importlib.import_module(package)
    finally:
        sys.path.remove(str(out))
        _contracts._contracts.clear()
        _contracts._contracts.update(registered)
    return module


def order_wire(amount_cents: int = 1999) -> dict[str, Any]:
    """An OrderPlaced as the Java/Node side writes it: camelCase, no default-valued fields."""
    return {
        "eventId": str(uuid4()),
        "occurredAt": "2026-03-04T05:06:07.890Z",  # JavaScript's Date.toISOString()
        "orderId": str(uuid4()),
        "customerName": "Ada Lovelace",
        "total": {"amountCents": amount_cents, "currency": "EUR"},
        "lines": [{"sku": "ABC-1234", "quantity": 2}, {"sku": "XYZ-0042", "quantity": 1}],
        "couponCode": "SPRING2026",
        "tags": ["gift", "express"],
    }


def assert_order_matches(msg: Any, wire: dict[str, Any], contracts: ModuleType) -> None:
    """The handler's Struct carries what Node sent, under snake_case attributes."""
    assert isinstance(msg, contracts.OrderPlaced)
    assert msg.event_id == UUID(wire["eventId"])
    assert msg.occurred_at == datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    assert msg.order_id == UUID(wire["orderId"])
    assert msg.customer_name == wire["customerName"]
    assert msg.total.amount_cents == wire["total"]["amountCents"]
    assert [(line.sku, line.quantity) for line in msg.lines] == [
        (line["sku"], line["quantity"]) for line in wire["lines"]
    ]
    assert msg.coupon_code == wire["couponCode"]
    assert msg.tags == wire["tags"]
    # And back to the wire: the same document (only the timestamp's spelling differs).
    again = msgspec.to_builtins(msg)
    assert again.pop("occurredAt") == "2026-03-04T05:06:07.890000Z"
    assert again == {k: v for k, v in wire.items() if k != "occurredAt"}


ORDER_NAMES = ("eventId", "occurredAt", "orderId", "customerName", "amountCents", "couponCode")


def make_order(contracts: ModuleType) -> Any:
    """An OrderPlaced as a Python service builds it: snake_case keywords."""
    return contracts.OrderPlaced(
        event_id=uuid4(),
        occurred_at=datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC),
        order_id=uuid4(),
        customer_name="Grace Hopper",
        total=contracts.Money(amount_cents=2500, currency="USD"),
        lines=[contracts.OrderLine(sku="QRS-0007", quantity=3)],
        coupon_code="WELCOME1",
    )


def keys(document: Any) -> set[str]:
    """Every object key anywhere in a JSON document."""
    if isinstance(document, dict):
        return set(document) | {k for value in document.values() for k in keys(value)}
    if isinstance(document, list):
        return {k for value in document for k in keys(value)}
    return set()


def assert_exact_wire(body: str, msg: Any, *wire_names: str) -> None:
    """What Node read is byte for byte what streamtools encoded, under the wire's camelCase
    names (`wire_names` among them) and no snake_case one."""
    encoded = codec_for(type(msg)).encode(msg)
    assert body.encode() == encoded
    document = json.loads(body)
    assert document == msgspec.json.decode(encoded)
    names = keys(document)
    assert set(wire_names) <= names, names
    assert not any("_" in name for name in names), f"snake_case on the wire: {names}"


# --- RabbitMQ ------------------------------------------------------------------------------


@pytest.fixture
async def rabbit_queue(rabbitmq_url: str) -> AsyncIterator[str]:
    """A unique queue name; it and its .dlq and retry queues are deleted after the test."""
    name = unique_name("st-interop-node")
    yield name
    await delete_queues(rabbitmq_url, [name])


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT):
            while not condition():  # noqa: ASYNC110 - polling a plain predicate
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT} s waiting for {what}")


async def test_rabbitmq_node_sends_camelcase_and_the_handler_gets_the_struct(
    node: str, contracts: ModuleType, rabbitmq_url: str, rabbit_queue: str
) -> None:
    got: list[tuple[Any, str, str]] = []
    consumer = RabbitMQConsumer(Queue(rabbit_queue, contracts.OrderPlaced), url=rabbitmq_url)

    @consumer()
    async def handle(msg: Any) -> None:
        meta = current_metadata()
        got.append((msg, meta.id, meta.type))

    wire = order_wire()
    await consumer.start()  # declares the queue (and .dlq) the Node service publishes into
    try:
        [sent] = await node_run(
            node, "amqp.mjs", "send", rabbitmq_url, rabbit_queue, json.dumps([wire]), events=1
        )
        await wait_for(lambda: bool(got), "the Node.js message at the handler")
    finally:
        await consumer.close()
    [(msg, ident, type_)] = got
    assert_order_matches(msg, wire, contracts)
    assert ident == sent["sent"][0]  # the AMQP message-id stands for the missing ce-id
    assert type_ == "OrderPlaced"


async def test_rabbitmq_invalid_node_message_is_dead_lettered_naming_the_wire_field(
    node: str, contracts: ModuleType, rabbitmq_url: str, rabbit_queue: str
) -> None:
    got: list[Any] = []
    consumer = RabbitMQConsumer(Queue(rabbit_queue, contracts.OrderPlaced), url=rabbitmq_url)

    @consumer()
    async def handle(msg: Any) -> None:
        got.append(msg)

    invalid, valid = order_wire(amount_cents=-5), order_wire()
    invalid_body = json.dumps(invalid, separators=(",", ":"))
    await consumer.start()
    try:
        [sent] = await node_run(
            node,
            "amqp.mjs",
            "send",
            rabbitmq_url,
            rabbit_queue,
            json.dumps([invalid_body, valid]),
            events=1,
        )
        # The Node service reads the dead letter too, as an operator's tool would.
        [dead] = await node_run(
            node, "amqp.mjs", "receive", rabbitmq_url, f"{rabbit_queue}.dlq", "1", events=1
        )
        await wait_for(lambda: bool(got), "the valid message after the invalid one")
    finally:
        await consumer.close()
    [msg] = got  # the invalid one never reached the handler
    assert_order_matches(msg, valid, contracts)
    assert dead["body"] == invalid_body  # the body as Node sent it
    properties = dead["properties"]
    assert properties["messageId"] == sent["sent"][0]
    headers = properties["headers"]
    print(f"\ndead letter as amqplib reads it: {headers}")
    assert headers["x-death-reason"] == "invalid"
    assert headers["x-error-type"] == "ValidationError"
    assert "$.total.amountCents" in headers["x-error-message"]
    assert "amount_cents" not in headers["x-error-message"]
    assert headers["x-original-queue"] == rabbit_queue


async def test_rabbitmq_node_reads_the_exact_wire_json_streamtools_sends(
    node: str, contracts: ModuleType, rabbitmq_url: str, rabbit_queue: str
) -> None:
    msg = make_order(contracts)
    async with RabbitMQProducer(
        Queue(rabbit_queue, contracts.OrderPlaced), url=rabbitmq_url
    ) as producer:
        ident = await producer.send(msg)  # the producer declares the queue; the message waits
    [got] = await node_run(node, "amqp.mjs", "receive", rabbitmq_url, rabbit_queue, "1", events=1)
    assert_exact_wire(got["body"], msg, *ORDER_NAMES)
    properties = got["properties"]
    assert properties["contentType"] == "application/json"
    assert properties["messageId"] == ident
    assert properties["headers"]["ce-type"] == "OrderPlaced"


async def test_rabbitmq_tagged_union_both_ways(
    node: str, contracts: ModuleType, rabbitmq_url: str, rabbit_queue: str
) -> None:
    """PaymentReceived's `method` (kind: card | bank_transfer) between Node and streamtools."""
    got: list[Any] = []
    queue = Queue(rabbit_queue, contracts.PaymentReceived)
    consumer = RabbitMQConsumer(queue, url=rabbitmq_url)

    @consumer()
    async def handle(msg: Any) -> None:
        got.append(msg)

    card: dict[str, Any] = {
        "paymentId": str(uuid4()),
        "amount": {"amountCents": 4200, "currency": "GBP"},
        "method": {"kind": "card", "last4": "4242"},
        "reference": "INV-7",
        "receivedAt": 1767225600,
    }
    cash = {**card, "paymentId": str(uuid4()), "method": {"kind": "cash"}}
    await consumer.start()
    try:
        await node_run(
            node, "amqp.mjs", "send", rabbitmq_url, rabbit_queue, json.dumps([cash, card]), events=1
        )
        [dead] = await node_run(
            node, "amqp.mjs", "receive", rabbitmq_url, f"{rabbit_queue}.dlq", "1", events=1
        )
        await wait_for(lambda: bool(got), "the card payment at the handler")
    finally:
        await consumer.close()
    [msg] = got
    assert isinstance(msg.method, contracts.Card)
    assert msg.method.last4 == "4242"
    assert msg.payment_id == UUID(card["paymentId"])
    assert msg.amount.amount_cents == 4200
    assert msg.received_at == 1767225600
    assert msgspec.to_builtins(msg) == card
    assert json.loads(dead["body"])["method"] == {"kind": "cash"}
    assert "$.method.kind" in dead["properties"]["headers"]["x-error-message"]

    # And back: a Python-built Card goes out with its tag, as the Node side expects it.
    payment = contracts.PaymentReceived(
        payment_id=uuid4(),
        amount=contracts.Money(amount_cents=100, currency="EUR"),
        method=contracts.Card(last4="0005"),
    )
    async with RabbitMQProducer(queue, url=rabbitmq_url) as producer:
        await producer.send(payment)
    [read] = await node_run(node, "amqp.mjs", "receive", rabbitmq_url, rabbit_queue, "1", events=1)
    assert_exact_wire(read["body"], payment, "paymentId", "amountCents")
    assert json.loads(read["body"])["method"] == {"kind": "card", "last4": "0005"}


# --- Kafka ---------------------------------------------------------------------------------


@pytest.fixture
async def kafka_topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A unique topic name; it and its .dlq are deleted after the test."""
    name = unique_name("st-interop-node")
    yield name
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        gone = [topic for topic in (name, f"{name}.dlq") if topic in existing]
        if gone:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


def kafka_consumer(topic: str, servers: str, message_type: type[Any]) -> KafkaConsumer[Any]:
    return KafkaConsumer(
        Queue(topic, message_type),
        bootstrap_servers=servers,
        session_timeout=6,
        shutdown_timeout=10,
        connect_timeout=10,
    )


async def test_kafka_node_sends_camelcase_and_the_handler_gets_the_struct(
    node: str, contracts: ModuleType, kafka_bootstrap: str, kafka_topic: str
) -> None:
    got: list[tuple[Any, str]] = []
    consumer = kafka_consumer(kafka_topic, kafka_bootstrap, contracts.OrderPlaced)

    @consumer()
    async def handle(msg: Any) -> None:
        got.append((msg, current_metadata().type))

    wire = order_wire()
    await consumer.a_init()  # creates the topic (and .dlq) the Node service produces to
    try:
        await node_run(
            node, "kafka.mjs", "send", kafka_bootstrap, kafka_topic, json.dumps([wire]), events=1
        )
        await consumer.start()
        await wait_for(lambda: bool(got), "the Node.js record at the handler")
    finally:
        await consumer.close()
    [(msg, type_)] = got
    assert_order_matches(msg, wire, contracts)
    assert type_ == "OrderPlaced"


async def test_kafka_invalid_node_record_is_dead_lettered_naming_the_wire_field(
    node: str, contracts: ModuleType, kafka_bootstrap: str, kafka_topic: str
) -> None:
    got: list[Any] = []
    consumer = kafka_consumer(kafka_topic, kafka_bootstrap, contracts.OrderPlaced)

    @consumer()
    async def handle(msg: Any) -> None:
        got.append(msg)

    invalid, valid = order_wire(amount_cents=-5), order_wire()
    invalid_body = json.dumps(invalid, separators=(",", ":"))
    await consumer.a_init()
    try:
        await node_run(
            node,
            "kafka.mjs",
            "send",
            kafka_bootstrap,
            kafka_topic,
            json.dumps([invalid_body, valid]),
            events=1,
        )
        await consumer.start()
        await wait_for(lambda: bool(got), "the valid record after the invalid one")
        [dead] = await node_run(
            node,
            "kafka.mjs",
            "receive",
            kafka_bootstrap,
            f"{kafka_topic}.dlq",
            "1",
            unique_name("interop-node-dlq"),
            events=1,
        )
    finally:
        await consumer.close()
    [msg] = got  # the invalid one never reached the handler
    assert_order_matches(msg, valid, contracts)
    assert dead["body"] == invalid_body
    headers = dead["headers"]
    print(f"\ndead letter as kafkajs reads it: {headers}")
    assert headers["x-death-reason"] == "invalid"
    assert headers["x-error-type"] == "ValidationError"
    assert "$.total.amountCents" in headers["x-error-message"]
    assert "amount_cents" not in headers["x-error-message"]
    assert headers["x-original-queue"] == kafka_topic


async def test_kafka_node_reads_the_exact_wire_json_streamtools_sends(
    node: str, contracts: ModuleType, kafka_bootstrap: str, kafka_topic: str
) -> None:
    msg = make_order(contracts)
    async with KafkaProducer(
        Queue(kafka_topic, contracts.OrderPlaced), bootstrap_servers=kafka_bootstrap
    ) as producer:
        ident = await producer.send(msg, key=str(msg.order_id))  # creates the topic first
    [got] = await node_run(
        node,
        "kafka.mjs",
        "receive",
        kafka_bootstrap,
        kafka_topic,
        "1",
        unique_name("interop-node"),
        events=1,
    )
    assert_exact_wire(got["body"], msg, *ORDER_NAMES)
    assert got["key"] == str(msg.order_id)
    assert got["headers"]["content-type"] == "application/json"
    assert got["headers"]["ce_id"] == ident
    assert got["headers"]["ce_type"] == "OrderPlaced"


# --- HTTP ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving(consumer: HTTPConsumer[Any]) -> AsyncIterator[HTTPConsumer[Any]]:
    await consumer.start()
    try:
        yield consumer
    finally:
        async with asyncio.timeout(WAIT):
            await consumer.close()


def http_consumer(message_type: type[Any]) -> HTTPConsumer[Any]:
    name = unique_name("st-interop-node")
    return HTTPConsumer(Queue(name, message_type), host="127.0.0.1", port=0)


async def test_http_node_posts_camelcase_and_the_handler_gets_the_struct(
    node: str, contracts: ModuleType
) -> None:
    got: list[Any] = []
    consumer = http_consumer(contracts.OrderPlaced)

    @consumer()
    async def handle(msg: Any) -> None:
        got.append(msg)

    wire = order_wire()
    async with serving(consumer):
        [answer] = await node_run(
            node, "http.mjs", "send", consumer.url, json.dumps([wire]), events=1
        )
    assert answer["status"] == 204, answer
    [msg] = got
    assert_order_matches(msg, wire, contracts)


async def test_http_invalid_node_post_is_answered_422_naming_the_wire_field(
    node: str, contracts: ModuleType
) -> None:
    got: list[Any] = []
    consumer = http_consumer(contracts.OrderPlaced)

    @consumer()
    async def handle(msg: Any) -> None:
        got.append(msg)

    invalid, valid = order_wire(amount_cents=-5), order_wire()
    # `uniqueItems` is a keyword msgspec cannot express: the JSON Schema validator checks it.
    repeated = {**order_wire(), "tags": ["gift", "gift"]}
    async with serving(consumer):
        rejected, repeated_tags, accepted = await node_run(
            node,
            "http.mjs",
            "send",
            consumer.url,
            json.dumps([invalid, repeated, valid]),
            events=3,
        )
    print(f"\n422s as fetch() reads them: {rejected}, {repeated_tags}")
    for answer, path in ((rejected, "$.total.amountCents"), (repeated_tags, "$.tags")):
        assert answer["status"] == 422, answer
        assert answer["contentType"].startswith("application/json")
        error = json.loads(answer["body"])
        assert error["error"] == "validation"
        assert error["path"] == path
        assert path in error["detail"]
    assert "amount_cents" not in rejected["body"]
    assert accepted["status"] == 204, accepted
    [msg] = got  # neither invalid one reached the handler
    assert_order_matches(msg, valid, contracts)


async def test_http_node_server_reads_the_exact_wire_json_streamtools_posts(
    node: str, contracts: ModuleType
) -> None:
    msg = make_order(contracts)
    name = unique_name("st-interop-node")
    async with node_peer(node, "http.mjs", "serve", "1") as server:
        port = (await server.event())["port"]
        async with HTTPProducer(
            Queue(name, contracts.OrderPlaced),
            host="127.0.0.1",
            port=port,
            resend=RetryPolicy(attempts=0),
        ) as producer:
            ident = await producer.send(msg, endpoint=f"http://127.0.0.1:{port}/orders/in")
        [request] = await server.events(1)
        await server.finish()
    assert request["method"] == "POST"
    assert request["url"] == "/orders/in"
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["ce-id"] == ident
    assert request["headers"]["ce-type"] == "OrderPlaced"
    assert_exact_wire(request["body"], msg, *ORDER_NAMES)


def test_the_node_side_is_pinned_and_its_modules_are_not_committed() -> None:
    """Exact versions in package.json and a committed lockfile; node_modules gitignored."""
    manifest = json.loads((NODE_DIR / "package.json").read_text())
    assert set(manifest["dependencies"]) == {"amqplib", "kafkajs"}
    for name, version in manifest["dependencies"].items():
        assert version[0].isdigit(), f"{name} is not pinned to an exact version: {version}"
    lock = json.loads((NODE_DIR / "package-lock.json").read_text())
    for name, version in manifest["dependencies"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    ignored = (Path(__file__).parents[2] / ".gitignore").read_text().split()
    assert "node_modules/" in ignored
