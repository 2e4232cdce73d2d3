"""Billing service: turns every OrderCreated into an InvoiceIssued.

The transport is picked by name from QUEUE_TYPE, so this code is the same over memory, HTTP
and RabbitMQ.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

from generated import BILLING_INVOICED, ORDERS_CREATED, InvoiceIssued, OrderCreated
from streamtools import CONSUMER_LOOPS, MEMORY, PRODUCERS, Consumer, Producer

QUEUE_TYPE = os.environ.get("QUEUE_TYPE", MEMORY)


def invoice_for(order: OrderCreated) -> InvoiceIssued:
    """The invoice billing issues for `order`."""
    now = datetime.now(UTC)
    return InvoiceIssued(
        invoice_id=uuid.uuid4(),
        order_id=order.order_id,
        total=round(sum(item.quantity * item.unit_price for item in order.items), 2),
        currency=order.currency,
        issued_at=now,
        due_date=(now + timedelta(days=30)).date(),
    )


def billing_service(
    queue_type: str = QUEUE_TYPE,
) -> tuple[Consumer[OrderCreated], Producer[InvoiceIssued]]:
    """The billing consumer of orders and the producer of invoices it sends through."""
    orders = CONSUMER_LOOPS[queue_type](ORDERS_CREATED)
    invoices = PRODUCERS[queue_type](BILLING_INVOICED)

    @orders()
    async def on_order(order: OrderCreated) -> None:
        await invoices.send(invoice_for(order))

    return orders, invoices
