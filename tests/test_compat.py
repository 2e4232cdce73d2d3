"""`streamtools compat OLD NEW`: breaking changes between schema versions, table-driven.

Each case is an (old, new) pair of one message schema and the directions it breaks: backward
(consumers on the new schema read old messages), forward (consumers on the old schema read new
messages). The expected `full` result is their union; compatible pairs break nothing.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamtools.compat import compare_dirs

ROOT = Path(__file__).resolve().parents[1]

BASE: dict[str, Any] = {
    "title": "OrderCreated",
    "x-queue": "orders.created",
    "type": "object",
    "required": ["order_id", "items", "currency"],
    "properties": {
        "order_id": {"type": "string", "format": "uuid"},
        "items": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/LineItem"}},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "note": {"type": "string", "maxLength": 500},
        "count": {"type": "integer"},
        "labels": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 5}},
    },
    "$defs": {
        "LineItem": {
            "type": "object",
            "required": ["sku", "quantity"],
            "properties": {
                "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 1000},
            },
        }
    },
}

Edit = Callable[[dict[str, Any]], object]


def _props(s: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = s["properties"]
    return props


def _item(s: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = s["$defs"]["LineItem"]["properties"]
    return props


def _closed(s: dict[str, Any]) -> dict[str, Any]:
    s["additionalProperties"] = False
    return s


# (id, edit of the old schema, edit of the new schema, [(path, what fragment, directions)])
CASES: list[tuple[str, Edit | None, Edit, list[tuple[str, str, set[str]]]]] = [
    (
        "required field added without default",
        None,
        lambda s: (
            _props(s).update(vat={"type": "number"}),
            s["required"].append("vat"),
        ),
        [("$.vat", "required field added without default", {"backward"})],
    ),
    (
        "required field added with a default",
        None,
        lambda s: (
            _props(s).update(vat={"type": "number", "default": 0}),
            s["required"].append("vat"),
        ),
        [],
    ),
    (
        "required field removed",
        None,
        lambda s: (_props(s).pop("currency"), s["required"].remove("currency")),
        [("$.currency", "required field removed", {"forward"})],
    ),
    ("optional field added", None, lambda s: _props(s).update(vat={"type": "number"}), []),
    (
        "optional field added where the old schema forbids unknown fields",
        _closed,
        lambda s: (_closed(s), _props(s).update(vat={"type": "number"})),
        [("$.vat", "field added where the old schema forbids unknown fields", {"forward"})],
    ),
    ("optional field removed", None, lambda s: _props(s).pop("note"), []),
    (
        "optional field removed while the new schema forbids unknown fields",
        _closed,
        lambda s: (_closed(s), _props(s).pop("note")),
        [("$.note", "field removed while the new schema forbids unknown fields", {"backward"})],
    ),
    (
        "type changed",
        None,
        lambda s: _props(s)["count"].update(type="string"),
        [("$.count", "type changed integer -> string", {"backward", "forward"})],
    ),
    (
        "integer widened to number",
        None,
        lambda s: _props(s)["count"].update(type="number"),
        [("$.count", "type changed integer -> number", {"forward"})],
    ),
    (
        "null allowed",
        None,
        lambda s: _props(s)["note"].update(type=["string", "null"]),
        [("$.note", "type changed string -> null|string", {"forward"})],
    ),
    (
        "enum value removed",
        None,
        lambda s: _props(s)["currency"]["enum"].remove("USD"),
        [("$.currency", 'enum value(s) removed: "USD"', {"backward"})],
    ),
    (
        "enum value added",
        None,
        lambda s: _props(s)["currency"]["enum"].append("GBP"),
        [("$.currency", 'enum value(s) added: "GBP"', {"forward"})],
    ),
    (
        "minimum raised in a $ref'd array item",
        None,
        lambda s: _item(s)["quantity"].update(minimum=2),
        [("$.items[].quantity", "minimum raised 1 -> 2", {"backward"})],
    ),
    (
        "minimum lowered",
        None,
        lambda s: _item(s)["quantity"].update(minimum=0),
        [("$.items[].quantity", "minimum lowered 1 -> 0", {"forward"})],
    ),
    (
        "maxLength lowered",
        None,
        lambda s: _props(s)["note"].update(maxLength=100),
        [("$.note", "maxLength lowered 500 -> 100", {"backward"})],
    ),
    (
        "maximum removed",
        None,
        lambda s: _item(s)["quantity"].pop("maximum"),
        [("$.items[].quantity", "maximum removed (was 1000)", {"forward"})],
    ),
    (
        "minItems added on a typed map value",
        None,
        lambda s: _props(s)["labels"]["additionalProperties"].update(minLength=2),
        [("$.labels.*", "minLength added (2)", {"backward"})],
    ),
    (
        "pattern changed",
        None,
        lambda s: _item(s)["sku"].update(pattern="^[A-Z]{4}$"),
        [("$.items[].sku", "pattern changed", {"backward", "forward"})],
    ),
    (
        "became required",
        None,
        lambda s: s["required"].append("note"),
        [("$.note", "became required", {"backward"})],
    ),
    (
        "became optional",
        None,
        lambda s: s["required"].remove("currency"),
        [("$.currency", "became optional", {"forward"})],
    ),
    (
        "unknown fields forbidden",
        None,
        _closed,
        [("$", "additionalProperties: false added", {"backward"})],
    ),
    (
        "queue renamed",
        None,
        lambda s: s.update({"x-queue": "orders.placed"}),
        [("$", "queue renamed orders.created -> orders.placed", {"backward", "forward"})],
    ),
    (
        "queue removed",
        None,
        lambda s: s.pop("x-queue"),
        [("$", "queue removed (was orders.created)", {"backward", "forward"})],
    ),
    (
        "descriptions and examples only",
        None,
        lambda s: (s.update(description="new words"), _props(s)["note"].update(examples=["x"])),
        [],
    ),
]


def _write(directory: Path, schema: dict[str, Any] | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    if schema is not None:
        (directory / "order_created.json").write_text(json.dumps(schema))
    return directory


def _pair(tmp_path: Path, old_edit: Edit | None, new_edit: Edit | None) -> tuple[Path, Path]:
    old, new = copy.deepcopy(BASE), copy.deepcopy(BASE)
    if old_edit is not None:
        old_edit(old)
    if new_edit is not None:
        new_edit(new)
    return _write(tmp_path / "old", old), _write(tmp_path / "new", new)


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamtools", "compat", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("old_edit", "new_edit", "expected"),
    [pytest.param(old, new, expected, id=name) for name, old, new, expected in CASES],
)
def test_each_change_breaks_the_directions_it_should(
    tmp_path: Path, old_edit: Edit | None, new_edit: Edit, expected: list[tuple[str, str, set[str]]]
) -> None:
    old, new = _pair(tmp_path, old_edit, new_edit)
    found = compare_dirs(old, new)
    assert [(b.path, set(b.directions)) for b in found] == [(p, d) for p, _, d in expected]
    for item, (_, what, _) in zip(found, expected, strict=True):
        assert what in item.what
        assert item.title == "OrderCreated"
    # and the command's exit status per mode: 0 exactly when nothing breaks in that mode
    for mode in ("backward", "forward", "full"):
        breaks = [d for _, _, d in expected if mode == "full" or mode in d]
        done = cli(old, new, "--mode", mode)
        assert done.returncode == (1 if breaks else 0), (mode, done.stdout, done.stderr)
        assert len(done.stdout.splitlines()) == len(breaks), done.stdout


def test_the_line_names_schema_queue_path_change_and_mode(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, None, lambda s: _item(s)["quantity"].update(minimum=2))
    done = cli(old, new)
    assert done.stdout == (
        "OrderCreated (orders.created) $.items[].quantity: minimum raised 1 -> 2; "
        "messages valid before may be rejected (backward)\n"
    )
    assert done.returncode == 1
    assert "1 incompatible change(s) (full)" in done.stderr


def test_a_removed_schema_breaks_both_ways_and_a_new_one_none(tmp_path: Path) -> None:
    old = _write(tmp_path / "old", BASE)
    new = _write(tmp_path / "new", None)
    [removed] = compare_dirs(old, new)
    assert (removed.queue, removed.path, set(removed.directions)) == (
        "orders.created",
        "$",
        {"backward", "forward"},
    )
    assert "schema removed" in removed.what
    assert compare_dirs(new, old) == []  # a schema added breaks nobody


def test_an_acknowledged_break_does_not_fail(tmp_path: Path) -> None:
    old, new = _pair(tmp_path, None, lambda s: s["required"].append("note"))
    [line] = cli(old, new).stdout.splitlines()
    ack = tmp_path / "ack.txt"
    ack.write_text(f"# intended: note is mandatory from 0.3\n{line}\n")
    done = cli(old, new, "--acknowledge", ack)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"acknowledged: {line}\n"


def test_the_committed_schemas_are_compatible_with_themselves() -> None:
    done = cli(ROOT / "schemas", ROOT / "schemas")
    assert (done.returncode, done.stdout) == (0, "")


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x.json").write_text("{")
    done = cli(tmp_path / "old", tmp_path / "missing")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert done.stderr.count("\n") == 1


def test_make_compat_compares_with_the_last_release_tag(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _write(repo / "schemas", BASE)
    (repo / "scripts").mkdir()
    (repo / "scripts" / "compat.sh").write_bytes((ROOT / "scripts" / "compat.sh").read_bytes())

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=30)

    def compat() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/compat.sh"],
            cwd=repo,
            env={"PATH": "/usr/bin:/bin", "STREAMTOOLS": f"{sys.executable} -m streamtools"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    git("init", "-q", "-b", "main")
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "0",
    )
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-q", "-m", "1")
    git("tag", "v0.1.0")
    assert compat().returncode == 0
    changed = copy.deepcopy(BASE)
    changed["required"].append("note")
    _write(repo / "schemas", changed)
    broken = compat()
    assert broken.returncode == 1
    assert broken.stdout.startswith("compat: schemas/ against release tag v0.1.0\n")
    [line] = broken.stdout.splitlines()[1:]
    assert "$.note: became required" in line
    (repo / "schemas" / "compat-acknowledged.txt").write_text(line + "\n")
    assert compat().returncode == 0


# --- the schemas other teams write: wire names, allOf, unions, shared files -----------------

POLYGLOT = ROOT / "tests" / "contracts" / "polyglot"
Folder = dict[str, dict[str, Any]]


def _polyglot() -> Folder:
    return {p.name: json.loads(p.read_text()) for p in sorted(POLYGLOT.glob("*.json"))}


def _write_folder(directory: Path, files: Folder) -> Path:
    directory.mkdir(parents=True)
    for name, body in files.items():
        (directory / name).write_text(json.dumps(body))
    return directory


def _folders(tmp_path: Path, new: Folder, old: Folder | None = None) -> tuple[Path, Path]:
    return (
        _write_folder(tmp_path / "old", old if old is not None else _polyglot()),
        _write_folder(tmp_path / "new", new),
    )


def _found(old: Path, new: Path) -> list[tuple[str, str, str, set[str]]]:
    return [(b.title, b.path, b.what, set(b.directions)) for b in compare_dirs(old, new)]


def _order(files: Folder) -> dict[str, Any]:
    """Order Placed's own object (the allOf branch beside the shared EventBase)."""
    branch: dict[str, Any] = files["order_placed.json"]["allOf"][1]
    return branch


