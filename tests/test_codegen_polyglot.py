"""Contracts from schemas other teams write (tests/contracts/polyglot): camelCase wire names, an
`allOf` over a shared base in another file, an OpenAPI discriminator, `nullable`, human titles,
a property called `$schema` or `type`, unknown formats and keywords, an object without
properties. Generated, round-tripped, and every violation rejected on both ends, naming the
wire field."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from streamtools import MEMORY, RetryPolicy, ValidationError
from streamtools._codec import Codec
from streamtools._schema import schema_check
from streamtools.codegen import generate, run
from streamtools.codegen._patterns import to_python
from tests.support.typecheck import mypy_strict

POLYGLOT = Path(__file__).parent / "contracts" / "polyglot"


def _package(schemas: Path, root: Path, name: str) -> ModuleType:
    """Generate `schemas` into the package `name` under `root` and import it."""
    generate(schemas, root / name)
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(root))


@pytest.fixture(scope="module")
def poly(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _package(POLYGLOT, tmp_path_factory.mktemp("poly"), "polyglot_contracts")


def _order(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "eventId": str(uuid.uuid4()),
        "occurredAt": "2026-12-05T10:00:00Z",
        "orderId": str(uuid.uuid4()),
        "customerName": "Ada",
        "total": {"amountCents": 1250, "currency": "EUR"},
        "lines": [{"sku": "ABC-1234", "quantity": 2}],
        "$schema": "https://example.com/order.json",
        "type": "order.placed",
    }
    body.update(overrides)
    return body


def test_names_classes_and_modules(poly: ModuleType) -> None:
    assert {"OrderPlaced", "PaymentReceived", "ServiceHeartbeat", "Money", "Card"} <= set(
        poly.__all__
    )
    assert poly.POLYGLOT_ORDERS.message_type is poly.OrderPlaced
    fields = {f.name: f.encode_name for f in msgspec.structs.fields(poly.OrderPlaced)}
    assert fields["order_id"] == "orderId"
    assert fields["schema"] == "$schema"
    assert fields["type"] == "type"
    assert fields["customer_name"] == "customerName"
    # the shared Money is generated once, in common.py, and imported where used
    assert poly.OrderPlaced.__annotations__["total"] == "Money"
    assert importlib.import_module("polyglot_contracts.common").Money is poly.Money


def test_camel_case_round_trip_keeps_wire_names(poly: ModuleType) -> None:
    codec: Codec[Any] = Codec(poly.OrderPlaced)
    body = _order(couponCode=None, tags=["a", "b"], placedVia="/web")
    msg = codec.decode(json.dumps(body).encode())
    assert msg.total.amount_cents == 1250
    assert msg.lines[0].quantity == 2
    assert msg.coupon_code is None
    wire = json.loads(codec.encode(msg))
    assert wire["orderId"] == body["orderId"]
    assert wire["total"] == {"amountCents": 1250, "currency": "EUR"}
    assert "order_id" not in wire
    assert "amount_cents" not in json.dumps(wire)


def test_tagged_union_and_nullable(poly: ModuleType) -> None:
    codec: Codec[Any] = Codec(poly.PaymentReceived)
    assert schema_check(poly.PaymentReceived) is None  # msgspec alone is exact here
    base = {"paymentId": str(uuid.uuid4()), "amount": {"amountCents": 5, "currency": "GBP"}}
    card = codec.decode(json.dumps({**base, "method": {"kind": "card", "last4": "4242"}}).encode())
    assert isinstance(card.method, poly.Card)
    bank = codec.decode(
        json.dumps(
            {**base, "method": {"kind": "bank_transfer", "iban": "GB29NWBK60161331926819"}}
        ).encode()
    )
    assert isinstance(bank.method, poly.BankTransfer)
    assert json.loads(codec.encode(card))["method"] == {"kind": "card", "last4": "4242"}
    nulled = codec.decode(
        json.dumps(
            {**base, "method": {"kind": "card", "last4": "0000"}, "reference": None}
        ).encode()
    )
    assert nulled.reference is None
    with pytest.raises(ValidationError, match="kind"):
        codec.decode(json.dumps({**base, "method": {"kind": "cash"}}).encode())
    heartbeat: Codec[Any] = Codec(poly.ServiceHeartbeat)
    assert heartbeat.decode(b'{"anything": 1}') == poly.ServiceHeartbeat()


VIOLATIONS = [
    ({"total": {"amountCents": -5, "currency": "EUR"}}, "$.total.amountCents"),
    ({"total": {"amountCents": 5, "currency": "EUR", "extra": 1}}, "$.total"),
    ({"lines": []}, "$.lines"),
    ({"lines": [{"sku": "ABC-١٢٣٤", "quantity": 1}]}, "$.lines[0].sku"),  # ECMA \d is ASCII
    ({"lines": [{"sku": "ABC-1234\n", "quantity": 1}]}, "$.lines[0].sku"),  # $ is the end
    ({"couponCode": "bad coupon"}, "$.couponCode"),
    ({"tags": ["a", "a"]}, "$.tags"),  # uniqueItems: the validator's
    ({"occurredAt": "2026-12-05T10:00:00"}, "$.occurredAt"),  # no offset
    ({"orderId": 7}, "$.orderId"),
]


@pytest.mark.parametrize(("change", "path"), VIOLATIONS)
def test_every_violation_is_rejected_on_both_ends_naming_the_wire_field(
    poly: ModuleType, change: dict[str, Any], path: str
) -> None:
    codec: Codec[Any] = Codec(poly.OrderPlaced)
    body = json.dumps(_order(**change)).encode()
    with pytest.raises(ValidationError) as received:
        codec.decode(body)
    assert received.value.path == path, received.value
    assert path.rsplit(".", 1)[-1].split("[")[0] in str(received.value)
    # the send path: a message built by its constructor is refused too (a rule the Struct
    # checks itself, as `uniqueItems`, already by the constructor; the others by encode)
    with pytest.raises(ValidationError) as sent:
        codec.encode(poly.OrderPlaced(**_fields(poly, body)), validate=True)
    assert sent.value.path == path, sent.value


def _fields(poly: ModuleType, body: bytes) -> dict[str, Any]:
    """The attributes of an OrderPlaced built from `body` without any check."""
    raw = json.loads(body)
    names = {f.encode_name: f.name for f in msgspec.structs.fields(poly.OrderPlaced)}
    return {names[key]: value for key, value in raw.items()}


async def test_a_memory_round_trip_dead_letters_the_invalid_naming_the_field(
    poly: ModuleType,
) -> None:
    from streamtools import CONSUMER_LOOPS, PRODUCERS, Queue

    queue = Queue(f"poly.{uuid.uuid4().hex[:8]}", poly.OrderPlaced)
    producer = PRODUCERS[MEMORY](queue)
    consumer = CONSUMER_LOOPS[MEMORY](queue, retry=RetryPolicy(attempts=0, delay=0.01))
    got: list[Any] = []

    @consumer()
    async def handle(msg: Any) -> None:
        got.append(msg)

    await producer.a_init()
    await consumer.a_init()
    good = msgspec.convert(_order(), poly.OrderPlaced)
    await producer.send(good)
    with pytest.raises(ValidationError, match="amountCents"):
        await producer.send(
            poly.OrderPlaced(
                **{
                    **_fields(
                        poly,
                        json.dumps(_order(total={"amountCents": -1, "currency": "EUR"})).encode(),
                    )
                }
            )
        )
    import asyncio

    runner = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.01)
    finally:
        await consumer.close()
        await producer.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert got == [good]
    assert got[0].occurred_at == datetime(2026, 12, 5, 10, tzinfo=UTC)


def test_a_contract_needing_the_validator_says_so_at_import(tmp_path: Path) -> None:
    generate(POLYGLOT, tmp_path / "needs_validator")
    code = (
        "import sys; sys.modules['jsonschema_rs'] = None; sys.path.insert(0, sys.argv[1])\n"
        "import needs_validator\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 1
    assert (
        "the contracts of needs_validator.order_placed have schema keywords msgspec" in done.stderr
    )
    assert "pip install 'streamtools[validator]'" in done.stderr


def test_unknown_keywords_are_named_in_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(str(POLYGLOT), str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "warning: " in err
    assert "unknown keywords taken as annotations (JSON Schema 2020-12): javaType" in err


@pytest.mark.parametrize(
    ("ecma", "python"),
    [
        (r"^\d+$", r"^[0-9]+\Z"),
        (r"^[\w.-]+$", r"^[a-zA-Z0-9_.-]+\Z"),
        (r"(?<year>\d{4})", r"(?P<year>[0-9]{4})"),
        (r"a.c", "a[^\\n\\r\\u2028\\u2029]c"),
        (r"^\p{L}+$", None),  # property escapes: the validator's
        (r"\bword\b", None),  # word boundaries differ: the validator's
        (r"(?i)abc", None),  # not ECMA-262
    ],
)
def test_ecma_patterns_translate_exactly_or_not_at_all(ecma: str, python: str | None) -> None:
    assert to_python(ecma) == python


def test_a_field_check_deep_inside_names_the_whole_path(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "batch.json").write_text(
        json.dumps(
            {
                "title": "Batch",
                "type": "object",
                "required": ["rows"],
                "properties": {
                    "rows": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["rowTags"],
                            "properties": {
                                "rowTags": {"type": "array", "uniqueItems": True},
                                "odd": {"type": "number", "multipleOf": 0.5},
                            },
                        },
                    }
                },
            }
        )
    )
    batch = _package(schemas, tmp_path, "batch_contracts")
    assert schema_check(batch.Batch) is None  # checked field by field, not as a whole
    codec: Codec[Any] = Codec(batch.Batch)
    ok = codec.decode(b'{"rows": [{"rowTags": [1, 2], "odd": 1.5}]}')
    assert ok.rows[0].row_tags == [1, 2]
    with pytest.raises(ValidationError) as dup:
        codec.decode(b'{"rows": [{"rowTags": [1]}, {"rowTags": [2, 2]}]}')
    assert dup.value.path == "$.rows[1].rowTags"
    assert "non-unique" in str(dup.value)
    with pytest.raises(ValidationError) as odd:
        codec.decode(b'{"rows": [{"rowTags": [], "odd": 0.25}]}')
    assert odd.value.path == "$.rows[0].odd"


def test_a_custom_meta_schema_is_read_as_2020_12_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "click.json").write_text(
        json.dumps(
            {
                "$schema": "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/"
                "schema/jsonschema/1-0-0#",
                "self": {"vendor": "com.acme", "name": "click", "version": "1-0-0"},
                "type": "object",
                "properties": {"targetUrl": {"type": "string", "format": "uri"}},
                "required": ["targetUrl"],
            }
        )
    )
    assert run(str(schemas), str(tmp_path / "out")) == 0
    err = capsys.readouterr().err
    assert "is not a JSON Schema draft: read as draft 2020-12" in err
    assert "unknown keywords taken as annotations (JSON Schema 2020-12): self" in err


def test_generated_packages_pass_mypy_strict(tmp_path: Path) -> None:
    """What users run on their generated contracts: fields named like types (`datetime`),
    renamed fields, tagged unions, field checks, shared modules."""
    generate(POLYGLOT, tmp_path / "poly_typed")
    generate(Path(__file__).parent / "codegen_cases", tmp_path / "cases_typed")
    stdout, status = mypy_strict(tmp_path / "poly_typed", tmp_path / "cases_typed")
    assert status == 0, stdout


def test_a_root_ref_or_allof_is_a_message(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    shared = {
        "$defs": {
            "Base": {
                "type": "object",
                "required": ["eventId"],
                "properties": {"eventId": {"type": "string"}},
            }
        }
    }
    (schemas / "shared.json").write_text(json.dumps(shared))
    (schemas / "ping.json").write_text(
        json.dumps({"x-queue": "pings", "$ref": "shared.json#/$defs/Base"})
    )
    (schemas / "user_signed_up.json").write_text(
        json.dumps(
            {
                "allOf": [
                    {"$ref": "shared.json#/$defs/Base"},
                    {"type": "object", "properties": {"userId": {"type": "integer"}}},
                ]
            }
        )
    )
    roots = _package(schemas, tmp_path, "roots")
    assert roots.PINGS.message_type is roots.Ping  # the file name names a titleless message
    signed = Codec(roots.UserSignedUp).decode(b'{"eventId": "e1", "userId": 7}')
    assert (signed.event_id, signed.user_id) == ("e1", 7)
    with pytest.raises(ValidationError, match="eventId"):
        Codec(roots.Ping).decode(b"{}")


def test_a_whole_message_rule_leaves_what_msgspec_enforces_out_of_the_validator(
    tmp_path: Path,
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "reading.json").write_text(
        json.dumps(
            {
                "title": "Reading",
                "type": "object",
                "propertyNames": {"pattern": "^[a-z][A-Za-z]*$"},
                "required": ["sensorId", "value"],
                "properties": {
                    "sensorId": {"type": "string", "minLength": 3},
                    "value": {"type": "number", "maximum": 100},
                    "unit": {"not": {"const": "F"}},
                },
            }
        )
    )
    reading = _package(schemas, tmp_path, "readings").Reading
    source = (tmp_path / "readings" / "reading.py").read_text()
    line = next(line for line in source.splitlines() if line.startswith("_WHOLE = "))
    call = ast.parse(line).body[0].value  # type: ignore[attr-defined]
    whole = json.loads(call.args[1].value)
    props = whole["file:///schemas/reading.json"]["properties"]
    # msgspec enforces these exactly (`unit` through the Struct's own field check): left out
    assert props == {"sensorId": True, "value": True, "unit": True}
    assert whole["file:///schemas/reading.json"]["propertyNames"] == {"pattern": "^[a-z][A-Za-z]*$"}
    codec: Codec[Any] = Codec(reading)
    assert codec.decode(b'{"sensorId": "abc", "value": 3, "unit": "C"}').value == 3
    for body, path in [
        (b'{"sensorId": "ab", "value": 3}', "$.sensorId"),  # msgspec
        (b'{"sensorId": "abc", "value": 300}', "$.value"),  # msgspec
        (b'{"sensorId": "abc", "value": 3, "unit": "F"}', "$.unit"),  # the field check
        (b'{"sensorId": "abc", "value": 3, "Bad": 1}', "$"),  # the whole-message validator
    ]:
        with pytest.raises(ValidationError) as refused:
            codec.decode(body)
        assert refused.value.path == path, refused.value
        values = json.loads(body)
        if "Bad" in values:
            continue  # a Struct cannot hold an unknown name: only a foreign sender sends one
        names = {f.encode_name: f.name for f in msgspec.structs.fields(reading)}
        with pytest.raises(ValidationError):  # by the constructor (a field check) or on send
            codec.encode(reading(**{names[k]: v for k, v in values.items()}), validate=True)
