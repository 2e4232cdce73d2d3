"""streamtools codegen: JSON Schema -> msgspec Structs and Queue contracts.

The mappings are checked by decoding JSON into a package generated from
`tests/codegen_cases/` (imported under a unique name from a temporary directory); the
committed `examples/contracts/` package is checked to be current with `schemas/`.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from examples.contracts import ORDERS_CREATED, QUEUES, LineItem, OrderCreated
from streamtools import Queue, registered_contracts
from streamtools.codegen import CodegenError, check, generate, render
from streamtools.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "schemas"
GENERATED = ROOT / "examples" / "contracts"
CASES = Path(__file__).resolve().parent / "codegen_cases"

BASE: dict[str, Any] = {
    "id": "6f1c1f43-8b5e-4a51-9d0c-2b1f5c7a9e10",
    "at": "2024-05-01T12:00:00+02:00",
    "day": "2024-05-01",
    "level": "low",
    "inner": {"label": "x"},
    "inline": {"flag": True},
    "rows": [{"label": "a"}, {"label": "b"}],
}


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The package generated from tests/codegen_cases/, imported under a unique name."""
    root = tmp_path_factory.mktemp("cases")
    name = f"codegen_cases_{uuid.uuid4().hex}"
    generate(CASES, root / name)
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(root))
        for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
            del sys.modules[module]


def _decode(cases: ModuleType, **changes: Any) -> Any:
    message = {**BASE, **changes}
    return msgspec.json.decode(json.dumps(message).encode(), type=cases.AllTypes)


# --- type mappings -----------------------------------------------------------------------


def test_uuid_decodes_to_uuid(cases: ModuleType) -> None:
    msg = _decode(cases)
    assert msg.id == uuid.UUID(BASE["id"])
    assert isinstance(msg.id, uuid.UUID)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.id"):
        _decode(cases, id="not-a-uuid")


def test_date_time_is_aware_and_naive_is_rejected(cases: ModuleType) -> None:
    msg = _decode(cases)
    assert msg.at == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
    assert msg.at.utcoffset() == dt.timedelta(hours=2)
    assert _decode(cases, at="2024-05-01T12:00:00Z").at.tzinfo is dt.UTC
    with pytest.raises(msgspec.ValidationError, match=r"\$\.at"):
        _decode(cases, at="2024-05-01T12:00:00")
    with pytest.raises(msgspec.ValidationError, match=r"\$\.when"):
        _decode(cases, when="2024-05-01T12:00:00")


def test_date_decodes_to_date(cases: ModuleType) -> None:
    msg = _decode(cases)
    assert msg.day == dt.date(2024, 5, 1)
    assert type(msg.day) is dt.date
    with pytest.raises(msgspec.ValidationError, match=r"\$\.day"):
        _decode(cases, day="2024-05-01T00:00:00Z")


def test_enum_accepts_its_values_only(cases: ModuleType) -> None:
    assert _decode(cases, level="high").level == "high"
    with pytest.raises(msgspec.ValidationError, match=r"\$\.level"):
        _decode(cases, level="medium")


def test_ref_and_inline_objects_are_nested_structs(cases: ModuleType) -> None:
    msg = _decode(cases)
    inner_type = type(msg.inner)
    assert issubclass(inner_type, msgspec.Struct)
    assert inner_type.__name__ == "Inner"
    assert isinstance(msg.inline, cases.Inline)
    assert msg.inline.flag is True
    with pytest.raises(msgspec.ValidationError, match=r"\$\.inner\.label"):
        _decode(cases, inner={"label": ""})


def test_array_of_structs(cases: ModuleType) -> None:
    msg = _decode(cases)
    assert [row.label for row in msg.rows] == ["a", "b"]
    assert all(type(row) is type(msg.inner) for row in msg.rows)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.rows\[1\]"):
        _decode(cases, rows=[{"label": "a"}, {"nope": 1}])