def _method(files: Folder) -> dict[str, Any]:
    method: dict[str, Any] = files["payment_received.json"]["properties"]["method"]
    return method


def test_the_polyglot_fixtures_are_compatible_with_themselves(tmp_path: Path) -> None:
    assert _found(*_folders(tmp_path, _polyglot())) == []


def test_a_change_of_generated_names_only_breaks_nothing(tmp_path: Path) -> None:
    """Title case (the class stays OrderPlaced), a $defs key (the class OrderLine becomes
    LineItem) and a file name: the generated Python changes, the wire does not."""
    new = _polyglot()
    order = new["order_placed.json"]
    order["title"] = "order placed"
    order["$defs"]["LineItem"] = order["$defs"].pop("OrderLine")
    _order(new)["properties"]["lines"]["items"]["$ref"] = "#/$defs/LineItem"
    new["order_placed_v1.json"] = new.pop("order_placed.json")
    assert _found(*_folders(tmp_path, new)) == []


def test_moving_properties_into_an_allof_base_breaks_nothing(tmp_path: Path) -> None:
    """The old Order Placed spells EventBase's properties out; the new one takes them from
    common.json through allOf: the merged object is the same, so nothing breaks, either way."""
    inline = _polyglot()
    order = inline["order_placed.json"]
    base = inline["common.json"]["$defs"]["EventBase"]
    own = order.pop("allOf")[1]
    order.update(
        type="object",
        required=[*base["required"], *own["required"]],
        properties={**base["properties"], **own["properties"]},
    )
    assert _found(*_folders(tmp_path / "a", _polyglot(), old=inline)) == []
    assert _found(*_folders(tmp_path / "b", inline, old=_polyglot())) == []


