from __future__ import annotations

import msgspec

from streamtools import Queue


class OrderCreated(msgspec.Struct, kw_only=True):
    order_id: int


class PaymentDone(msgspec.Struct, kw_only=True):
    payment_id: int


ORDERS: Queue[OrderCreated] = Queue("orders", OrderCreated)