@pytest.mark.parametrize(
    ("field", "accepted", "rejected"),
    [
        ("ge_le", [1, 10], [0, 11]),  # minimum / maximum are inclusive
        ("gt_lt", [0.0001, 0.9999], [0, 1]),  # exclusiveMinimum / exclusiveMaximum
        ("name", ["ab", "abcd"], ["a", "abcde"]),  # minLength / maxLength
        ("code", ["GB"], ["gb", "GBR"]),  # pattern
        ("tags", [["a"], ["a", "b", "c"]], [[], ["a", "b", "c", "d"]]),  # minItems / maxItems
    ],
)
def test_constraints_at_and_beyond_the_boundary(
    cases: ModuleType, field: str, accepted: list[Any], rejected: list[Any]
) -> None:
    for value in accepted:
        assert getattr(_decode(cases, **{field: value}), field) == value
    for value in rejected:
        with pytest.raises(msgspec.ValidationError, match=rf"\$\.{field}"):
            _decode(cases, **{field: value})


def test_required_fields_have_no_default(cases: ModuleType) -> None:
    fields = {f.name: f for f in msgspec.structs.fields(cases.AllTypes)}
    for name in ("id", "at", "day", "level", "inner", "inline", "rows"):
        assert fields[name].required, name
    message = {k: v for k, v in BASE.items() if k != "day"}
    with pytest.raises(msgspec.ValidationError, match="missing required field `day`"):
        msgspec.json.decode(json.dumps(message).encode(), type=cases.AllTypes)


def test_optional_fields_default_and_are_left_out_on_encode(cases: ModuleType) -> None:
    msg = _decode(cases)
    assert msg.note is None
    assert msg.when is None
    assert msg.size == "m"
    assert msg.retries == 3
    encoded = json.loads(msgspec.json.encode(msg))
    assert set(encoded) == set(BASE)
    changed = json.loads(msgspec.json.encode(_decode(cases, note="hi", size="l", retries=0)))
    assert (changed["note"], changed["size"], changed["retries"]) == ("hi", "l", 0)


def test_fields_named_like_types_and_nested_timestamps(cases: ModuleType) -> None:
    body = (
        b'{"date":"2024-05-01","datetime":"2024-05-01T00:00:00Z",'
        b'"stamps":["2024-05-01T01:00:00+01:00"]}'
    )
    msg = msgspec.json.decode(body, type=cases.EdgeNames)
    assert msg.date == dt.date(2024, 5, 1)
    assert msg.datetime == msg.stamps[0] == dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    assert (msg.maybe, msg.count) == (None, None)
    for naive in (
        b'{"date":"2024-05-01","datetime":"2024-05-01T00:00:00"}',
        b'{"date":"2024-05-01","stamps":["2024-05-01T00:00:00"]}',
        b'{"date":"2024-05-01","maybe":"2024-05-01T00:00:00"}',
    ):
        with pytest.raises(msgspec.ValidationError, match="timezone"):
            msgspec.json.decode(naive, type=cases.EdgeNames)
    with pytest.raises(msgspec.ValidationError, match=r"\$\.count"):
        msgspec.json.decode(b'{"date":"2024-05-01","count":3}', type=cases.EdgeNames)


_STRICT_ID = "6f1c1f43-8b5e-4a51-9d0c-2b1f5c7a9e10"


def _strict(cases: ModuleType, **fields: Any) -> Any:
    return msgspec.json.decode(json.dumps({"id": _STRICT_ID, **fields}), type=cases.StrictMaps)


def test_additional_properties_false_rejects_unknown_fields_by_name(cases: ModuleType) -> None:
    assert _strict(cases).id == uuid.UUID(_STRICT_ID)
    with pytest.raises(msgspec.ValidationError, match=r"^Object contains unknown field `colour`$"):
        _strict(cases, colour="red")
    with pytest.raises(msgspec.ValidationError, match=r"unknown field `z` - at `\$\.closed`"):
        _strict(cases, closed={"x": 1, "z": 2})
    with pytest.raises(
        msgspec.ValidationError, match=r"unknown field `z` - at `\$\.points\[\.\.\.\]`"
    ):
        _strict(cases, points={"a": {"x": 1, "y": 2, "z": 3}})
    # additionalProperties true (or absent) keeps the default: unknown fields are accepted
    assert _strict(cases, open={"x": 1, "z": 2}).open.x == 1
    assert _decode(cases, extra_field="ignored").id == uuid.UUID(BASE["id"])