def test_a_wire_name_change_is_a_break_though_the_attribute_stays(tmp_path: Path) -> None:
    """orderId -> orderID: both are the attribute `order_id`, but the JSON says orderID now."""
    from streamtools.codegen._naming import attribute

    assert attribute("orderId") == attribute("orderID") == "order_id"
    new = _polyglot()
    own = _order(new)
    own["properties"]["orderID"] = own["properties"].pop("orderId")
    own["required"] = ["orderID" if n == "orderId" else n for n in own["required"]]
    assert _found(*_folders(tmp_path, new)) == [
        ("OrderPlaced", "$.orderID", "required field added without default", {"backward"}),
        ("OrderPlaced", "$.orderId", "required field removed", {"forward"}),
    ]


def test_a_change_in_a_shared_file_breaks_every_message_that_refs_it(tmp_path: Path) -> None:
    new = _polyglot()
    new["common.json"]["$defs"]["Money"]["properties"]["amountCents"]["minimum"] = 1
    old, new_dir = _folders(tmp_path, new)
    assert _found(old, new_dir) == [
        ("OrderPlaced", "$.total.amountCents", "minimum raised 0 -> 1", {"backward"}),
        ("PaymentReceived", "$.amount.amountCents", "minimum raised 0 -> 1", {"backward"}),
    ]
    done = cli(old, new_dir, "--mode", "backward")
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        "OrderPlaced (polyglot.orders) $.total.amountCents: minimum raised 0 -> 1; "
        "messages valid before may be rejected (backward)"
    )
    assert cli(old, new_dir, "--mode", "forward").returncode == 0


