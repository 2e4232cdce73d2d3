"""The Kafka transport on aiokafka: acknowledged with acks=all, at-least-once, one file.

Topics: the topic is the queue name. `a_init()` creates it and `<queue>.dlq` when missing
(`partitions=`, 3 by default; `replication_factor=`, by default as many as the cluster has
brokers, up to 3); a topic that exists with another partition count is used as it is.

Wire format: the CloudEvents Kafka protocol binding in binary mode. The record value is the
message's JSON (or msgpack) alone; the headers are `ce_id`, `ce_type`, `ce_source`,
`ce_specversion`, `ce_time` and `content-type` (UTF-8), so plain Kafka clients and the
CloudEvents SDK read our records, and theirs reach our typed handlers.

Producers: `send` returns once the broker acknowledged the record with `acks=all`;
`idempotence=None` (the default) turns the idempotent producer on where the broker supports
it and off, with one log line, where it refuses it. Send options: `key=` (records with one
key go to one partition and keep their order) and `headers=`.

Consumers: one consumer group per queue (`group=`, else `KAFKA_GROUP`, else the queue name):
members of a group share the partitions, like competing RabbitMQ consumers share a queue,
and each group gets every record. The delivery policy is the core's (retry with backoff,
dead-letter to `<queue>.dlq` with the error headers, the `.dlq` rule): Kafka has no delayed
delivery, so a retry copy is produced to the topic's tail once its backoff delay has passed
(the original stays unsettled meanwhile). Handlers run concurrently across keys and in order
within a key (at most `max_in_flight` at once); offsets are committed per partition only up
to the contiguous settled prefix (the core's settle window), so a crash, a rebalance or a cut
connection redelivers and never loses. On partitions revoked, in-flight work on them
finishes (up to `shutdown_timeout`) and the settled offsets are committed before they go.
Request/reply is not offered (the capabilities say so).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import ssl as _ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

# Without aiokafka the registry says: pip install 'streamtools[kafka]'.
import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from streamtools._base import Capabilities, Producer
from streamtools._binding import HeaderBinding
from streamtools._codec import Metadata, type_name
from streamtools._deadlines import Deadlines
from streamtools._delivery import DeliveryLost, Incoming, QueuedConsumer, dead_letter_queue
from streamtools._settings import choice, integer, seconds
from streamtools._types import Queue, T
from streamtools._window import SettleWindow
from streamtools.errors import ConfigurationError, ConnectError, PublishError, StreamtoolsError

__all__ = ["KafkaConsumer", "KafkaProducer"]

logger = logging.getLogger("streamtools.kafka")
logger.addHandler(logging.NullHandler())

TRANSPORT: Final = "KafkaHandler"
BINDING: Final = HeaderBinding("ce_", content_type_header="content-type")
"""The CloudEvents Kafka binding: `ce_` attributes and a `content-type` header."""

_SEND_OPTIONS: Final = frozenset({"key", "headers"})
_SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_POLL_TIMEOUT_MS: Final = 500
_COPY_TIMEOUT: Final = 30.0
_COMMIT_LINGER: Final = 0.05  # seconds a commit may wait for more settled records to cover
# Brokers of this process that refused the idempotent producer: asked once, not per client.
_NO_IDEMPOTENCE: set[str] = set()
# Kafka errors after which a send may succeed once the connection is back.
_RETRIABLE: Final = (aiokafka.errors.KafkaConnectionError, aiokafka.errors.KafkaTimeoutError)


# --- configuration ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Settings:
    bootstrap_servers: str
    client_id: str
    ssl: _ssl.SSLContext | None
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None = field(repr=False)
    partitions: int
    replication_factor: int | None

    @property
    def security_protocol(self) -> str:
        if self.sasl_mechanism is not None:
            return "SASL_SSL" if self.ssl is not None else "SASL_PLAINTEXT"
        return "SSL" if self.ssl is not None else "PLAINTEXT"

    def client(self) -> dict[str, Any]:
        """aiokafka's connection keywords (the password only ever goes here)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.ssl is not None:
            options["ssl_context"] = self.ssl
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        return options

    @property
    def where(self) -> str:
        user = f" as {self.sasl_username!r}" if self.sasl_username else ""
        return f"Kafka at {self.bootstrap_servers}{user}"


