"""Python names from wire names and titles: deterministic, collision-free, reported."""

from __future__ import annotations

import keyword
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamtools.codegen._load import Document
    from streamtools.codegen._problems import Problems

# Names the generated __init__.py binds itself: no export may shadow them.
RESERVED = frozenset(
    {"Any", "Mapping", "MappingProxyType", "QUEUES", "Queue", "register_contracts"}
)

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z0-9])|[A-Z]?[a-z0-9]+|[A-Z]+|[0-9]+")


def words(text: str) -> list[str]:
    """The words of `text`: camelCase, PascalCase, snake_case, kebab-case, spaces, acronyms."""
    return _WORDS.findall(re.sub(r"[^A-Za-z0-9]+", " ", text))


def snake(text: str) -> str:
    """`orderId` -> `order_id`, `HTTPServer` -> `http_server`, `Order Placed` -> `order_placed`."""
    return "_".join(word.lower() for word in words(text))


def pascal(text: str) -> str:
    """`order placed` -> `OrderPlaced`, `line_item` -> `LineItem`, `orderId` -> `OrderId`."""
    return "".join(word[:1].upper() + word[1:] for word in words(text))


def attribute(wire: str) -> str:
    """The Python attribute for a wire name (not yet made unique within its Struct)."""
    name = snake(wire)
    if not name:
        name = "field"
    if name[0].isdigit():
        name = f"field_{name}"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in _TAKEN_IN_MODULE:
        name = f"{name}_"
    return name


# Module-level names a generated module binds; an attribute spelled like one gets a `_`.
_TAKEN_IN_MODULE = frozenset({"msgspec", "enforce_schema", "annotations"})


def class_name(text: str) -> str:
    """A PascalCase class name for a title, definition name or property name."""
    name = pascal(text)
    if not name:
        return "Model"
    if name[0].isdigit():
        name = f"Model{name}"
    return name


def unique(name: str, taken: set[str]) -> str:
    """`name`, or `name2`, `name3`, ... : the first one not in `taken` (which gets it)."""
    candidate, number = name, 1
    while candidate in taken:
        number += 1
        candidate = f"{name}{number}"
    taken.add(candidate)
    return candidate


def constant_name(queue: str) -> str:
    """`orders.created` -> `ORDERS_CREATED`."""
    return re.sub(r"[.\-]", "_", queue).upper()


def message_names(docs: list[Document], problems: Problems) -> dict[Document, str]:
    """Each message document's class name: the PascalCase of its title, else of its file name;
    a reserved or repeated name is a problem (codegen and compat name messages alike)."""
    names: dict[Document, str] = {}
    for doc in docs:
        title = doc.body.get("title")
        name = class_name(title) if isinstance(title, str) and words(title) else ""
        if not name:
            name = class_name(doc.stem)
        if name in RESERVED:
            problems.add(
                doc.path,
                f"the class name {name!r} (from the title or file name) is reserved",
                "use another title (not one of: " + ", ".join(sorted(RESERVED)) + ")",
            )
            continue
        names[doc] = name
    seen: dict[str, Document] = {}
    for doc, name in sorted(names.items(), key=lambda item: item[0].uri):
        if name in seen:
            problems.add(
                doc.path,
                f"the class name {name!r} (from the title or file name) is already "
                f"{seen[name].path.name}'s",
                "give every message schema its own title",
            )
        else:
            seen[name] = doc
    return names