def test_a_change_in_an_allof_base_of_another_file_is_found(tmp_path: Path) -> None:
    new = _polyglot()
    new["common.json"]["$defs"]["EventBase"]["required"].append("$schema")
    assert _found(*_folders(tmp_path, new)) == [
        ("OrderPlaced", "$.$schema", "became required", {"backward"})
    ]


def test_a_ref_by_relative_path_id_and_anchor_resolves(tmp_path: Path) -> None:
    """NEW reaches the same definitions another way: EventBase in a subfolder by relative
    path, Money in a file of its own `$id`, by that `$id` and by `$anchor`. Nothing changed,
    so nothing breaks; a change behind those refs is found."""
    new = _polyglot()
    common = new.pop("common.json")
    money = common["$defs"].pop("Money")
    money["$anchor"] = "money"
    new["money.json"] = {"$id": "https://example.com/schemas/money.json", "$defs": {}}
    new["order_placed.json"]["allOf"][0] = {"$ref": "./shared/common.json#/$defs/EventBase"}
    _order(new)["properties"]["total"] = {"$ref": "https://example.com/schemas/money.json#money"}
    new["payment_received.json"]["properties"]["amount"] = {
        "$ref": "https://example.com/schemas/money.json#/$defs/Money"
    }
    old = _write_folder(tmp_path / "old", _polyglot())

    def write(directory: Path) -> Path:
        new["money.json"]["$defs"]["Money"] = money
        _write_folder(directory, new)
        _write_folder(directory / "shared", {"common.json": common})
        return directory

    assert _found(old, write(tmp_path / "same")) == []
    money["properties"]["currency"]["enum"].remove("GBP")
    assert [(t, p, d) for t, p, _, d in _found(old, write(tmp_path / "changed"))] == [
        ("OrderPlaced", "$.total.currency", {"backward"}),
        ("PaymentReceived", "$.amount.currency", {"backward"}),
    ]


