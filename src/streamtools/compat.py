"""Breaking changes between two folders of message schemas: `streamtools compat OLD NEW`.

Modes as in Confluent Schema Registry:

- ``backward``: consumers on the NEW schema read messages written with the OLD one, so the new
  schema must accept everything the old one accepted (a tightened rule breaks it);
- ``forward``: consumers on the OLD schema read messages written with the NEW one, so the old
  schema must accept everything the new one allows (a loosened rule breaks it);
- ``full`` (the default): both, since producers and consumers deploy independently.

Schemas are paired by ``title``; a schema that disappeared, or whose ``x-queue`` changed, breaks
both ways. Within a pair the comparison walks properties, ``items``, typed maps
(``additionalProperties`` schemas) and local ``$ref``s, and reports each break once, naming the
JSON path (``$.items[].quantity``; a map's values are ``$.labels.*``).

An intended break is acknowledged by copying its line into an acknowledgements file
(``--acknowledge FILE``; `make compat` passes ``schemas/compat-acknowledged.txt``): it is then
printed as acknowledged and does not fail the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from streamtools.errors import ConfigurationError

__all__ = ["Break", "add_arguments", "compare", "compare_dirs", "main", "run"]

Mode = Literal["backward", "forward", "full"]
Direction = Literal["backward", "forward"]
_BOTH: Final[frozenset[Direction]] = frozenset({"backward", "forward"})
_BACKWARD: Final[frozenset[Direction]] = frozenset({"backward"})
_FORWARD: Final[frozenset[Direction]] = frozenset({"forward"})
# (keyword, a higher value tightens)
_LOWER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
_CONSEQUENCE: Final = {
    _BACKWARD: "messages valid before may be rejected",
    _FORWARD: "messages valid now may be rejected by consumers on the old schema",
    _BOTH: "messages valid before, or now, may be rejected",
}


@dataclass(frozen=True)
class Break:
    """One incompatible change: where, what, and which direction(s) it breaks."""

    title: str
    queue: str
    path: str
    what: str
    directions: frozenset[Direction]

    def line(self) -> str:
        modes = ", ".join(sorted(self.directions))
        return (
            f"{self.title} ({self.queue}) {self.path}: {self.what}; "
            f"{_CONSEQUENCE[self.directions]} ({modes})"
        )

    def applies(self, mode: Mode) -> bool:
        return mode == "full" or mode in self.directions


# --- comparing two schemas -----------------------------------------------------------------


class _Walk:
    def __init__(self, old_root: Mapping[str, Any], new_root: Mapping[str, Any]) -> None:
        self.old_root = old_root
        self.new_root = new_root
        self.found: list[tuple[str, str, frozenset[Direction]]] = []
        self._seen: set[tuple[int, int]] = set()

    def add(self, path: str, what: str, directions: frozenset[Direction]) -> None:
        self.found.append((path, what, directions))

    def resolve(self, node: Any, root: Mapping[str, Any]) -> Any:
        for _ in range(32):  # a chain of $refs, never a loop
            ref = node.get("$ref") if isinstance(node, dict) else None
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return node
            target: Any = root
            for token in ref[2:].split("/"):
                token = token.replace("~1", "/").replace("~0", "~")
                target = target.get(token) if isinstance(target, dict) else None
            if target is None:
                return node
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node

    def schema(self, path: str, old: Any, new: Any) -> None:
        old = self.resolve(old, self.old_root)
        new = self.resolve(new, self.new_root)
        if not isinstance(old, dict) or not isinstance(new, dict):
            return
        key = (id(old), id(new))
        if key in self._seen:
            return
        self._seen.add(key)
        self.types(path, old, new)
        self.values(path, old, new)
        self.bounds(path, old, new)
        self.strings(path, old, new)
        self.objects(path, old, new)
        if "items" in old and "items" in new:
            self.schema(f"{path}[]", old["items"], new["items"])

    def types(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_types, new_types = _types(old), _types(new)
        if old_types is None or new_types is None or old_types == new_types:
            return
        lost = not _covers(new_types, old_types)  # old values the new schema refuses
        gained = not _covers(old_types, new_types)  # new values the old schema refuses
        shown = f"type changed {_show_types(old_types)} -> {_show_types(new_types)}"
        if lost and gained:
            self.add(path, shown, _BOTH)
        elif lost:
            self.add(path, shown, _BACKWARD)
        elif gained:
            self.add(path, shown, _FORWARD)

    def values(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_enum, new_enum = _enum(old), _enum(new)
        if old_enum is None and new_enum is None:
            return
        if old_enum is None:  # values are restricted where any went before
            shown = ", ".join(sorted(map(json.dumps, new_enum or [])))
            self.add(path, f"enum added ({shown})", _BACKWARD)
            return
        if new_enum is None:
            shown = ", ".join(sorted(map(json.dumps, old_enum)))
            self.add(path, f"enum removed (was {shown})", _FORWARD)
            return
        removed = sorted(json.dumps(v) for v in old_enum if v not in new_enum)
        added = sorted(json.dumps(v) for v in new_enum if v not in old_enum)
        if removed:
            self.add(path, f"enum value(s) removed: {', '.join(removed)}", _BACKWARD)
        if added:
            self.add(path, f"enum value(s) added: {', '.join(added)}", _FORWARD)

    def bounds(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        for keyword in (*_LOWER_BOUNDS, *_UPPER_BOUNDS):
            before, after = _number(old.get(keyword)), _number(new.get(keyword))
            if before == after:
                continue
            lower = keyword in _LOWER_BOUNDS
            if before is None:
                self.add(path, f"{keyword} added ({_num(after)})", _BACKWARD)
            elif after is None:
                self.add(path, f"{keyword} removed (was {_num(before)})", _FORWARD)
            else:
                tightened = after > before if lower else after < before
                verb = "raised" if after > before else "lowered"
                self.add(
                    path,
                    f"{keyword} {verb} {_num(before)} -> {_num(after)}",
                    _BACKWARD if tightened else _FORWARD,
                )
        before, after = _number(old.get("multipleOf")), _number(new.get("multipleOf"))
        if before != after:
            if before is None:
                self.add(path, f"multipleOf added ({_num(after)})", _BACKWARD)
            elif after is None:
                self.add(path, f"multipleOf removed (was {_num(before)})", _FORWARD)
            else:
                shown = f"multipleOf changed {_num(before)} -> {_num(after)}"
                if after % before == 0:
                    self.add(path, shown, _BACKWARD)
                elif before % after == 0:
                    self.add(path, shown, _FORWARD)
                else:
                    self.add(path, shown, _BOTH)

    def strings(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        for keyword in ("pattern", "format"):
            before, after = old.get(keyword), new.get(keyword)
            if before == after:
                continue
            if keyword == "format" and {before, after} <= {None, "email", "uri"}:
                continue  # annotations only: neither end checks them
            if before is None:
                self.add(path, f"{keyword} added ({after!r})", _BACKWARD)
            elif after is None:
                self.add(path, f"{keyword} removed (was {before!r})", _FORWARD)
            else:
                self.add(path, f"{keyword} changed {before!r} -> {after!r}", _BOTH)

    def objects(self, path: str, old: dict[str, Any], new: dict[str, Any]) -> None:
        old_props = old.get("properties") or {}
        new_props = new.get("properties") or {}
        if not isinstance(old_props, dict) or not isinstance(new_props, dict):
            return
        old_required = set(old.get("required") or [])
        new_required = set(new.get("required") or [])
        old_closed = old.get("additionalProperties") is False
        new_closed = new.get("additionalProperties") is False
        for name in sorted(old_props.keys() | new_props.keys()):
            where = f"{path}.{name}"
            if name in old_props and name in new_props:
                if name in new_required and name not in old_required:
                    if "default" not in _resolved(self, new_props[name], new=True):
                        self.add(where, "became required", _BACKWARD)
                elif name in old_required and name not in new_required:
                    self.add(where, "became optional", _FORWARD)
                self.schema(where, old_props[name], new_props[name])
            elif name in new_props:  # added
                has_default = "default" in _resolved(self, new_props[name], new=True)
                if name in new_required and not has_default:
                    self.add(where, "required field added without default", _BACKWARD)
                if old_closed:
                    self.add(
                        where,
                        "field added where the old schema forbids unknown fields",
                        _FORWARD,
                    )
            else:  # removed
                if name in old_required:
                    self.add(where, "required field removed", _FORWARD)
                if new_closed:
                    self.add(
                        where,
                        "field removed while the new schema forbids unknown fields",
                        _BACKWARD,
                    )
        if new_closed and not old_closed and (old_props or new_props):
            self.add(path, "additionalProperties: false added (unknown fields refused)", _BACKWARD)
        elif old_closed and not new_closed:
            self.add(path, "additionalProperties: false removed", _FORWARD)
        old_map, new_map = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_map, dict) and isinstance(new_map, dict):
            self.schema(f"{path}.*", old_map, new_map)


def _resolved(walk: _Walk, node: Any, *, new: bool) -> dict[str, Any]:
    found = walk.resolve(node, walk.new_root if new else walk.old_root)
    return found if isinstance(found, dict) else {}


def _types(node: Mapping[str, Any]) -> frozenset[str] | None:
    value = node.get("type")
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


def _covers(wide: frozenset[str], narrow: frozenset[str]) -> bool:
    """Whether every value of the `narrow` types is one of the `wide` types."""
    return all(t in wide or (t == "integer" and "number" in wide) for t in narrow)


def _show_types(types: frozenset[str]) -> str:
    return "|".join(sorted(types))


def _enum(node: Mapping[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    value = node.get("enum")
    return list(value) if isinstance(value, list) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _num(value: float | None) -> str:
    return "none" if value is None else json.dumps(value)


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Break]:
    """The breaks between two versions of one message schema (all directions)."""
    title = str(new.get("title") or old.get("title"))
    old_queue, new_queue = old.get("x-queue"), new.get("x-queue")
    queue = str(new_queue or old_queue or "no queue")
    breaks: list[Break] = []
    if old_queue != new_queue:
        what = (
            f"queue removed (was {old_queue})"
            if new_queue is None
            else f"queue renamed {old_queue} -> {new_queue}"
            if old_queue is not None
            else None
        )
        if what is not None:
            breaks.append(Break(title, str(old_queue), "$", what, _BOTH))
    walk = _Walk(old, new)
    walk.schema("$", old, new)
    breaks += [Break(title, queue, path, what, d) for path, what, d in walk.found]
    return breaks


# --- folders, the command ------------------------------------------------------------------


def _load(directory: Path) -> dict[str, dict[str, Any]]:
    if not directory.is_dir():
        raise ConfigurationError(f"{directory.as_posix()}: not a directory of *.json schemas")
    schemas: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{path.as_posix()}: not a JSON schema: {exc}") from exc
        title = body.get("title") if isinstance(body, dict) else None
        if not isinstance(title, str):
            raise ConfigurationError(f"{path.as_posix()}: no title (schemas pair by title)")
        if title in schemas:
            raise ConfigurationError(f"{path.as_posix()}: title {title!r} used twice")
        schemas[title] = body
    return schemas


def compare_dirs(old_dir: Path | str, new_dir: Path | str) -> list[Break]:
    """Every break between the schemas of two folders, sorted (all directions)."""
    old, new = _load(Path(old_dir)), _load(Path(new_dir))
    breaks: list[Break] = []
    for title, before in sorted(old.items()):
        after = new.get(title)
        if after is None:
            queue = str(before.get("x-queue") or "no queue")
            what = "schema removed (no schema of this title)"
            breaks.append(Break(title, queue, "$", what, _BOTH))
        else:
            breaks += compare(before, after)
    return sorted(breaks, key=lambda b: (b.title, b.queue, b.path, b.what))


def _acknowledged(path: str | None) -> set[str]:
    if path is None:
        return set()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    lines = (line.strip() for line in text.splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def run(
    old_dir: str,
    new_dir: str,
    *,
    mode: Mode = "full",
    acknowledge: str | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print one line per break that `mode` checks; 0 when none is left unacknowledged."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        breaks = [b for b in compare_dirs(old_dir, new_dir) if b.applies(mode)]
        accepted = _acknowledged(acknowledge)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=err)
        return 2
    failing = 0
    for item in breaks:
        line = item.line()
        if line in accepted:
            print(f"acknowledged: {line}", file=out)
        else:
            print(line, file=out)
            failing += 1
    if failing:
        print(
            f"{failing} incompatible change(s) ({mode}); if intended, add the line(s) to "
            f"{acknowledge or 'an --acknowledge file'}",
            file=err,
        )
        return 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add OLD_SCHEMAS NEW_SCHEMAS [--mode] [--acknowledge FILE] to `parser`."""
    parser.add_argument("old_dir", metavar="OLD_SCHEMAS", help="folder of the released schemas")
    parser.add_argument("new_dir", metavar="NEW_SCHEMAS", help="folder of the new schemas")
    parser.add_argument(
        "--mode",
        choices=["backward", "forward", "full"],
        default="full",
        help="backward: new consumers read old messages; forward: old consumers read new "
        "messages; full (default): both",
    )
    parser.add_argument(
        "--acknowledge",
        metavar="FILE",
        help="file of break lines (as printed) that are intended: they do not fail the run",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m streamtools.compat OLD NEW [--mode M]`."""
    parser = argparse.ArgumentParser(
        prog="streamtools compat", description="Report breaking changes between schema folders."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args.old_dir, args.new_dir, mode=args.mode, acknowledge=args.acknowledge)


if __name__ == "__main__":
    raise SystemExit(main())