def test_typed_maps_decode_to_dicts_with_checked_values(cases: ModuleType) -> None:
    msg = _strict(
        cases,
        labels={"a": "x", "b": "yyyyy"},
        counts={"n": 0},
        stamps={"t": "2024-05-01T12:00:00+02:00"},
        points={"p": {"x": 1.5, "y": 2}},
    )
    assert msg.labels == {"a": "x", "b": "yyyyy"}
    assert msg.counts == {"n": 0}
    assert msg.stamps["t"] == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
    assert msg.points["p"] == cases.Point(x=1.5, y=2.0)
    for bad, where in (
        ({"labels": {"a": "toolong"}}, r"\$\.labels\[\.\.\.\]"),
        ({"counts": {"n": -1}}, r"\$\.counts\[\.\.\.\]"),
        ({"counts": {"n": "1"}}, r"\$\.counts\[\.\.\.\]"),
        ({"stamps": {"t": "2024-05-01T12:00:00"}}, r"\$\.stamps\[\.\.\.\]"),
        ({"points": {"p": {"x": 1}}}, r"\$\.points\[\.\.\.\]"),
    ):
        with pytest.raises(msgspec.ValidationError, match=where):
            _strict(cases, **bad)


def test_structs_are_keyword_only(cases: ModuleType) -> None:
    with pytest.raises(TypeError):
        cases.Inline(True)
    assert cases.Inline(flag=False).flag is False


# --- the package ---------------------------------------------------------------------------


def test_package_exports_structs_queues_and_registers_them(cases: ModuleType) -> None:
    assert cases.__all__ == sorted(cases.__all__)
    assert set(cases.__all__) == {
        "AllTypes",
        "AuditLogged",
        "CODEGEN_CASES_ALL_TYPES",
        "CODEGEN_CASES_STRICT_MAPS",
        "Closed",
        "EdgeNames",
        "Inline",
        "Open",
        "Point",
        "QUEUES",
        "StrictMaps",
    }  # Inner is defined by two schemas, so the package cannot re-export one of them
    assert all(hasattr(cases, name) for name in cases.__all__)
    queue = cases.CODEGEN_CASES_ALL_TYPES
    assert queue == Queue("codegen-cases.all_types", cases.AllTypes)
    assert dict(cases.QUEUES) == {
        "codegen-cases.all_types": queue,
        "codegen-cases.strict_maps": cases.CODEGEN_CASES_STRICT_MAPS,
    }
    assert registered_contracts()["codegen-cases.all_types"] is queue
    assert cases.__file__ is not None
    assert (Path(cases.__file__).parent / "py.typed").is_file()


def test_committed_package_contracts() -> None:
    typed: Queue[OrderCreated] = ORDERS_CREATED
    assert typed.name == "orders.created"
    assert typed.message_type is OrderCreated
    assert sorted(QUEUES) == ["billing.invoiced", "orders.created", "shipping.requested"]
    body = (
        b'{"order_id":"0b8f7c0e-5a4e-4c4f-8d9e-3f6c2a1b7d90","customer":{"id":'
        b'"5d3c2b1a-9e8f-4a7b-8c6d-5e4f3a2b1c0d","email":"ada@example.com","name":'
        b'"Ada Lovelace"},"items":[{"sku":"BOK-1001","quantity":2,"unit_price":19.99},'
        b'{"sku":"PEN-2002","quantity":1,"unit_price":5.5}],"currency":"EUR",'
        b'"created_at":"2024-05-01T12:00:00Z"}'
    )
    msg = msgspec.json.decode(body, type=OrderCreated)
    assert msg.items[0] == LineItem(sku="BOK-1001", quantity=2, unit_price=19.99)
    assert msg.priority == "normal"
    assert msgspec.json.encode(msg) == body  # the defaults and Nones are left out
    assert 250 <= len(body) <= 350  # benchmarks rely on a typical order being ~300 bytes


# --- determinism and staleness -----------------------------------------------------------


