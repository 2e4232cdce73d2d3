"""Right uses: the registry keeps T, handlers of the right type decorate cleanly."""

from __future__ import annotations

import os
from typing import Any

from streamtools import (
    CONSUMER_LOOPS,
    CONSUMERS,
    HTTP,
    MEMORY,
    PRODUCERS,
    Batch,
    Consumer,
    Producer,
)

from .models import ORDERS, OrderCreated, PaymentDone

QUEUE_TYPE = os.environ.get("QUEUE_TYPE", HTTP)


async def service() -> None:
    producer = PRODUCERS[QUEUE_TYPE](ORDERS)
    typed: Producer[OrderCreated] = producer
    await typed.a_init()
    message_id: str = await producer.send(OrderCreated(order_id=1))
    await producer.send(OrderCreated(order_id=2), method="GET", header_tag="JSON")

    consumer = CONSUMER_LOOPS[QUEUE_TYPE](ORDERS)
    same: Consumer[OrderCreated] = consumer
    await same.a_init()

    @consumer()
    async def on_order(msg: OrderCreated) -> None:
        print(msg.order_id, message_id)

    # A batch handler takes a list of the queue's type.
    @CONSUMER_LOOPS[MEMORY](ORDERS)(batch=Batch(max_size=10, max_wait=0.5))
    async def on_orders(batch: list[OrderCreated]) -> None:
        print([msg.order_id for msg in batch])

    @CONSUMERS[MEMORY]("payments", message_type=PaymentDone)()
    async def on_payment(msg: PaymentDone) -> PaymentDone:
        return msg

    # A reply type is what request returns.
    reply: PaymentDone = await producer.request(OrderCreated(order_id=3), reply_type=PaymentDone)
    print(reply.payment_id)

    # Seed-style bare names are untyped: anything JSON goes.
    raw = PRODUCERS[QUEUE_TYPE]("queue_1")
    untyped: Producer[Any] = raw
    await untyped.send({"anything": [1, 2]})
