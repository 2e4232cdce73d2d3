"""A handled batch is settled at once: one cumulative ack on RabbitMQ, one commit per
partition on Kafka (against the real brokers; the acks and commits counted where the
consumer sends them, on its settle windows)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiormq.abc

from streamtools import Batch, Limits, Queue
from streamtools._window import SettleWindow
from streamtools.transports.kafka import KafkaConsumer, KafkaProducer
from streamtools.transports.rabbitmq import RabbitMQConsumer, RabbitMQProducer
from tests.conftest import RMQ_URL, unique_name
from tests.support.queues import delete_queues
from tests.transports.test_kafka import Order, topics, wait_until

__all__ = ["topics"]  # the fixture, used by name


def counting(window: SettleWindow, acks: list[tuple[int, bool]]) -> None:
    """Record every acknowledgement `window` sends (position, multiple), then send it."""
    send = window._ack

    async def ack(position: int, multiple: bool) -> None:
        acks.append((position, multiple))
        await send(position, multiple)

    window._ack = ack


class CountingRabbitMQConsumer(RabbitMQConsumer[Order]):
    acks: list[tuple[int, bool]]

    def _new_window(self, channel: aiormq.abc.AbstractChannel) -> SettleWindow:
        window = super()._new_window(channel)
        counting(window, self.acks)
        return window


class CountingKafkaConsumer(KafkaConsumer[Order]):
    commits: dict[int, list[tuple[int, bool]]]

    def _assign(self, assigned: set[Any]) -> None:
        super()._assign(assigned)
        for tp in assigned:
            counting(self._partitions[tp].window, self.commits.setdefault(tp.partition, []))


async def test_a_rabbitmq_batch_is_settled_with_one_cumulative_ack() -> None:
    queue = Queue(unique_name("st-batch-ack"), Order)
    consumer = CountingRabbitMQConsumer(queue, url=RMQ_URL, limits=Limits(max_in_flight=40))
    consumer.acks = []
    batches: list[list[int]] = []

    @consumer(batch=Batch(max_size=40, max_wait=5.0))
    async def handle(batch: list[Order]) -> None:
        batches.append([order.seq for order in batch])

    try:
        async with RabbitMQProducer(queue, url=RMQ_URL) as producer:
            await consumer.a_init()  # declares the queue: the 40 wait there for the consumer
            await producer.send_many([Order(seq=i) for i in range(40)])
        await consumer.start()
        await wait_until(lambda: sum(map(len, batches)) == 40, "the batch of 40")
        await wait_until(lambda: bool(consumer.acks), "the acknowledgement")
        await asyncio.sleep(0.2)  # a second acknowledgement, if any, would have gone out
    finally:
        await consumer.close()
        await delete_queues(RMQ_URL, [queue.name])
    assert batches == [list(range(40))]
    assert consumer.acks == [(40, True)]  # one basic.ack, multiple, for the whole batch


async def test_a_kafka_batch_is_settled_with_one_commit_per_partition(
    kafka_bootstrap: str, topics: Callable[[str], str]
) -> None:
    topic = topics("batch-commit")
    consumer = CountingKafkaConsumer(
        Queue(topic, Order),
        bootstrap_servers=kafka_bootstrap,
        limits=Limits(max_in_flight=100),
        session_timeout=6,
        shutdown_timeout=10,
    )
    consumer.commits = {}
    batches: list[list[Order]] = []

    @consumer(batch=Batch(max_size=100, max_wait=5.0))
    async def handle(batch: list[Order]) -> None:
        batches.append(batch)

    try:
        async with KafkaProducer(Queue(topic, Order), bootstrap_servers=kafka_bootstrap) as p:
            # Three keys, one per partition if the hash spreads them; 20 records each.
            await asyncio.gather(
                *(p.send(Order(seq=i, key=f"k{i % 3}"), key=f"k{i % 3}") for i in range(60))
            )
        await consumer.start()
        await wait_until(lambda: sum(map(len, batches)) == 60, "the 60 records")
        await wait_until(lambda: bool(consumer.commits), "a commit")
        await asyncio.sleep(0.3)  # past the commit linger: a second commit would be out
    finally:
        await consumer.close()
    # Each batch holds one partition's records, in offset order (per key: in send order).
    for batch in batches:
        assert len({order.key for order in batch}) <= len(batch)
        for key in {order.key for order in batch}:
            seqs = [order.seq for order in batch if order.key == key]
            assert seqs == sorted(seqs)
    # One commit per partition and batch: the partitions' batches were each one batch here
    # (the records were all there before the consumer joined), so one commit each.
    per_partition = {p: c for p, c in consumer.commits.items() if c}
    assert len(per_partition) == len(batches), (per_partition, [len(b) for b in batches])
    for partition, commits in per_partition.items():
        assert len(commits) == 1, (partition, commits)
        assert commits[0][1] is True