def test_output_is_deterministic(tmp_path: Path) -> None:
    generate(SCHEMAS, tmp_path / "one")
    generate(SCHEMAS, tmp_path / "two")
    generate(SCHEMAS, tmp_path / "two")  # regenerating in place changes nothing either
    one, two = _snapshot(tmp_path / "one"), _snapshot(tmp_path / "two")
    assert one == two
    assert sorted(one) == [
        "__init__.py",
        "invoice_issued.py",
        "order_created.py",
        "py.typed",
        "shipment_requested.py",
    ]
    for name, data in one.items():
        assert b"/tmp" not in data
        assert str(ROOT).encode() not in data, name


def test_committed_generated_is_current() -> None:
    assert check(SCHEMAS, GENERATED) == []
    assert render(SCHEMAS) == _snapshot(GENERATED)


def test_check_reports_stale_files(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    shutil.copytree(GENERATED, tmp_path / "generated")
    assert check(schemas, tmp_path / "generated") == []
    order = json.loads((schemas / "order_created.json").read_text())
    order["properties"]["note"]["maxLength"] = 400
    (schemas / "order_created.json").write_text(json.dumps(order))
    # the package's __init__ publishes the source schemas (streamtools asyncapi): it changes too
    assert check(schemas, tmp_path / "generated") == ["__init__.py", "order_created.py"]
    (tmp_path / "generated" / "leftover.py").write_text("# Generated by streamtools codegen\n")
    assert check(schemas, tmp_path / "generated") == [
        "__init__.py",
        "leftover.py",
        "order_created.py",
    ]


# --- errors --------------------------------------------------------------------------------

_OK = {"title": "Ok", "type": "object", "properties": {"a": {"type": "string"}}}


def _obj(**extra: Any) -> dict[str, Any]:
    return {"title": "Bad", "type": "object", "properties": {"a": {"type": "string"}}, **extra}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"title": "Bad", "type": "object",', "invalid JSON at line 1"),
        (json.dumps({"title": "Bad", "type": "string"}), "the message at # is not an object"),
        (json.dumps([_OK]), "not a schema object at #"),
        (json.dumps(_obj(title="Queue")), "the class name 'Queue' (from the title or file name)"),
        (json.dumps(_obj(**{"x-queue": "9 bad"})), "at #/x-queue is not a queue name"),
        (json.dumps(_obj(**{"x-queue": "a" * 201})), "at #/x-queue is not a queue name"),
        (json.dumps({**_OK, "title": "Ok"}), "the class name 'Ok' (from the title or file name)"),
        (
            json.dumps(_obj(**{"x-queue": "ok.q"})),
            "x-queue 'ok.q' at #/x-queue is already used by a_ok.json",
        ),
        (
            json.dumps(_obj(properties={"a": {"$ref": "other.json#/$defs/A"}})),
            "$ref 'other.json#/$defs/A' at #/properties/a: no file 'other.json' in the schemas",
        ),
        (
            json.dumps(_obj(properties={"a": {"$ref": "https://example.com/a.json"}})),
            "codegen never fetches remote schemas",
        ),
        (
            json.dumps(_obj(properties={"a": {"$ref": "#/$defs/Missing"}})),
            "does not resolve (no '$defs' at #)",
        ),
        (
            json.dumps(_obj(properties={"a": {"type": "strnig"}})),
            "not a valid JSON Schema at #/properties/a/type",
        ),
        (
            json.dumps(_obj(properties={"a": {"type": "object", "x-queue": "a.b"}})),
            "x-queue at #/properties/a",
        ),
        (
            json.dumps(_obj(properties={"a": {"$ref": "#nowhere"}})),
            "no $anchor 'nowhere'",
        ),
    ],
)
def test_errors_name_the_file_and_leave_out_dir_untouched(
    tmp_path: Path, text: str, expected: str
) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "a_ok.json").write_text(json.dumps({**_OK, "x-queue": "ok.q"}))
    out = tmp_path / "out"
    generate(schemas, out)
    before = _snapshot(out)
    (schemas / "b_bad.json").write_text(text)
    with pytest.raises(CodegenError, match=r"b_bad\.json") as info:
        generate(schemas, out)
    assert isinstance(info.value, ConfigurationError)
    assert expected in str(info.value)
    assert " — " in str(info.value)  # what failed — what to do
    assert info.value.path == schemas / "b_bad.json"
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "schemas"]  # no temp dir left


