"""A hand-written stand-in for what `streamtools codegen` makes of tests/contracts/polyglot/.

Same shape as the generated package: snake_case attributes renamed to the camelCase wire
names, `allOf` merged into one Struct, the payment method a tagged union on `kind`. Used
by the interop test only until codegen generates these schemas; then deleted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from streamtools import Queue


class Money(Struct, omit_defaults=True, kw_only=True):
    amount_cents: Annotated[int, Meta(ge=0)] = msgspec.field(name="amountCents")
    currency: Literal["EUR", "USD", "GBP"]


class OrderLine(Struct, omit_defaults=True, kw_only=True):
    sku: Annotated[str, Meta(pattern=r"^[A-Z]{3}-[0-9]{4}$")]
    quantity: Annotated[int, Meta(ge=1)]


class OrderPlaced(Struct, omit_defaults=True, kw_only=True):
    """A Java shop's order event: camelCase names, a shared base, OpenAPI nullable."""

    event_id: UUID = msgspec.field(name="eventId")
    occurred_at: datetime = msgspec.field(name="occurredAt")
    schema_: str | None = msgspec.field(name="$schema", default=None)
    order_id: UUID = msgspec.field(name="orderId")
    customer_name: Annotated[str, Meta(min_length=1, max_length=200)] | None = msgspec.field(
        name="customerName", default=None
    )
    total: Money
    lines: Annotated[list[OrderLine], Meta(min_length=1)]
    coupon_code: Annotated[str, Meta(pattern=r"^[A-Z0-9]{4,12}$")] | None = msgspec.field(
        name="couponCode", default=None
    )
    type: str = "order.placed"
    tags: list[str] | None = None
    placed_via: str | None = msgspec.field(name="placedVia", default=None)


class Card(Struct, omit_defaults=True, kw_only=True, tag_field="kind", tag="card"):
    last4: Annotated[str, Meta(pattern=r"^[0-9]{4}$")]


class BankTransfer(Struct, omit_defaults=True, kw_only=True, tag_field="kind", tag="bank_transfer"):
    iban: Annotated[str, Meta(min_length=15, max_length=34)]


class PaymentReceived(Struct, omit_defaults=True, kw_only=True):
    """A TypeScript service's payment event: a tagged union over the payment method."""

    payment_id: UUID = msgspec.field(name="paymentId")
    amount: Money
    method: Card | BankTransfer
    reference: Annotated[str, Meta(max_length=64)] | None = None
    received_at: int | None = msgspec.field(name="receivedAt", default=None)


POLYGLOT_ORDERS: Queue[OrderPlaced] = Queue("polyglot.orders", OrderPlaced)
POLYGLOT_PAYMENTS: Queue[PaymentReceived] = Queue("polyglot.payments", PaymentReceived)
