"""Billing service: turns every OrderCreated into an InvoiceIssued.

Run it as a process (`python -m examples.billing`, or `streamtools run
examples.billing:consumers`). The transport is picked by name from QUEUE_TYPE, so this code
is the same over HTTP, RabbitMQ and memory. Over HTTP it listens on BILLING_PORT and sends
invoices to the ledger on LEDGER_PORT.
"""

from __future__ import annotations

import logging
import os
import uuid
from datetime import UTC, datetime, timedelta

from examples.contracts import BILLING_INVOICED, ORDERS_CREATED, InvoiceIssued, OrderCreated
from streamtools import HTTP, MEMORY, PRODUCERS, ConsumerFactory, ConsumerRunner

QUEUE_TYPE = os.environ.get("QUEUE_TYPE", MEMORY)
HOST = os.environ.get("BILLING_HOST", "127.0.0.1")
PORT = int(os.environ.get("BILLING_PORT", "8081"))
LEDGER_PORT = int(os.environ.get("LEDGER_PORT", "8082"))


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


consumers = ConsumerFactory(QUEUE_TYPE, port=PORT, host=HOST)
invoices = PRODUCERS[QUEUE_TYPE](
    BILLING_INVOICED, **({"host": "127.0.0.1", "port": LEDGER_PORT} if QUEUE_TYPE == HTTP else {})
)


@consumers.route(ORDERS_CREATED)
async def on_order(order: OrderCreated) -> None:
    await invoices.send(invoice_for(order))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="billing: %(message)s")
    app = ConsumerRunner(
        consumers=consumers.instances, handlers=consumers.handlers, port=PORT, host=HOST
    )
    app.on_shutdown.append(invoices.close)
    app.run()


if __name__ == "__main__":
    main()
