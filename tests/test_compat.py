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
