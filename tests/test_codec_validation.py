"""Send-side validation: a second decode pass only for types where it can fail (#14).

Counted, not timed: a wrapper on the codec's decoder counts the passes `encode` makes.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
import pytest

from streamtools._codec import JSON, MSGPACK, Codec, has_constraints
from streamtools.errors import ValidationError


class _Counting:
    """A decoder that counts its calls."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.calls = 0

    def decode(self, data: bytes) -> Any:
        self.calls += 1
        return self.decoder.decode(data)


def counted(message_type: type[Any], content_type: str = JSON) -> tuple[Codec[Any], _Counting]:
    codec: Codec[Any] = Codec(message_type, content_type)
    counter = _Counting(codec._decoder)
    codec._decoder = counter  # type: ignore[assignment]  # a stand-in with the same decode()
    return codec, counter


class Leaf(msgspec.Struct):
    name: str
    tags: list[str]


class Tree(msgspec.Struct):
    leaf: Leaf
    children: list[Tree] = []


class Plain(msgspec.Struct):
    id: uuid.UUID
    name: str
    count: int
    flag: bool
    day: date
    at: datetime
    price: Decimal
    note: str | None
    raw: bytes
    scores: dict[str, int]
    pair: tuple[str, int]
    many: frozenset[str]
    tree: Tree
    anything: Any


def plain() -> Plain:
    return Plain(
        id=uuid.uuid4(),
        name="n",
        count=-(2**40),
        flag=True,
        day=date(2026, 1, 1),
        at=datetime.now(UTC),
        price=Decimal("1.5"),
        note=None,
        raw=b"\x00",
        scores={"a": 1},
        pair=("a", 1),
        many=frozenset({"x"}),
        tree=Tree(Leaf("l", ["t"]), [Tree(Leaf("m", []))]),
        anything={"k": [1, 2.5]},
    )


@pytest.mark.parametrize("content_type", [JSON, MSGPACK])
def test_a_type_without_constraints_is_encoded_in_one_pass(content_type: str) -> None:
    codec, counter = counted(Plain, content_type)
    msg = plain()
    assert codec.decode(codec.encode(msg)) == msg
    assert counter.calls == 1  # the decode above, none from encode
    assert not has_constraints(Plain, content_type)


def test_msgpack_floats_need_no_check_json_floats_do() -> None:
    class Reading(msgspec.Struct):
        value: float

    # JSON has no NaN: msgspec writes null, which no float field accepts.
    codec, counter = counted(Reading, JSON)
    with pytest.raises(ValidationError) as info:
        codec.encode(Reading(float("nan")))
    assert info.value.path == "$.value"
    assert counter.calls == 1
    packed, packed_counter = counted(Reading, MSGPACK)
    packed.encode(Reading(float("nan")))
    assert packed_counter.calls == 0


class Color(enum.Enum):
    RED = "red"


@dataclass
class Window:
    low: int
    high: int

    def __post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError("low > high")


class Checked(msgspec.Struct):
    quantity: Annotated[int, msgspec.Meta(ge=1)]


class Deep(msgspec.Struct):
    items: list[Checked]


class Node(msgspec.Struct):
    value: Annotated[int, msgspec.Meta(lt=10)]
    children: list[Node] = []


def one(annotation: Any) -> type[msgspec.Struct]:
    """A Struct with one field `f` of the given type."""
    return msgspec.defstruct("One", [("f", annotation)])


NAIVE = datetime(2026, 1, 1)
BAD_WINDOW = Window(1, 2)
BAD_WINDOW.low = 3  # what __post_init__ refuses, set after it ran
AWARE = datetime(2026, 1, 1, tzinfo=UTC)

