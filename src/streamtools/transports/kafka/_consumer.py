"""`KafkaConsumer`: a member of the queue's consumer group; commits settled offsets only.

One consumer group per queue (`group=`, else `KAFKA_GROUP`, else the queue name): members of
a group share the partitions, like competing RabbitMQ consumers share a queue, and each group
gets every record. The delivery policy is the core's (retry with backoff, dead-letter to
`<queue>.dlq` with the error headers, the `.dlq` rule): Kafka has no delayed delivery, so a
retry copy is produced to the topic's tail once its backoff delay has passed (the original
stays unsettled meanwhile). Handlers run concurrently across keys and in order within a key
(at most `max_in_flight` at once); offsets are committed per partition only up to the
contiguous settled prefix (the core's settle window), so a crash, a rebalance or a cut
connection redelivers and never loses. On partitions revoked, in-flight work on them
finishes and the settled offsets are committed before they go; the group waits for that at
most its rebalance timeout (the session timeout), so the wait for handlers ends in time for
the commit: a handler still running then keeps running, and its record, not committed, goes
to the partition's next owner again (at-least-once) instead of the member being dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl as _ssl
from collections.abc import Sequence
from typing import Any, Final

import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from streamtools._base import Capabilities
from streamtools._codec import Metadata, type_name
from streamtools._delivery import DeliveryLost, Incoming, InFlight, QueuedConsumer
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy, seconds
from streamtools._types import Queue, T
from streamtools._window import SettleWindow
from streamtools.transports.kafka._endpoint import KafkaEndpoint
from streamtools.transports.kafka._errors import translate
from streamtools.transports.kafka._topics import ensure_topics
from streamtools.transports.kafka._wire import record_headers, record_metadata

logger = logging.getLogger("streamtools.kafka")

_POLL_TIMEOUT_MS: Final = 500
# How long the broker may hold a fetch that finds no new records. aiokafka sends one fetch per
# broker for all its partitions there, and none while one is out: with its default (500 ms),
# a partition read to the end of its log held the next records of the others for up to that
# long, every time (0.45 s stalls measured on Tansu, halving the throughput; at 100 ms still
# 0.1 s ones). The cost: an idle member asks each broker 20 times a second instead of twice.
_FETCH_MAX_WAIT_MS: Final = 50
_COPY_TIMEOUT: Final = 30.0
_COMMIT_LINGER: Final = 0.05  # seconds a commit may wait for more settled records to cover


class _Partition:
    """One assigned partition: its settle window (offsets) and the deliveries running on it."""

    __slots__ = ("last", "running", "window")

    def __init__(self, window: SettleWindow) -> None:
        self.window = window
        self.running = InFlight()  # its records accepted and not yet done
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
            record_headers(meta),
            self.key,
            timeout=_COPY_TIMEOUT,
            what=f"copy of message {meta.id} to topic {target!r}",
        )

    async def settle(self) -> None:
        self.settle_now()

    def settle_now(self) -> bool:
        if self._owned():
            self.partition.window.settled(self.offset)
        return True

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


class KafkaConsumer(KafkaEndpoint, QueuedConsumer[T]):
    """A member of the queue's consumer group; commits offsets of settled records only.

    Connection settings as on `KafkaProducer`; `group=` (else `KAFKA_GROUP`, else the queue
    name), `retry=` (a RetryPolicy), `limits=` (Limits: `max_in_flight` handlers at once,
    also the records per poll and per commit), `shutdown_timeout=`, `session_timeout=`
    (seconds before the group gives a silent member's partitions to the others).
    """

    capabilities = Capabilities(
        queued=True,
        persistent=True,
        redelivery=True,
        dead_letter=True,
        request_reply=False,
        ordered=True,
        consumer_groups=True,
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
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
        session_timeout: float = 10.0,
        idempotence: bool | None = None,
        partitions: int = 3,
        replication_factor: int | None = None,
        # deprecated, for one release: retry=RetryPolicy(...), limits=Limits(...)
        max_in_flight: int | None = None,
        max_retries: int | None = None,
        retry_delay: float | None = None,
        max_retry_delay: float | None = None,
        max_message_size: int | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            retry=retry,
            limits=limits,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
            max_in_flight=max_in_flight,
            max_retries=max_retries,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            max_message_size=max_message_size,
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
        # A commit waits at most this long: within the group's rebalance timeout (the session
        # timeout), so a member committing on revoke is never dropped for it.
        self._commit_timeout = min(self.connect_timeout, self.session_timeout / 2)
        # What a revoke waits for its partitions' handlers: the rest of the rebalance timeout
        # (aiokafka's is the session timeout) once the commit's bound is kept for the commit.
        self._revoke_wait = min(self.shutdown_timeout, self.session_timeout - self._commit_timeout)
        self.group = group or os.environ.get("KAFKA_GROUP") or self.queue.name
        self._consumer: aiokafka.AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, _Partition] = {}
        # Free handler slots (of max_in_flight): a counter, not a Semaphore, so the fetch
        # loop pays no coroutine per record while slots are free; `_freed` wakes it when not.
        self._free = self.max_in_flight
        self._freed: asyncio.Future[None] | None = None
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
        await ensure_topics(self._settings, (name, self.dead_letter_queue), self.connect_timeout)
        await self._client.start(self.connect_timeout)
        consumer = aiokafka.AIOKafkaConsumer(
            **self._settings.client(),
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_in_flight,
            fetch_max_wait_ms=_FETCH_MAX_WAIT_MS,
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
            raise translate(exc, self._settings, f"consumer {name}: joining") from exc
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
        self._loop_task.add_done_callback(self._loop_ended)
        logger.debug("consuming", extra={"queue": self.queue.name, "group": self.group})

    @property
    def _where(self) -> dict[str, object]:
        return {"queue": self.queue.name, "group": self.group}

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Said loudly: from here this member takes nothing, and health() says so.
            logger.error("consuming stopped", exc_info=task.exception(), extra=self._where)

    @property
    def serving(self) -> bool:
        """Started, not closed, and still taking records (its fetch loop is alive)."""
        task = self._loop_task
        return super().serving and (task is None or not task.done())

    def _assign(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        for tp in assigned:
            if tp in self._partitions:
                continue

            async def commit(offset: int, multiple: bool, tp: TopicPartition = tp) -> None:
                assert consumer is not None
                # Bounded: aiokafka retries a retriable commit error without end, and a
                # commit that hangs would hold the window's flush (and a rebalance, below)
                # with it. One that times out is sent again with the next (see SettleWindow).
                async with asyncio.timeout(self._commit_timeout):
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
        running: set[asyncio.Future[None]] = {partition.running.idle() for _, partition in gone}
        if self._batcher is not None:  # a partition's batches run in order: its last one
            running.update(filter(None, (self._batcher.flush(tp) for tp, _ in gone)))
        if running:
            _, late = await asyncio.wait(running, timeout=self._revoke_wait)
            if late:
                logger.warning(
                    "partitions %s revoked while handlers still ran after %.1f s: their records "
                    "are not committed and go to the partitions' next owner again",
                    sorted(tp.partition for tp, _ in gone),
                    self._revoke_wait,
                    extra=self._where,
                )
        for tp, partition in gone:
            # Each commit is bounded (`commit` above): the group waits for this callback, so
            # a commit that hung would stall the whole group's rebalance until the broker
            # dropped this member. Not committed, the records are delivered again.
            with contextlib.suppress(Exception):
                await partition.window.close()
            del self._partitions[tp]

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        batcher = self._batcher
        gathering = False  # batches may be open: look whether more records wait, first
        while True:
            try:
                batches = await consumer.getmany(
                    timeout_ms=0 if gathering else _POLL_TIMEOUT_MS, max_records=self.max_in_flight
                )
            except aiokafka.errors.KafkaError as exc:
                logger.warning("fetch failed, retrying: %s", exc, extra={"queue": self.queue.name})
                await asyncio.sleep(0.5)
                continue
            except Exception:
                # Anything else (a client bug, a rebalance edge) must not end this loop: the
                # consumer would look healthy while its partitions stood still.
                logger.exception("fetch failed unexpectedly, retrying", extra=self._where)
                await asyncio.sleep(0.5)
                continue
            if batcher is not None:
                if gathering and not batches:
                    # Everything fetched is taken: the open batches go now, as getmany's
                    # batches do, instead of waiting out max_wait for records still to come.
                    batcher.flush_all()
                gathering = bool(batches)
            # Each partition as it was when these records were fetched, read before the
            # first await below: if a rebalance takes one away (or gives it back anew) while
            # its records wait for a slot, they are dropped, and whoever owns it now fetches
            # them again from the committed offset. (Read per partition after the slot waits
            # of the ones before it, a partition given back anew took the old fetch's records
            # as its own and then skipped its refetch from the committed offset as seen.)
            owners = [(tp, self._partitions.get(tp), records) for tp, records in batches.items()]
            for tp, partition, records in owners:
                dropped: list[int] = []
                for record in records:
                    if self._free <= 0:
                        await self._slot_freed()
                    if (
                        partition is None
                        or self._partitions.get(tp) is not partition
                        or record.offset <= partition.last
                    ):
                        dropped.append(record.offset)
                        continue
                    self._free -= 1
                    self._take(tp, partition, record)
                if dropped:
                    self._dropped(tp, partition, dropped)

    async def _slot_freed(self) -> None:
        """Wait until a delivery ends and frees a handler slot."""
        while self._free <= 0:
            self._freed = asyncio.get_running_loop().create_future()
            try:
                await self._freed
            finally:
                self._freed = None

    def _dropped(
        self, tp: TopicPartition, partition: _Partition | None, offsets: list[int]
    ) -> None:
        """Say which fetched records were left for a refetch, and why (a rebalance's trace)."""
        if partition is None:
            why = "the partition was not assigned to this member when they were fetched"
        elif self._partitions.get(tp) is not partition:
            why = "a rebalance took the partition meanwhile"
        else:
            why = f"taken before (the last offset taken is {partition.last})"
        logger.info(
            "%d fetched records of partition %d (offsets %d-%d) not taken: %s",
            len(offsets),
            tp.partition,
            offsets[0],
            offsets[-1],
            why,
            extra=self._where,
        )

    def _take(self, tp: TopicPartition, partition: _Partition, record: Any) -> None:
        meta = record_metadata(tp.topic, tp.partition, record, self._default_type)
        partition.window.received(record.offset)
        partition.last = record.offset
        key: bytes | None = record.key
        incoming = _Incoming(self, tp, partition, record.offset, key, record.value or b"", meta)
        if self._batcher is not None:  # batches per partition, in order (see _revoke)
            self._accept(incoming, batch_key=tp)
        else:  # in order per key; waited for if the partition is revoked
            self._accept(incoming, order_key=key, group=partition.running)

    def _delivery_done(self) -> None:
        self._free += 1
        freed = self._freed
        if freed is not None and not freed.done():
            freed.set_result(None)
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