def _settings(
    owner: str,
    bootstrap_servers: str | None,
    client_id: str | None,
    ssl: _ssl.SSLContext | None,
    sasl_mechanism: str | None,
    sasl_username: str | None,
    sasl_password: str | None,
    partitions: int,
    replication_factor: int | None,
) -> _Settings:
    # Environment read once, here; explicit keywords win.
    env = os.environ.get
    servers = bootstrap_servers or env("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
    if not all(part.strip().rpartition(":")[0] for part in servers.split(",")):
        raise ConfigurationError(
            f"{owner}: bootstrap_servers must be 'host:port[,host:port...]', got {servers!r}"
        )
    mechanism = sasl_mechanism or env("KAFKA_SASL_MECHANISM") or None
    username = sasl_username or env("KAFKA_SASL_USERNAME") or None
    password = sasl_password or env("KAFKA_SASL_PASSWORD") or None
    if mechanism is not None:
        mechanism = choice(owner, "sasl_mechanism", mechanism.upper(), _SASL_MECHANISMS)
        if not username or not password:
            raise ConfigurationError(
                f"{owner}: SASL {mechanism} needs a username and a password "
                "(sasl_username=/sasl_password= or KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD)"
            )
    elif username or password:
        raise ConfigurationError(
            f"{owner}: a SASL username or password is set but no mechanism; pass "
            f"sasl_mechanism= (or KAFKA_SASL_MECHANISM): one of {', '.join(_SASL_MECHANISMS)}"
        )
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise ConfigurationError(f"{owner}: ssl must be an ssl.SSLContext, got {ssl!r}")
    factor = (
        None
        if replication_factor is None
        else integer(owner, "replication_factor", replication_factor, minimum=1)
    )
    return _Settings(
        servers.replace(" ", ""),
        client_id or env("KAFKA_CLIENT_ID") or "streamtools",
        ssl,
        mechanism,
        username,
        password,
        integer(owner, "partitions", partitions, minimum=1),
        factor,
    )


def _translate(exc: BaseException, settings: _Settings, what: str) -> StreamtoolsError:
    """The one place aiokafka errors become streamtools errors."""
    if isinstance(exc, StreamtoolsError):
        return exc
    if isinstance(
        exc,
        aiokafka.errors.TopicAuthorizationFailedError
        | aiokafka.errors.GroupAuthorizationFailedError,
    ):
        return ConfigurationError(
            f"{what}: {settings.where} refused access ({type(exc).__name__}); check the "
            "user's ACLs on the topic and the consumer group"
        )
    if isinstance(
        exc, aiokafka.errors.IllegalSaslStateError | aiokafka.errors.UnsupportedSaslMechanismError
    ):
        return ConnectError(
            f"{what}: {settings.where} refused the SASL login ({type(exc).__name__}); check "
            "KAFKA_SASL_* or the sasl_ settings"
        )
    if isinstance(exc, aiokafka.errors.KafkaConnectionError | OSError | TimeoutError):
        return ConnectError(
            f"{what}: cannot reach {settings.where}: {exc or type(exc).__name__}; check "
            "KAFKA_BOOTSTRAP_SERVERS or bootstrap_servers=, and that the broker runs there"
        )
    return ConnectError(f"{what}: {settings.where} failed: {type(exc).__name__}: {exc}")


async def _ensure_topics(settings: _Settings, names: Iterable[str], timeout: float) -> None:
    """Create the topics that are missing; existing ones are used as they are."""
    admin = AIOKafkaAdminClient(**settings.client(), request_timeout_ms=int(timeout * 1000))
    wanted = list(dict.fromkeys(names))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [name for name in wanted if name not in existing]
            if not missing:
                return
            factor = settings.replication_factor
            if factor is None:
                brokers = (await admin.describe_cluster()).get("brokers") or [None]
                factor = min(3, len(brokers))
            response = await admin.create_topics(
                [NewTopic(name, settings.partitions, factor) for name in missing]
            )
            for error in response.topic_errors:
                topic, code = error[0], error[1]
                if code not in (0, aiokafka.errors.TopicAlreadyExistsError.errno):
                    message = error[2] if len(error) > 2 else ""
                    raise ConfigurationError(
                        f"{settings.where} refused to create topic {topic!r}: "
                        f"{aiokafka.errors.for_code(code).__name__} {message or ''}".rstrip()
                    )
    except StreamtoolsError:
        raise
    except (aiokafka.errors.KafkaError, OSError, TimeoutError) as exc:
        raise _translate(exc, settings, f"creating topics {', '.join(wanted)}") from exc
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _headers(meta: Metadata, extra: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
    headers = BINDING.write(meta)
    if extra:
        headers.update(extra)
    return [(key, value.encode()) for key, value in headers.items()]


# --- the producing client, shared by producers and by consumers' copies ----------------------


class _Client:
    """One started AIOKafkaProducer (acks=all) and the send-until-acknowledged rule."""

    def __init__(self, settings: _Settings, idempotence: bool | None, role: str) -> None:
        self.settings = settings
        self.idempotence = idempotence
        self.role = role
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self._deadlines = Deadlines()

    async def start(self, timeout: float) -> None:
        wanted = [True, False] if self.idempotence is None else [self.idempotence]
        if self.idempotence is None and self.settings.bootstrap_servers in _NO_IDEMPOTENCE:
            wanted = [False]
        for idempotent in wanted:
            producer = aiokafka.AIOKafkaProducer(
                **self.settings.client(),
                acks="all",
                enable_idempotence=idempotent,
                request_timeout_ms=int(timeout * 1000),
            )
            try:
                async with asyncio.timeout(timeout):
                    # An idempotent producer gets its producer id here: a broker that
                    # refuses idempotence says so now, not at the first send.
                    await producer.start()
            except (aiokafka.errors.KafkaError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if (
                    idempotent
                    and self.idempotence is None
                    and not isinstance(
                        exc, aiokafka.errors.KafkaConnectionError | OSError | TimeoutError
                    )
                ):
                    _NO_IDEMPOTENCE.add(self.settings.bootstrap_servers)
                    logger.info(
                        "%s refuses the idempotent producer (%s); producing without it",
                        self.settings.where,
                        type(exc).__name__,
                        extra={"role": self.role},
                    )
                    continue
                raise _translate(exc, self.settings, f"{self.role}: connecting") from exc
            self.producer = producer
            return

    async def publish(
        self,
        topic: str,
        body: bytes,
        headers: list[tuple[str, bytes]],
        key: bytes | None,
        *,
        timeout: float,
        what: str,
    ) -> None:
        """Produce and wait for the broker's acknowledgement, up to `timeout` seconds."""
        producer = self.producer
        if producer is None:
            raise PublishError(f"{what}: not sent, the {self.role} is closed")
        # The client's one deadline timer bounds the wait (see streamtools._deadlines).
        wait = self._deadlines.start(timeout)
        try:
            while True:
                try:
                    await producer.send_and_wait(topic, body, key=key, headers=headers)
                    return
                except _RETRIABLE as exc:
                    # aiokafka gave up on this batch; the connection may come back.
                    logger.info(
                        "produce interrupted, producing again: %s",
                        exc,
                        extra={"queue": topic},
                    )
                    await asyncio.sleep(0.2)
        except (asyncio.CancelledError, TimeoutError) as exc:
            if isinstance(exc, asyncio.CancelledError) and not wait.timed_out():
                raise
            raise PublishError(
                f"{what}: not acknowledged by {self.settings.where} within {timeout} s; it "
                "may or may not have been stored"
            ) from None
        except aiokafka.errors.KafkaError as exc:
            raise PublishError(f"{what}: {self.settings.where} refused it: {exc}") from exc
        finally:
            self._deadlines.finish(wait)

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()


# --- producer --------------------------------------------------------------------------------


class _KafkaEndpoint:
    """What Kafka producers and consumers share: the connection settings, the producing
    client (a consumer's retry and dead-letter copies), and the trace attributes."""

    transport: ClassVar[str] = TRANSPORT
    messaging_system: ClassVar[str] = "kafka"
    _settings: _Settings
    _client: _Client
    connect_timeout: float

    @property
    def server_address(self) -> tuple[str, int] | None:
        """The first bootstrap server."""
        host, _, port = self._settings.bootstrap_servers.split(",")[0].rpartition(":")
        return host, int(port) if port.isdigit() else 9092

    def _connect(
        self,
        role: str,
        *,
        bootstrap_servers: str | None,
        client_id: str | None,
        ssl: _ssl.SSLContext | None,
        sasl_mechanism: str | None,
        sasl_username: str | None,
        sasl_password: str | None,
        connect_timeout: float,
        idempotence: bool | None,
        partitions: int,
        replication_factor: int | None,
    ) -> None:
        owner = type(self).__name__
        self._settings = _settings(
            owner,
            bootstrap_servers,
            client_id,
            ssl,
            sasl_mechanism,
            sasl_username,
            sasl_password,
            partitions,
            replication_factor,
        )
        self.connect_timeout = seconds(owner, "connect_timeout", connect_timeout, positive=True)
        if idempotence is not None and not isinstance(idempotence, bool):
            raise ConfigurationError(f"{owner}: idempotence must be True, False or None")
        self._client = _Client(self._settings, idempotence, role)


class KafkaProducer(_KafkaEndpoint, Producer[T]):
    """Produces to a Kafka topic; `send` returns once the broker acknowledged (acks=all).

    Settings: `bootstrap_servers=` (else `KAFKA_BOOTSTRAP_SERVERS`, else localhost:9092),
    `client_id=`, `ssl=` an SSLContext, `sasl_mechanism=` (PLAIN, SCRAM-SHA-256/512) with
    `sasl_username=`/`sasl_password=` (else `KAFKA_SASL_*`), `send_timeout=` (how long `send`
    waits, also through a lost connection), `idempotence=` (None: where supported),
    `partitions=`/`replication_factor=` for the topics it creates. Send options: `key=` and
    `headers=`.
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        bootstrap_servers: str | None = None,
        client_id: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        idempotence: bool | None = None,
        partitions: int = 3,
        replication_factor: int | None = None,
    ) -> None:
        super().__init__(queue, message_type=message_type, source=source, validate=validate)
        self._connect(
            f"producer {self.queue.name}",
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            ssl=ssl,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            connect_timeout=connect_timeout,
            idempotence=idempotence,
            partitions=partitions,
            replication_factor=replication_factor,
        )
        owner = type(self).__name__
        self.send_timeout = seconds(owner, "send_timeout", send_timeout, positive=True)
        self._constant: dict[tuple[str, str, str], list[tuple[str, bytes]]] = {}

    def __repr__(self) -> str:
        return f"KafkaProducer({self.queue.name!r}, {self._settings.where})"

    async def _open(self) -> None:
        name = self.queue.name
        topics = (name, dead_letter_queue(name))
        await _ensure_topics(self._settings, topics, self.connect_timeout)
        await self._client.start(self.connect_timeout)

    async def _close(self) -> None:
        await self._client.close()

    def _options(self, options: Mapping[str, object]) -> tuple[bytes | None, dict[str, str]]:
        if not options:
            return None, {}
        unknown = set(options) - _SEND_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"KafkaProducer.send has no option {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(_SEND_OPTIONS))}"
            )
        key = options.get("key")
        if key is not None and not isinstance(key, str | bytes):
            raise ConfigurationError(f"send option key must be str or bytes, got {key!r}")
        headers = options.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ConfigurationError("send option headers must be a mapping of str to str")
        reserved = sorted(k for k in headers if k in BINDING.owned)
        if reserved:
            raise ConfigurationError(
                f"send option headers may not set {', '.join(reserved)}; streamtools sets them"
            )
        return (key.encode() if isinstance(key, str) else key), dict(headers)

    def _wire_headers(self, meta: Metadata, extra: Mapping[str, str]) -> list[tuple[str, bytes]]:
        # The producer's constant headers are encoded once; only id and time per message.
        cache_key = (meta.type, meta.source, meta.content_type)
        constant = self._constant.get(cache_key)
        if constant is None:
            built = BINDING.constant(meta.type, meta.source, meta.content_type)
            constant = self._constant[cache_key] = [(k, v.encode()) for k, v in built.items()]
        headers = [(BINDING.id, meta.id.encode()), (BINDING.time, meta.time.encode()), *constant]
        if meta.headers:  # the trace context, when tracing
            headers.extend((k, v.encode()) for k, v in meta.headers.items())
        if extra:
            headers.extend((k, v.encode()) for k, v in extra.items())
        return headers

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        key, extra = self._options(options)
        await self._client.publish(
            self.queue.name,
            body,
            self._wire_headers(meta, extra),
            key,
            timeout=self.send_timeout,
            what=f"message {meta.id} to topic {self.queue.name!r}",
        )


# --- consumer --------------------------------------------------------------------------------


class _Partition:
    """One assigned partition: its settle window (offsets) and the deliveries running on it."""

    __slots__ = ("last", "running", "window")

    def __init__(self, window: SettleWindow) -> None:
        self.window = window
        self.running: set[asyncio.Task[None]] = set()
        self.last = -1  # the last offset received: the window takes increasing ones only


class _Incoming(Incoming):
    """One Kafka record and the policy's hooks on it."""

    __slots__ = ("consumer", "key", "offset", "partition", "tp")

    def __init__(
        self,
        consumer: KafkaConsumer[Any],
        tp: TopicPartition,
        partition: _Partition,
        offset: int,
        key: bytes | None,
        body: bytes,
        meta: Metadata,
    ) -> None:
        super().__init__(body, meta)
        self.consumer = consumer
        self.tp = tp
        self.partition = partition
        self.offset = offset
        self.key = key

    @property
    def span_attributes(self) -> dict[str, object]:
        attributes: dict[str, object] = {
            "messaging.consumer.group.name": self.consumer.group,
            "messaging.destination.partition.id": str(self.tp.partition),
            "messaging.kafka.offset": self.offset,
        }
        if self.key is not None:
            attributes["messaging.kafka.message.key"] = self.key.decode("utf-8", "replace")
        return attributes

    def _owned(self) -> bool:
        # After a rebalance took the partition away, the new owner handles the record.
        return self.consumer._partitions.get(self.tp) is self.partition

    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)  # Kafka has no delayed delivery: hold the record
        if not self._owned():
            raise DeliveryLost
        await self.consumer._client.publish(
            target,
            self.body,
            _headers(meta),
            self.key,
            timeout=_COPY_TIMEOUT,
            what=f"copy of message {meta.id} to topic {target!r}",
        )

    async def settle(self) -> None:
        if self._owned():
            self.partition.window.settled(self.offset)

    async def requeue(self) -> None:
        # A record cannot go back on its own: a copy goes to the tail, then it is settled.
        # If even that fails the record stays unsettled and is redelivered after a restart
        # or a rebalance (its offset is never committed past).
        await self.publish(self.tp.topic, self.meta, 0.0)
        await self.settle()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, consumer: KafkaConsumer[Any]) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.consumer._revoke(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.consumer._assign(assigned)


class KafkaConsumer(_KafkaEndpoint, QueuedConsumer[T]):
    """A member of the queue's consumer group; commits offsets of settled records only.

    Connection settings as on `KafkaProducer`; `group=` (else `KAFKA_GROUP`, else the queue
    name), `max_in_flight=` handlers at once, `max_retries=`, `retry_delay=`,
    `max_retry_delay=`, `shutdown_timeout=`, `session_timeout=` (seconds before the group
    gives a silent member's partitions to the others).
    """

    capabilities = Capabilities(
        queued=True, persistent=True, redelivery=True, dead_letter=True, request_reply=False
    )

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        bootstrap_servers: str | None = None,
        client_id: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        connect_timeout: float = 10.0,
        group: str | None = None,
        max_in_flight: int = 16,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 60.0,
        max_message_size: int = 1024 * 1024,
        shutdown_timeout: float = 30.0,
        session_timeout: float = 10.0,
        idempotence: bool | None = None,
        partitions: int = 3,
        replication_factor: int | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            max_message_size=max_message_size,
            shutdown_timeout=shutdown_timeout,
        )
        self._connect(
            f"consumer {self.queue.name}",
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            ssl=ssl,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            connect_timeout=connect_timeout,
            idempotence=idempotence,
            partitions=partitions,
            replication_factor=replication_factor,
        )
        owner = type(self).__name__
        self.session_timeout = seconds(owner, "session_timeout", session_timeout, positive=True)
        self.max_in_flight = integer(owner, "max_in_flight", max_in_flight, minimum=1)
        self.group = group or os.environ.get("KAFKA_GROUP") or self.queue.name
        self._consumer: aiokafka.AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._key_tails: dict[bytes, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._loop_task: asyncio.Task[None] | None = None
        self._default_type = type_name(self.queue.message_type)

    def __repr__(self) -> str:
        return f"KafkaConsumer({self.queue.name!r}, group={self.group!r}, {self._settings.where})"

    @property
    def connected(self) -> bool:
        """True while the group has given this member its partitions (or it waits for some)."""
        return super().connected and self._consumer is not None

    async def _open(self) -> None:
        name = self.queue.name
        await _ensure_topics(self._settings, (name, self.dead_letter_queue), self.connect_timeout)
        await self._client.start(self.connect_timeout)
        consumer = aiokafka.AIOKafkaConsumer(
            **self._settings.client(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_in_flight,
            session_timeout_ms=int(self.session_timeout * 1000),
            heartbeat_interval_ms=max(100, int(self.session_timeout * 1000 / 3)),
            request_timeout_ms=int(max(self.connect_timeout, self.session_timeout + 5) * 1000),
        )
        try:
            # Connects only: the group join starts with the subscription in _start (it can
            # take a few rebalance rounds; a_init should not wait for them).
            async with asyncio.timeout(self.connect_timeout):
                await consumer.start()
        except (aiokafka.errors.KafkaError, OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self._client.close()
            raise _translate(exc, self._settings, f"consumer {name}: joining") from exc
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self._client.close()
            raise
        self._consumer = consumer

    async def _start(self) -> None:
        assert self._consumer is not None
        self._consumer.subscribe([self.queue.name], listener=_Rebalance(self))
        self._loop_task = asyncio.get_running_loop().create_task(self._consume())
        logger.debug("consuming", extra={"queue": self.queue.name, "group": self.group})

    def _assign(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in assigned:
            if tp in self._partitions:
                continue

            async def commit(offset: int, multiple: bool, tp: TopicPartition = tp) -> None:
                assert consumer is not None
                await consumer.commit({tp: offset + 1})  # the next offset to read

            # A commit is a round trip to the group coordinator: one per `max_in_flight`
            # settled records of the partition, or `_COMMIT_LINGER` after the first of them.
            window = SettleWindow(
                commit, spill=None, batch=self.max_in_flight, linger=_COMMIT_LINGER
            )
            self._partitions[tp] = _Partition(window)

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        """Finish what runs on the revoked partitions, commit, and let them go."""
        gone = [(tp, self._partitions[tp]) for tp in revoked if tp in self._partitions]
        running = {task for _, partition in gone for task in partition.running}
        if running:
            await asyncio.wait(running, timeout=self.shutdown_timeout)
        for tp, partition in gone:
            with contextlib.suppress(Exception):
                await partition.window.close()
            del self._partitions[tp]

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        slots = self._slots
        while True:
            try:
                batches = await consumer.getmany(
                    timeout_ms=_POLL_TIMEOUT_MS, max_records=self.max_in_flight
                )
            except aiokafka.errors.KafkaError as exc:
                logger.warning("fetch failed, retrying: %s", exc, extra={"queue": self.queue.name})
                await asyncio.sleep(0.5)
                continue
            for tp, records in batches.items():
                # The partition as it was when these records were fetched: if a rebalance
                # takes it away (or gives it back anew) while they wait for a slot, they are
                # dropped; whoever owns it now fetches them again from the committed offset.
                partition = self._partitions.get(tp)
                for record in records:
                    await slots.acquire()
                    if (
                        partition is None
                        or self._partitions.get(tp) is not partition
                        or record.offset <= partition.last
                    ):
                        slots.release()
                        continue
                    self._take(tp, partition, record)

    def _take(self, tp: TopicPartition, partition: _Partition, record: Any) -> None:
        headers = dict(record.headers or ())
        meta = BINDING.read(
            headers,
            default_type=self._default_type,
            id=f"{tp.topic}-{tp.partition}-{record.offset}",
            # The record's own time only for a foreign record without ce_time.
            time=None if BINDING.time in headers else _record_time(record.timestamp),
        )
        partition.window.received(record.offset)
        partition.last = record.offset
        key: bytes | None = record.key
        incoming = _Incoming(self, tp, partition, record.offset, key, record.value or b"", meta)
        after = self._key_tails.get(key) if key is not None else None
        task = self._accept(incoming, after=after)
        partition.running.add(task)
        task.add_done_callback(partition.running.discard)
        if key is not None:
            self._key_tails[key] = task
            task.add_done_callback(functools.partial(self._forget_tail, key))

    def _forget_tail(self, key: bytes, task: asyncio.Task[None]) -> None:
        if self._key_tails.get(key) is task:
            del self._key_tails[key]

    def _delivery_done(self) -> None:
        self._slots.release()
        super()._delivery_done()

    async def _stop_intake(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)

    async def _close(self) -> None:
        # Commit what the handlers finished, then leave the group (aiokafka does not call
        # on_partitions_revoked on stop).
        for partition in list(self._partitions.values()):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.connect_timeout):
                    await partition.window.close()
        self._partitions.clear()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await self._client.close()


def _record_time(timestamp_ms: int | None) -> str | None:
    if not timestamp_ms or timestamp_ms < 0:
        return None
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
