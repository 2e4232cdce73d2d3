"""`make demo`: push orders through the example services and print what happens.

Runs on the in-process memory transport: no broker, no ports, one process.
"""

from __future__ import annotations

import asyncio
import sys
import time

from examples.billing import billing_service
from examples.orders import make_order, orders_producer
from generated import BILLING_INVOICED, InvoiceIssued
from streamtools import CONSUMER_LOOPS, MEMORY, ValidationError

ORDERS = 200


async def main(queue_type: str = MEMORY, count: int = ORDERS) -> int:
    billing, invoice_producer = billing_service(queue_type)
    invoices = CONSUMER_LOOPS[queue_type](BILLING_INVOICED)
    received: list[InvoiceIssued] = []
    all_in = asyncio.Event()

    @invoices()
    async def on_invoice(invoice: InvoiceIssued) -> None:
        received.append(invoice)
        if len(received) == count:
            all_in.set()

    started = time.perf_counter()
    await billing.start()
    await invoices.start()
    rejected = 0
    async with orders_producer(queue_type) as orders:
        for seq in range(count):
            await orders.send(make_order(seq))
            if (seq + 1) % 50 == 0:
                print(f"  sent {seq + 1:>4}/{count} orders, {len(received):>4} invoices back")
        # A wrong message is the sender's error, named by field, before anything leaves.
        broken = make_order(count)
        broken.items[0].quantity = 0
        try:
            await orders.send(broken)
        except ValidationError as exc:
            rejected += 1
            print(f"  rejected at the sender: {exc.path}: {exc}")
    try:
        async with asyncio.timeout(30):
            await all_in.wait()
    except TimeoutError:
        print(f"demo: only {len(received)} of {count} invoices arrived", file=sys.stderr)
        return 1
    finally:
        await asyncio.gather(billing.close(), invoices.close(), invoice_producer.close())
    elapsed = time.perf_counter() - started
    total = sum(invoice.total for invoice in received)
    print(
        f"demo ({queue_type}): sent {count}, handled {len(received)}, rejected {rejected}, "
        f"invoiced {total:,.2f} in {elapsed:.2f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
