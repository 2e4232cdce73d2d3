"""Wrong uses: each line marked with an E-comment must be a mypy error with that code."""

from __future__ import annotations

from streamtools import CONSUMER_LOOPS, MEMORY, PRODUCERS, Batch, Producer
from streamtools.transports.memory import MemoryProducer

from .models import ORDERS, OrderCreated, PaymentDone


async def service() -> None:
    producer = PRODUCERS[MEMORY](ORDERS)
    await producer.send(PaymentDone(payment_id=1))  # E: arg-type
    await producer.send({"order_id": 1})  # E: arg-type
    wrong: Producer[PaymentDone] = producer  # E: assignment

    consumer = CONSUMER_LOOPS[MEMORY](ORDERS)

    @consumer()  # E: arg-type
    async def on_payment(msg: PaymentDone) -> None:
        pass

    @consumer()  # E: arg-type
    def not_async(msg: OrderCreated) -> None:
        pass

    @consumer(batch=Batch())  # E: arg-type
    async def one_not_a_list(msg: OrderCreated) -> None:
        pass

    @consumer()  # E: arg-type
    async def a_list_without_batch(batch: list[OrderCreated]) -> None:
        pass

    direct = MemoryProducer(ORDERS)
    await direct.send(PaymentDone(payment_id=2))  # E: arg-type
    reply: OrderCreated = await producer.request(
        OrderCreated(order_id=1),
        reply_type=PaymentDone,  # E: arg-type
    )
    print(wrong, on_payment, not_async, one_not_a_list, a_list_without_batch, reply)
