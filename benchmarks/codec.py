"""Codec cases: streamtools encode/decode vs bare msgspec, with pydantic v2 as a reference."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from benchmarks.harness import CODEC_DECODE, CODEC_ENCODE, Case, Contender, Workload, time_ops
from examples.contracts import OrderCreated
from examples.orders import make_order
from streamtools._codec import codec_for, new_metadata


def _pydantic_model() -> Any:
    from datetime import date, datetime
    from typing import Annotated, Literal
    from uuid import UUID

    from pydantic import AwareDatetime, BaseModel, Field

    class Customer(BaseModel):
        id: UUID
        email: Annotated[str, Field(min_length=3, max_length=254)]
        name: Annotated[str, Field(min_length=1, max_length=200)]

    class LineItem(BaseModel):
        sku: Annotated[str, Field(pattern=r"^[A-Z]{3}-[0-9]{4,8}$")]
        quantity: Annotated[int, Field(ge=1, le=1000)]
        unit_price: Annotated[float, Field(gt=0)]

    class Order(BaseModel):
        order_id: UUID
        customer: Customer
        items: Annotated[list[LineItem], Field(min_length=1, max_length=100)]
        currency: Literal["EUR", "USD", "GBP"]
        created_at: AwareDatetime
        requested_delivery: date | None = None
        note: Annotated[str, Field(max_length=500)] | None = None
        priority: Literal["low", "normal", "high"] = "normal"

    _ = datetime
    return Order


def cases(ops: int) -> list[Case]:
    order = make_order(1)
    codec = codec_for(OrderCreated)
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(OrderCreated)
    body = encoder.encode(order)
    model = _pydantic_model()
    instance = model.model_validate_json(body)

    def loop(call: Callable[[], object]) -> Workload:
        async def body_() -> None:
            for _ in range(ops):
                call()

        async def run() -> tuple[int, float]:
            return await time_ops(ops, body_)

        return run

    def st_encode() -> None:
        codec.encode(order, validate=False)
        new_metadata(codec.type_name, "//bench")

    def msgspec_with_metadata() -> None:
        # What a user of bare msgspec writes to get a message id and a timestamp.
        encoder.encode(order)
        str(uuid.uuid4())
        datetime.now(UTC).isoformat()

    def st_encode_validated() -> None:
        codec.encode(order)
        new_metadata(codec.type_name, "//bench")

    return [
        Case(
            "codec: encode + metadata",
            Contender("streamtools", loop(st_encode)),
            [
                # No ids, no times: a lower bound, not the same guarantees (reported).
                Contender("msgspec encode (bare)", loop(lambda: encoder.encode(order))),
                # The equal-guarantees line: what a msgspec user adds for an id and a time.
                Contender(
                    "msgspec + uuid4 + RFC3339 time",
                    loop(msgspec_with_metadata),
                    target=CODEC_ENCODE,
                ),
                Contender(
                    "pydantic v2 dump_json", loop(lambda: instance.model_dump_json()), goal=3.0
                ),
            ],
        ),
        Case(
            "codec: encode + send-side validation",
            Contender("streamtools", loop(st_encode_validated)),
            [Contender("pydantic v2 dump_json", loop(lambda: instance.model_dump_json()))],
            note="(reference)",
        ),
        Case(
            "codec: decode + validate",
            Contender("streamtools", loop(lambda: codec.decode(body))),
            [
                Contender(
                    "msgspec decode", loop(lambda: decoder.decode(body)), target=CODEC_DECODE
                ),
                Contender(
                    "pydantic v2 validate_json",
                    loop(lambda: model.model_validate_json(body)),
                    goal=3.0,
                ),
            ],
        ),
    ]
