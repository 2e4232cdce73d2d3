"""README's settings tables are the constructors' keywords and defaults, transport by transport."""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from streamtools import CONSUMER_LOOPS, PRODUCERS, Limits, RetryPolicy
from streamtools._settings import DEPRECATED

README = Path(__file__).parents[1] / "README.md"
COLUMNS = {
    "HTTP": "HTTPHandler",
    "RabbitMQ": "RMQIOHandler",
    "Kafka": "KafkaHandler",
    "NATS": "NATSHandler",
    "Redis": "RedisHandler",
    "Memory": "MemoryHandler",
}


def _table(kind: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and rows (setting -> cells) of the README table after its marker."""
    text = README.read_text()
    marker = f"<!-- settings-table: {kind} -->\n"
    assert marker in text, f"README.md has no {marker.strip()}"
    lines = text.split(marker, 1)[1].splitlines()
    rows: dict[str, list[str]] = {}
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        name = cells[0].strip("`")
        assert name not in rows, f"{name} twice in the {kind} table"
        rows[name] = cells[1:]
    return header, rows


def _keywords(cls: Any) -> dict[str, Any]:
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name: p.default
        for p in parameters
        if p.kind is p.KEYWORD_ONLY and p.name not in DEPRECATED
    }


@pytest.mark.parametrize(
    ("kind", "registry"), [("producers", PRODUCERS), ("consumers", CONSUMER_LOOPS)]
)
def test_the_readme_table_is_every_keyword_with_its_default(kind: str, registry: Any) -> None:
    header, rows = _table(kind)
    transports = header[1 : 1 + len(COLUMNS)]
    assert transports == list(COLUMNS)
    assert set(registry) == set(COLUMNS.values()), "a transport is missing from the table"
    for column, transport in enumerate(transports):
        cls = registry[COLUMNS[transport]]
        keywords = _keywords(cls)
        documented = {name for name, cells in rows.items() if cells[column] != "—"}
        assert documented == set(keywords), (
            f"{cls.__name__}: the README lists {sorted(documented - set(keywords))} it does not "
            f"take and misses {sorted(set(keywords) - documented)}"
        )
        for name in documented:
            cell = rows[name][column]
            code = re.fullmatch(r"`([^`]*)`", cell)
            assert code, f"{cls.__name__}.{name}: the cell {cell!r} is not one `default`"
            shown = eval(code.group(1), {"RetryPolicy": RetryPolicy, "Limits": Limits})
            assert shown == keywords[name], (
                f"{cls.__name__}.{name}: README {shown!r}, code {keywords[name]!r}"
            )


def test_each_deprecated_keyword_is_still_taken_and_named_in_the_readme() -> None:
    text = README.read_text()
    taken: set[str] = set()
    registries: tuple[Any, ...] = (PRODUCERS, CONSUMER_LOOPS)
    for registry in registries:
        for name in registry:
            parameters = inspect.signature(registry[name].__init__).parameters
            taken |= {p for p in parameters if p in DEPRECATED}
    assert taken == set(DEPRECATED)
    for name in DEPRECATED:
        assert f"`{name}=`" in text, f"README does not name the deprecated {name}="