def test_refuses_to_overwrite_foreign_files(tmp_path: Path) -> None:
    out = tmp_path / "src"
    out.mkdir()
    (out / "app.py").write_text("print('mine')\n")
    with pytest.raises(CodegenError, match=r"holds files codegen did not write \(app.py\)"):
        generate(SCHEMAS, out)
    assert _snapshot(out) == {"app.py": b"print('mine')\n"}


# --- the command line ----------------------------------------------------------------------


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtools.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_generates_checks_and_reports_staleness(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, schemas)
    out = tmp_path / "generated"
    done = _cli("codegen", schemas, out)
    assert done.returncode == 0, done.stderr
    assert _snapshot(out) == _snapshot(GENERATED)

    invoice = json.loads((schemas / "invoice_issued.json").read_text())
    invoice["properties"]["total"]["minimum"] = 1
    (schemas / "invoice_issued.json").write_text(json.dumps(invoice))
    stale = _cli("codegen", schemas, out, "--check")
    assert stale.returncode == 1
    assert stale.stderr.strip() == (
        f"{out.as_posix()}/ is stale (differs: __init__.py, invoice_issued.py); "
        f"run 'streamtools codegen {schemas} {out}'"
    )
    assert _cli("codegen", SCHEMAS, GENERATED, "--check").returncode == 0


def test_cli_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{")
    done = _cli("codegen", tmp_path, tmp_path / "out")
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {(tmp_path / 'broken.json').as_posix()}: invalid JSON")
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    usage = _cli("codegen")
    assert usage.returncode == 2
    assert "SCHEMAS_DIR" in usage.stderr
    version = _cli("--version")
    assert version.returncode == 0
    assert version.stdout.startswith("streamtools ")


def test_every_problem_of_every_file_is_reported_in_one_run(tmp_path: Path) -> None:
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "a.json").write_text(
        json.dumps(
            {
                "title": "First",
                "allOf": [
                    {"$ref": "#/$defs/Gone"},
                    {"type": "object", "properties": {"b": {"$ref": "shared.json#/$defs/X"}}},
                ],
                "properties": {"c": {"oneOf": [{"$ref": "https://example.com/c.json"}]}},
            }
        )
    )
    (schemas / "b.json").write_text(json.dumps({"title": "Second", "type": "array"}))
    (schemas / "c.json").write_text("{")
    (schemas / "d.json").write_text(json.dumps(_obj(title="Fine")))
    done = _cli("codegen", schemas, tmp_path / "out")
    assert done.returncode == 1
    shown = schemas.as_posix()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {shown}/c.json: invalid JSON at line 1 column 2: "
        "Expecting property name enclosed in double quotes — fix the JSON syntax",
        f"error: {shown}/a.json: $ref '#/$defs/Gone' at #/allOf/0: '#/$defs/Gone' does not "
        "resolve (no '$defs' at #) — fix the $ref",
        f"error: {shown}/a.json: $ref 'shared.json#/$defs/X' at #/allOf/1/properties/b: no file "
        "'shared.json' in the schemas folder — fix the $ref",
        f"error: {shown}/a.json: $ref 'https://example.com/c.json' at #/properties/c/oneOf/0: "
        "https://example.com/c.json is not a file of the schemas folder (codegen never fetches "
        "remote schemas): copy it into the folder, with its $id — fix the $ref",
        f"error: {shown}/b.json: the message at # is not an object schema — a message is a JSON "
        'object: give it "type": "object" (and its properties)',
    ]
    assert not (tmp_path / "out").exists()
    with pytest.raises(CodegenError) as info:
        render(schemas)
    assert [error.path.name for error in info.value.errors] == ["c.json"] + ["a.json"] * 3 + [
        "b.json"
    ]


def test_output_gets_the_umasks_permissions(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        generate(SCHEMAS, tmp_path / "fresh")
        generate(SCHEMAS, tmp_path / "fresh")  # replacing keeps them too
    finally:
        os.umask(previous)
    out = tmp_path / "fresh"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == dict.fromkeys(_snapshot(GENERATED), 0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh"]  # no staging dir left