def test_an_unresolvable_ref_is_a_usage_error(tmp_path: Path) -> None:
    new = _polyglot()
    new.pop("common.json")
    done = cli(*_folders(tmp_path, new))
    assert done.returncode == 2
    assert "no file 'common.json' in the schemas folder" in done.stderr


def _wallet() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["kind", "provider"],
        "properties": {"kind": {"const": "wallet"}, "provider": {"type": "string"}},
    }


def test_a_union_variant_removed_breaks_backward(tmp_path: Path) -> None:
    """Old producers still send bank transfers; consumers on the new schema refuse them."""
    new = _polyglot()
    _method(new)["oneOf"].pop()  # BankTransfer
    old, new_dir = _folders(tmp_path, new)
    assert _found(old, new_dir) == [
        (
            "PaymentReceived",
            "$.method",
            'union variant kind="bank_transfer" removed',
            {"backward"},
        )
    ]
    assert cli(old, new_dir, "--mode", "backward").returncode == 1
    assert (cli(old, new_dir, "--mode", "forward").returncode, "") == (0, "")


def test_a_union_variant_added_breaks_forward(tmp_path: Path) -> None:
    """Consumers on the old schema would receive wallet payments they cannot read."""
    new = _polyglot()
    new["payment_received.json"]["$defs"]["Wallet"] = _wallet()
    _method(new)["oneOf"].append({"$ref": "#/$defs/Wallet"})
    old, new_dir = _folders(tmp_path, new)
    assert _found(old, new_dir) == [
        ("PaymentReceived", "$.method", 'union variant kind="wallet" added', {"forward"})
    ]
    backward = cli(old, new_dir, "--mode", "backward")
    assert (backward.returncode, backward.stdout) == (0, "")
    forward = cli(old, new_dir, "--mode", "forward")
    assert forward.returncode == 1
    assert forward.stdout == (
        'PaymentReceived (polyglot.payments) $.method: union variant kind="wallet" added; '
        "messages valid now may be rejected by consumers on the old schema (forward)\n"
    )


def test_union_variants_pair_by_tag_whatever_their_order_or_definition_name(
    tmp_path: Path,
) -> None:
    new = _polyglot()
    defs = new["payment_received.json"]["$defs"]
    defs["CardPayment"] = defs.pop("Card")
    defs["CardPayment"]["properties"]["last4"]["pattern"] = "^[0-9]{4,5}$"
    defs["BankTransfer"]["properties"]["iban"]["maxLength"] = 30
    _method(new)["oneOf"] = [{"$ref": "#/$defs/BankTransfer"}, {"$ref": "#/$defs/CardPayment"}]
    assert _found(*_folders(tmp_path, new)) == [
        (
            "PaymentReceived",
            "$.method[kind=bank_transfer].iban",
            "maxLength lowered 34 -> 30",
            {"backward"},
        ),
        (
            "PaymentReceived",
            "$.method[kind=card].last4",
            "pattern changed '^[0-9]{4}$' -> '^[0-9]{4,5}$'",
            {"backward", "forward"},
        ),
    ]


