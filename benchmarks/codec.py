"""Codec cases: streamtools encode/decode vs bare msgspec, with pydantic v2 as a reference."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from benchmarks.harness import CODEC_DECODE, CODEC_ENCODE, Case, Contender, Workload, time_ops
from examples.contracts import OrderCreated
from examples.orders import make_order
from streamtools._codec import Codec, codec_for, new_metadata


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


# Issue 19: a contract that needs the JSON Schema validator costs at most 1.5x the same
# message's msgspec-only decode.
VALIDATOR_GOAL = 1 / 1.5

_BASE_SCHEMA: dict[str, Any] = {
    "title": "Shipment",
    "type": "object",
    "required": ["shipmentId", "lines", "tags"],
    "properties": {
        "shipmentId": {"type": "string", "format": "uuid"},
        "lines": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "quantity": {"type": "integer", "minimum": 1},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}
_SHIPMENT = {
    "shipmentId": "7b0f9a2e-1c55-4c1e-9d33-6f3c7e0f2a11",
    "lines": [{"sku": f"ABC-{1000 + n}", "quantity": n + 1} for n in range(5)],
    "tags": ["fragile", "express", "gift"],
}


def _generated(name: str, schema: dict[str, Any]) -> type[Any]:
    """The Struct codegen makes of `schema` (in a package of its own under a temp dir)."""
    import importlib
    import json
    import sys
    import tempfile
    from pathlib import Path

    from streamtools.codegen import generate

    root = Path(tempfile.mkdtemp(prefix="st-bench-"))
    (root / "schemas").mkdir()
    (root / "schemas" / "shipment.json").write_text(json.dumps(schema))
    generate(root / "schemas", root / name)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name).Shipment  # type: ignore[no-any-return]
    finally:
        sys.path.remove(str(root))


def _loop(ops: int, call: Callable[[], object]) -> Workload:
    """`ops` calls of `call`, timed."""

    async def body_() -> None:
        for _ in range(ops):
            call()

    async def run() -> tuple[int, float]:
        return await time_ops(ops, body_)

    return run


def validator_cases(ops: int) -> list[Case]:
    """Decoding a contract that needs the validator against the same message's msgspec-only
    decode: a rule on a field (checked field by field) and a rule on the whole object."""
    exact = _generated("bench_exact", _BASE_SCHEMA)
    by_field = _generated(
        "bench_by_field",
        {
            **_BASE_SCHEMA,
            "properties": {
                **_BASE_SCHEMA["properties"],
                "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            },
        },
    )
    whole = _generated(
        "bench_whole", {**_BASE_SCHEMA, "propertyNames": {"pattern": "^[a-z][A-Za-z]*$"}}
    )
    body = msgspec.json.encode(_SHIPMENT)
    exact_codec = codec_for(exact)

    loop = functools.partial(_loop, ops)

    cases_: list[Case] = []
    for label, struct in (("a field rule (uniqueItems)", by_field), ("an object rule", whole)):
        checked: Codec[Any] = codec_for(struct)
        cases_.append(
            Case(
                f"codec: decode, validator for {label}",
                Contender("streamtools", loop(functools.partial(checked.decode, body))),
                [
                    Contender(
                        "same message, msgspec only",
                        loop(lambda: exact_codec.decode(body)),
                        goal=VALIDATOR_GOAL,
                    )
                ],
            )
        )
    return cases_


def cases(ops: int) -> list[Case]:
    order = make_order(1)
    codec = codec_for(OrderCreated)
    encoder = msgspec.json.Encoder()
    decoder = msgspec.json.Decoder(OrderCreated)
    body = encoder.encode(order)
    model = _pydantic_model()
    instance = model.model_validate_json(body)

    loop = functools.partial(_loop, ops)

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
        *validator_cases(ops),
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