# (kind, type, a valid message, an invalid one, the path the error names)
KINDS: list[tuple[str, type[Any], Any, Any, str]] = [
    ("int ge", one(Annotated[int, msgspec.Meta(ge=1)]), 1, 0, "$.f"),
    ("int gt", one(Annotated[int, msgspec.Meta(gt=0)]), 1, 0, "$.f"),
    ("int le", one(Annotated[int, msgspec.Meta(le=5)]), 5, 6, "$.f"),
    ("int multiple_of", one(Annotated[int, msgspec.Meta(multiple_of=2)]), 4, 3, "$.f"),
    ("float lt", one(Annotated[float, msgspec.Meta(lt=1.0)]), 0.5, 1.0, "$.f"),
    ("str min_length", one(Annotated[str, msgspec.Meta(min_length=1)]), "a", "", "$.f"),
    (
        "str max_length",
        one(Annotated[str, msgspec.Meta(max_length=1)]),
        "a",
        "ab",
        "$.f",
    ),
    (
        "str pattern",
        one(Annotated[str, msgspec.Meta(pattern="^[A-Z]+$")]),
        "AB",
        "ab",
        "$.f",
    ),
    (
        "bytes max_length",
        one(Annotated[bytes, msgspec.Meta(max_length=1)]),
        b"a",
        b"ab",
        "$.f",
    ),
    (
        "list min_length",
        one(Annotated[list[str], msgspec.Meta(min_length=1)]),
        ["a"],
        [],
        "$.f",
    ),
    (
        "list item",
        one(list[Annotated[int, msgspec.Meta(ge=0)]]),
        [0],
        [1, -1],
        "$.f[1]",
    ),
    (
        "dict max_length",
        one(Annotated[dict[str, int], msgspec.Meta(max_length=1)]),
        {},
        {"a": 1, "b": 2},
        "$.f",
    ),
    (
        "dict value",
        one(dict[str, Annotated[int, msgspec.Meta(ge=0)]]),
        {"a": 0},
        {"a": -1},
        "$.f[...]",
    ),
    (
        "dict key",
        one(dict[Annotated[str, msgspec.Meta(min_length=2)], int]),
        {"ab": 1},
        {"a": 1},
        "$.f",
    ),
    (
        "tuple item",
        one(tuple[str, Annotated[int, msgspec.Meta(ge=0)]]),
        ("a", 0),
        ("a", -1),
        "$.f[1]",
    ),
    (
        "set item",
        one(set[Annotated[str, msgspec.Meta(max_length=1)]]),
        {"a"},
        {"ab"},
        "$.f[0]",
    ),
    ("optional", one(Annotated[int, msgspec.Meta(ge=1)] | None), None, 0, "$.f"),
    (
        "tz required",
        one(Annotated[datetime, msgspec.Meta(tz=True)]),
        AWARE,
        NAIVE,
        "$.f",
    ),
    (
        "naive required",
        one(Annotated[datetime, msgspec.Meta(tz=False)]),
        NAIVE,
        AWARE,
        "$.f",
    ),
    ("literal", one(Literal["a", "b"]), "a", "c", "$.f"),
    ("enum", one(Color), Color.RED, "purple", "$.f"),
    (
        "nested struct",
        one(Deep),
        Deep([Checked(1)]),
        Deep([Checked(1), Checked(0)]),
        "$.f.items[1].quantity",
    ),
    (
        "recursive",
        one(Node),
        Node(1, [Node(2)]),
        Node(1, [Node(10)]),
        "$.f.children[0].value",
    ),
    ("post_init", one(Window), Window(1, 2), BAD_WINDOW, "$.f"),
    ("json float", one(float), 1.5, float("inf"), "$.f"),
]


@pytest.mark.parametrize(
    ("message_type", "valid", "invalid", "path"),
    [pytest.param(t, ok, bad, path, id=kind) for kind, t, ok, bad, path in KINDS],
)
def test_every_kind_of_constraint_keeps_the_check(
    message_type: type[Any], valid: Any, invalid: Any, path: str
) -> None:
    assert has_constraints(message_type)
    codec, counter = counted(message_type)
    codec.encode(message_type(valid))
    assert counter.calls == 1
    with pytest.raises(ValidationError, match=r"invalid One message: .*validate=False") as info:
        codec.encode(message_type(invalid))
    assert info.value.path == path
    assert codec.encode(message_type(invalid), validate=False)  # told not to: sent as is


def test_a_wrong_type_without_constraints_is_the_receivers_error() -> None:
    # The skipped pass would only have caught a wrong type: mypy's error at the sender.
    codec = Codec(Leaf)
    data = codec.encode(Leaf(name=1, tags=[]))  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as info:
        codec.decode(data)
    assert info.value.path == "$.name"