def test_a_const_tag_without_discriminator_pairs_variants_too(tmp_path: Path) -> None:
    old, new = _polyglot(), _polyglot()
    _method(old).pop("discriminator")
    _method(new).pop("discriminator")
    _method(new)["oneOf"].pop(0)  # Card
    assert _found(*_folders(tmp_path, new, old=old)) == [
        ("PaymentReceived", "$.method", 'union variant kind="card" removed', {"backward"})
    ]


def test_untagged_object_variants_are_compared_conservatively(tmp_path: Path) -> None:
    old, new = _polyglot(), _polyglot()
    for files in (old, new):
        defs = files["payment_received.json"]["$defs"]
        for variant in defs.values():
            variant["properties"].pop("kind")
            variant["required"].remove("kind")
        _method(files).pop("discriminator")
    assert _found(*_folders(tmp_path / "same", new, old=old)) == []
    new["payment_received.json"]["$defs"]["Card"]["properties"]["last4"]["pattern"] = "^.{4}$"
    assert _found(*_folders(tmp_path / "changed", new, old=old)) == [
        (
            "PaymentReceived",
            "$.method",
            "union changed (variants without a tag to pair them differ)",
            {"backward", "forward"},
        )
    ]


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param(
            {"type": ["string", "null"], "maxLength": 64},
            {"anyOf": [{"type": "string", "maxLength": 64}, {"type": "null"}]},
            [],
            id="type array as anyOf",
        ),
        pytest.param(
            {"type": "string", "maxLength": 64, "nullable": True},
            {"type": ["string", "null"], "maxLength": 64},
            [],
            id="OpenAPI nullable as type array",
        ),
        pytest.param(
            {"type": ["string", "null"], "maxLength": 64},
            {"type": "string", "maxLength": 64},
            [("type changed null|string -> string", {"backward"})],
            id="null no longer allowed",
        ),
        pytest.param(
            {"type": ["string", "null"], "maxLength": 64},
            {"oneOf": [{"type": "string", "maxLength": 32}, {"type": "integer"}, {"type": "null"}]},
            [
                ("maxLength lowered 64 -> 32", {"backward"}),
                ("type changed null|string -> integer|null|string", {"forward"}),
            ],
            id="a variant's bound and a type gained",
        ),
    ],
)
def test_scalar_unions_compare_their_types_and_each_types_keywords(
    tmp_path: Path, before: dict[str, Any], after: dict[str, Any], expected: list[Any]
) -> None:
    old, new = _polyglot(), _polyglot()
    old["payment_received.json"]["properties"]["reference"] = before
    new["payment_received.json"]["properties"]["reference"] = after
    found = [(what, d) for _, path, what, d in _found(*_folders(tmp_path, new, old=old))]
    assert found == expected


def test_a_nullable_object_pairs_with_the_plain_one(tmp_path: Path) -> None:
    """`anyOf: [Money, null]` where Money went before: null gained (forward), and a change
    inside Money still found."""
    new = _polyglot()
    new["payment_received.json"]["properties"]["amount"] = {
        "anyOf": [{"$ref": "common.json#/$defs/Money"}, {"type": "null"}]
    }
    new["common.json"]["$defs"]["Money"]["properties"]["amountCents"]["maximum"] = 10**9
    assert [(t, p, w) for t, p, w, _ in _found(*_folders(tmp_path, new))] == [
        ("OrderPlaced", "$.total.amountCents", "maximum added (1000000000)"),
        ("PaymentReceived", "$.amount", "type changed object -> null|object"),
        ("PaymentReceived", "$.amount.amountCents", "maximum added (1000000000)"),
    ]


def test_an_empty_old_folder_breaks_nothing(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    new = _write_folder(tmp_path / "new", _polyglot())
    assert compare_dirs(tmp_path / "old", new) == []
