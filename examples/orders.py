"""Orders: the orders the demo places (examples/demo.py plays the orders service)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

from examples.contracts import Customer, LineItem, OrderCreated


def make_order(seq: int, rng: random.Random | None = None) -> OrderCreated:
    """A realistic order with one to three line items."""
    rng = rng or random.Random(seq)
    return OrderCreated(
        order_id=uuid.UUID(int=rng.getrandbits(128), version=4),
        customer=Customer(id=uuid.uuid4(), email=f"buyer{seq}@example.com", name=f"Buyer {seq}"),
        items=[
            LineItem(
                sku=f"SKU-{rng.randint(1000, 9999)}",
                quantity=rng.randint(1, 5),
                unit_price=round(rng.uniform(1, 200), 2),
            )
            for _ in range(rng.randint(1, 3))
        ],
        currency=rng.choice(["EUR", "USD", "GBP"]),
        created_at=datetime.now(UTC),
    )
