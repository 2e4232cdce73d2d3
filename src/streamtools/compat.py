"""Breaking changes between two folders of message schemas: `streamtools compat OLD NEW`.

Modes as in Confluent Schema Registry:

- ``backward``: consumers on the NEW schema read messages written with the OLD one, so the new
  schema must accept everything the old one accepted (a tightened rule breaks it);
- ``forward``: consumers on the OLD schema read messages written with the NEW one, so the old
  schema must accept everything the new one allows (a loosened rule breaks it);
- ``full`` (the default): both, since producers and consumers deploy independently.

Both folders are read as `streamtools codegen` reads them (`streamtools.codegen._load`): every
``*.json`` file is a document, ``$ref`` resolves across the files of its folder (relative paths,
``$id``, ``$anchor``), and a file of shared ``$defs`` is a library, not a message. Messages pair
by the class name codegen gives them (the PascalCase of the ``title``, else of the file name); a
message that disappeared, or whose ``x-queue`` changed, breaks both ways.

Within a pair the comparison is on what travels, never on the generated Python:

- properties by their **wire name** (the JSON property name): a change that only renames the
  generated attribute or class (a title's case, a ``$defs`` key, a property moved into an
  ``allOf`` base) breaks nothing, while ``orderId`` -> ``orderID`` is a field removed and one
  added, although both are the attribute ``order_id``;
- ``allOf`` (and a ``$ref`` beside other keywords) as the one merged schema codegen makes of it:
  properties and ``required`` of every branch, the tightest bound, ``additionalProperties:
  false`` of any branch;
- ``oneOf``/``anyOf``: the union's JSON types are compared as a ``type`` array is (a type lost
  breaks backward, a type gained forward; ``null`` and OpenAPI ``nullable`` included); object
  variants tagged by a discriminator (OpenAPI ``discriminator``, or a property that is ``const``
  or a one-value ``enum`` in every variant) pair by tag value and compare recursively
  (``$.method[kind=card].last4``). A variant **removed** breaks **backward**: old producers still
  send it and consumers on the new schema refuse it. A variant **added** breaks **forward**:
  consumers on the old schema receive messages they cannot read. Untagged object variants are
  compared conservatively: any difference (after resolving ``$ref``s) breaks both ways.

Each break is reported once per message, naming the JSON path (``$.items[].quantity``; a map's
values are ``$.labels.*``; a union variant ``$.method[kind=card]``).

An intended break is acknowledged by copying its line into an acknowledgements file
(``--acknowledge FILE``; `make compat` passes ``schemas/compat-acknowledged.txt``): it is then
printed as acknowledged and does not fail the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from streamtools.codegen._load import (
    LIST_KEYWORDS,
    MAP_KEYWORDS,
    ROOT,
    SCHEMA_KEYWORDS,
    Document,
    Folder,
    Loc,
    load_folder,
)
from streamtools.codegen._model import ANNOTATIONS, TYPED_FORMATS, Translator
from streamtools.codegen._naming import message_names
from streamtools.codegen._problems import Problems
from streamtools.errors import CodegenError, ConfigurationError

__all__ = ["Break", "add_arguments", "compare", "compare_dirs", "main", "run"]

Mode = Literal["backward", "forward", "full"]
Direction = Literal["backward", "forward"]
_BOTH: Final[frozenset[Direction]] = frozenset({"backward", "forward"})
_BACKWARD: Final[frozenset[Direction]] = frozenset({"backward"})
_FORWARD: Final[frozenset[Direction]] = frozenset({"forward"})
_LOWER_BOUNDS: Final = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS: Final = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")
_UNIONS: Final = ("oneOf", "anyOf")
# Keywords that do not change which messages are valid, left out of a union's canonical form.
_IGNORED: Final = ANNOTATIONS - {"format", "nullable", "discriminator"}
_CONSEQUENCE: Final = {
    _BACKWARD: "messages valid before may be rejected",
    _FORWARD: "messages valid now may be rejected by consumers on the old schema",
    _BOTH: "messages valid before, or now, may be rejected",
}


@dataclass(frozen=True)
class Break:
    """One incompatible change: where, what, and which direction(s) it breaks.

    `title` is the message's class name as codegen derives it (the PascalCase of its ``title``,
    else of its file name), which is how the two folders' messages pair.
    """

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


# --- one folder's schemas, as codegen reads them -------------------------------------------


@dataclass
class _View:
    """What the conjunction of some subschemas (no union left in them) says about a value."""

    types: frozenset[str] | None = None
    enum: list[Any] | None = None
    bounds: dict[str, float] = field(default_factory=dict)
    multiple_of: set[float] = field(default_factory=set)
    patterns: set[str] = field(default_factory=set)
    formats: set[str] = field(default_factory=set)
    properties: dict[str, list[Loc]] = field(default_factory=dict)
    required: set[str] = field(default_factory=set)
    closed: bool = False
    items: list[Loc] = field(default_factory=list)
    values: list[Loc] = field(default_factory=list)

    @property
    def object_like(self) -> bool:
        if self.types is not None:
            return self.types == {"object"}
        return bool(self.properties or self.required)


@dataclass
class _Tag:
    name: str
    values: list[str | int]


class _Side:
    """One folder: `$ref`s resolved by its `Folder`, `allOf` flattened as codegen does."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.problems = Problems()
        self._translator = Translator(folder, self.problems, {})

    def parts(self, locs: Iterable[Loc]) -> list[Loc]:
        """The schemas whose conjunction `locs` are: `$ref`s followed, `allOf` flattened."""
        found: list[Loc] = []
        for loc in locs:
            parts = self._translator.parts(loc)  # codegen's own merge (problems recorded)
            found.extend(parts if parts is not None else [])
        return found

    def branches(self, parts: list[Loc], depth: int = 0) -> tuple[Loc | None, list[list[Loc]]]:
        """`parts` as a union of union-free conjunctions (a `oneOf`/`anyOf` distributed over
        the other parts), and the union's schema; `(None, [parts])` without a union."""
        for index, part in enumerate(parts):
            node = part.node
            keyword = next((k for k in _UNIONS if isinstance(node, dict) and k in node), None)
            if keyword is None or not isinstance(node[keyword], list) or depth > 8:
                continue
            rest = {k: v for k, v in node.items() if k != keyword}
            others = [
                *parts[:index],
                Loc(part.doc, part.pointer, part.base, rest),
                *parts[index + 1 :],
            ]
            found: list[list[Loc]] = []
            for number in range(len(node[keyword])):
                branch = [*self.parts([part.child(keyword, str(number))]), *others]
                found.extend(self.branches(branch, depth + 1)[1])
            return part, found
        return None, [parts]

    def view(self, parts: list[Loc]) -> _View:
        view = _View()
        for part in parts:
            node = part.node
            if node is False:
                view.types = frozenset()
            if not isinstance(node, dict):
                continue
            types = _types(node)
            if types is not None:
                view.types = types if view.types is None else _intersect(view.types, types)
            enum = _enum(node)
            if enum is not None:
                view.enum = enum if view.enum is None else [v for v in view.enum if _has(enum, v)]
            for keyword in (*_LOWER_BOUNDS, *_UPPER_BOUNDS):
                value = _number(node.get(keyword))
                if value is None:
                    continue
                known = view.bounds.get(keyword)
                tighter = max if keyword in _LOWER_BOUNDS else min
                view.bounds[keyword] = value if known is None else tighter(known, value)
            multiple = _number(node.get("multipleOf"))
            if multiple is not None:
                view.multiple_of.add(multiple)
            if isinstance(node.get("pattern"), str):
                view.patterns.add(node["pattern"])
            if node.get("format") in TYPED_FORMATS:  # the rest are annotations
                view.formats.add(node["format"])
            props = node.get("properties")
            if isinstance(props, dict):
                for wire, schema in props.items():
                    if isinstance(schema, dict | bool):
                        view.properties.setdefault(wire, []).append(part.child("properties", wire))
            required = node.get("required")
            if isinstance(required, list):
                view.required.update(n for n in required if isinstance(n, str))
            extra = node.get("additionalProperties")
            if extra is False:
                view.closed = True
            elif isinstance(extra, dict):
                view.values.append(part.child("additionalProperties"))
            if isinstance(node.get("items"), dict | bool):
                view.items.append(part.child("items"))
        return view

    def has_default(self, locs: list[Loc]) -> bool:
        return any(isinstance(p.node, dict) and "default" in p.node for p in self.parts(locs))

    def tag(self, union: Loc | None, branches: list[list[Loc]]) -> _Tag | None:
        """The property that tells the object `branches` apart, and its value in each (in the
        order of `branches`), as codegen picks it for a tagged union."""
        if not branches:
            return None
        discriminator = union.node.get("discriminator") if union is not None else None
        if isinstance(discriminator, dict) and isinstance(discriminator.get("propertyName"), str):
            candidates = [discriminator["propertyName"]]
        else:
            names = [set(self.view(branch).properties) for branch in branches]
            candidates = sorted(set.intersection(*names))
        for name in candidates:
            values = [self._tag_value(branch, name) for branch in branches]
            tags = [v for v in values if v is not None]
            distinct = len(tags) == len(values) and len(set(tags)) == len(tags)
            if distinct and len({type(t) for t in tags}) == 1:
                return _Tag(name, tags)
        return None

    def _tag_value(self, branch: list[Loc], name: str) -> str | int | None:
        for part in self.parts(self.view(branch).properties.get(name, [])):
            node = part.node
            if not isinstance(node, dict):
                continue
            enum = _enum(node)
            if enum is not None and len(enum) == 1:
                value = enum[0]
                if isinstance(value, str) or (
                    isinstance(value, int) and not isinstance(value, bool)
                ):
                    return value
        return None

    def canonical(self, parts: list[Loc]) -> str:
        """`parts` as JSON with every `$ref` replaced by its target: equal when they accept
        the same messages for the same written reason, wherever the definitions live."""
        return json.dumps(sorted(json.dumps(self._inline(p, set()), sort_keys=True) for p in parts))

    def _inline(self, loc: Loc, active: set[str]) -> Any:
        node = loc.node
        if not isinstance(node, dict):
            return node
        if loc.key in active or len(active) > 64:
            return {"$ref": "(recursive)"}
        active = active | {loc.key}
        out: dict[str, Any] = {}
        ref = node.get("$ref")
        if isinstance(ref, str):
            target = self.folder.resolve(loc, ref)
            if isinstance(target, str):
                out["$ref"] = ref
            else:
                out["allOf"] = [self._inline(target, active)]
        for key, value in node.items():
            if key in _IGNORED or key == "$ref":
                continue
            if key in SCHEMA_KEYWORDS and isinstance(value, dict | bool):
                out[key] = self._inline(loc.child(key), active)
            elif key in MAP_KEYWORDS and isinstance(value, dict):
                out[key] = {k: self._inline(loc.child(key, k), active) for k in value}
            elif key in (*LIST_KEYWORDS, "items") and isinstance(value, list):
                out[key] = [self._inline(loc.child(key, str(i)), active) for i in range(len(value))]
            else:
                out[key] = value
        return out


# --- comparing two schemas -----------------------------------------------------------------


class _Walk:
    def __init__(self, old: _Side, new: _Side) -> None:
        self.old = old
        self.new = new
        self.found: list[tuple[str, str, frozenset[Direction]]] = []
        self._seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()

    def add(self, path: str, what: str, directions: frozenset[Direction]) -> None:
        self.found.append((path, what, directions))

    def schema(self, path: str, old_locs: list[Loc], new_locs: list[Loc]) -> None:
        old_parts, new_parts = self.old.parts(old_locs), self.new.parts(new_locs)
        key = (tuple(p.key for p in old_parts), tuple(p.key for p in new_parts))
        if key in self._seen:
            return  # a definition used twice is reported once; a recursive one ends here
        self._seen.add(key)
        old_union, old_branches = self.old.branches(old_parts)
        new_union, new_branches = self.new.branches(new_parts)
        if len(old_branches) == 1 and len(new_branches) == 1:
            self.conjunction(path, old_branches[0], new_branches[0])
        else:
            self.union(path, (old_union, old_branches), (new_union, new_branches))

    def conjunction(self, path: str, old_parts: list[Loc], new_parts: list[Loc]) -> None:
        old, new = self.old.view(old_parts), self.new.view(new_parts)
        self.types(path, old.types, new.types)
        self.values(path, old.enum, new.enum)
        self.bounds(path, old, new)
        self.strings(path, old, new)
        self.objects(path, old, new)
        if old.items and new.items:
            self.schema(f"{path}[]", old.items, new.items)
        if old.values and new.values:
            self.schema(f"{path}.*", old.values, new.values)

    def union(
        self,
        path: str,
        old: tuple[Loc | None, list[list[Loc]]],
        new: tuple[Loc | None, list[list[Loc]]],
    ) -> None:
        """Compare two unions (one side may be a single schema): their JSON types, scalar
        variants paired by type, object variants paired by tag value."""
        (old_union, old_branches), (new_union, new_branches) = old, new
        old_views = [self.old.view(b) for b in old_branches]
        new_views = [self.new.view(b) for b in new_branches]
        self.types(path, _union_types(old_views), _union_types(new_views))
        old_objects = [b for b, v in zip(old_branches, old_views, strict=True) if v.object_like]
        new_objects = [b for b, v in zip(new_branches, new_views, strict=True) if v.object_like]
        opaque_old: list[list[Loc]] = []
        opaque_new: list[list[Loc]] = []
        # scalar variants: paired by JSON type (a `type` array is one variant per type), each
        # pair compared on the keywords that apply to that type
        old_kinds, new_kinds = _kinds(old_branches, old_views), _kinds(new_branches, new_views)
        opaque_old += old_kinds.pop(None, [])
        opaque_new += new_kinds.pop(None, [])
        for kind in sorted(k for k in old_kinds.keys() & new_kinds.keys() if k is not None):
            before, after = old_kinds[kind], new_kinds[kind]
            if len(before) == 1 and len(after) == 1:
                self.scalar(path, kind, before[0], after[0])
            else:  # two variants of one type (two string patterns): no pairing is certain
                opaque_old += [b for b in before if b not in opaque_old]
                opaque_new += [b for b in after if b not in opaque_new]
        # object variants: paired by tag value, or the only one on each side
        old_tag = self.old.tag(old_union, old_objects)
        new_tag = self.new.tag(new_union, new_objects)
        if old_tag is not None and new_tag is not None and old_tag.name == new_tag.name:
            name = old_tag.name
            paired = dict(zip(new_tag.values, new_objects, strict=True))
            for value, branch in zip(old_tag.values, old_objects, strict=True):
                if value in paired:
                    self.schema(f"{path}[{name}={value}]", branch, paired.pop(value))
                else:
                    what = f"union variant {name}={json.dumps(value)} removed"
                    self.add(path, what, _BACKWARD)
            for value in paired:
                self.add(path, f"union variant {name}={json.dumps(value)} added", _FORWARD)
        elif len(old_objects) == 1 and len(new_objects) == 1:
            self.schema(path, old_objects[0], new_objects[0])
        else:
            opaque_old += old_objects
            opaque_new += new_objects
        old_shown = sorted(self.old.canonical(b) for b in opaque_old)
        new_shown = sorted(self.new.canonical(b) for b in opaque_new)
        if old_shown != new_shown:
            what = "union changed (variants without a tag to pair them differ)"
            self.add(path, what, _BOTH)

    def scalar(self, path: str, kind: str, old_parts: list[Loc], new_parts: list[Loc]) -> None:
        """Two variants that hold the values of the JSON type `kind` (the union compared
        their types): the keywords that apply to `kind`."""
        old = _restrict(self.old.view(old_parts), kind)
        new = _restrict(self.new.view(new_parts), kind)
        self.values(path, old.enum, new.enum)
        self.bounds(path, old, new)
        self.strings(path, old, new)
        if old.items and new.items:
            self.schema(f"{path}[]", old.items, new.items)

    def types(self, path: str, old: frozenset[str] | None, new: frozenset[str] | None) -> None:
        if old is None or new is None or old == new:
            return
        lost = not _covers(new, old)  # old values the new schema refuses
        gained = not _covers(old, new)  # new values the old schema refuses
        shown = f"type changed {_show_types(old)} -> {_show_types(new)}"
        if lost and gained:
            self.add(path, shown, _BOTH)
        elif lost:
            self.add(path, shown, _BACKWARD)
        elif gained:
            self.add(path, shown, _FORWARD)

    def values(self, path: str, old_enum: list[Any] | None, new_enum: list[Any] | None) -> None:
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
        removed = sorted(json.dumps(v) for v in old_enum if not _has(new_enum, v))
        added = sorted(json.dumps(v) for v in new_enum if not _has(old_enum, v))
        if removed:
            self.add(path, f"enum value(s) removed: {', '.join(removed)}", _BACKWARD)
        if added:
            self.add(path, f"enum value(s) added: {', '.join(added)}", _FORWARD)

    def bounds(self, path: str, old: _View, new: _View) -> None:
        for keyword in (*_LOWER_BOUNDS, *_UPPER_BOUNDS):
            before, after = old.bounds.get(keyword), new.bounds.get(keyword)
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
        olds, news = old.multiple_of, new.multiple_of
        if olds == news:
            return
        before = next(iter(olds)) if len(olds) == 1 else None
        after = next(iter(news)) if len(news) == 1 else None
        if not olds:
            self.add(path, f"multipleOf added ({_nums(news)})", _BACKWARD)
        elif not news:
            self.add(path, f"multipleOf removed (was {_nums(olds)})", _FORWARD)
        else:
            shown = f"multipleOf changed {_nums(olds)} -> {_nums(news)}"
            if before is not None and after is not None and after % before == 0:
                self.add(path, shown, _BACKWARD)
            elif before is not None and after is not None and before % after == 0:
                self.add(path, shown, _FORWARD)
            else:
                self.add(path, shown, _BOTH)

    def strings(self, path: str, old: _View, new: _View) -> None:
        for keyword, before, after in (
            ("pattern", old.patterns, new.patterns),
            ("format", old.formats, new.formats),  # only the four formats codegen checks
        ):
            if before == after:
                continue
            if len(before) == 1 and len(after) == 1:
                [was], [now] = before, after
                self.add(path, f"{keyword} changed {was!r} -> {now!r}", _BOTH)
                continue
            for value in sorted(after - before):
                self.add(path, f"{keyword} added ({value!r})", _BACKWARD)
            for value in sorted(before - after):
                self.add(path, f"{keyword} removed (was {value!r})", _FORWARD)

    def objects(self, path: str, old: _View, new: _View) -> None:
        old_props, new_props = old.properties, new.properties
        for name in sorted(old_props.keys() | new_props.keys()):  # wire names, never attributes
            where = f"{path}.{name}"
            if name in old_props and name in new_props:
                if name in new.required and name not in old.required:
                    if not self.new.has_default(new_props[name]):
                        self.add(where, "became required", _BACKWARD)
                elif name in old.required and name not in new.required:
                    self.add(where, "became optional", _FORWARD)
                self.schema(where, old_props[name], new_props[name])
            elif name in new_props:  # added
                if name in new.required and not self.new.has_default(new_props[name]):
                    self.add(where, "required field added without default", _BACKWARD)
                if old.closed:
                    self.add(
                        where,
                        "field added where the old schema forbids unknown fields",
                        _FORWARD,
                    )
            else:  # removed
                if name in old.required:
                    self.add(where, "required field removed", _FORWARD)
                if new.closed:
                    self.add(
                        where,
                        "field removed while the new schema forbids unknown fields",
                        _BACKWARD,
                    )
        if new.closed and not old.closed and (old_props or new_props):
            self.add(path, "additionalProperties: false added (unknown fields refused)", _BACKWARD)
        elif old.closed and not new.closed:
            self.add(path, "additionalProperties: false removed", _FORWARD)


def _types(node: Mapping[str, Any]) -> frozenset[str] | None:
    value = node.get("type")
    if isinstance(value, str):
        types = {value}
    elif isinstance(value, list):
        types = {t for t in value if isinstance(t, str)}
    else:
        return None
    if node.get("nullable") is True:  # OpenAPI 3.0
        types.add("null")
    return frozenset(types)


def _intersect(a: frozenset[str], b: frozenset[str]) -> frozenset[str]:
    both = a & b
    if ("integer" in a and "number" in b) or ("integer" in b and "number" in a):
        both |= {"integer"}
    return frozenset(both)


def _union_types(views: list[_View]) -> frozenset[str] | None:
    found: set[str] = set()
    for view in views:
        if view.types is None:
            if not view.object_like:
                return None
            found.add("object")
        else:
            found |= view.types
    return frozenset(found)


_KEYWORDS_OF: Final = {
    "string": frozenset({"minLength", "maxLength"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}),
    "array": frozenset({"minItems", "maxItems"}),
}


def _kind(json_type: str) -> str:
    return "number" if json_type == "integer" else json_type


def _kinds(branches: list[list[Loc]], views: list[_View]) -> dict[str | None, list[list[Loc]]]:
    """The non-object variants by the JSON type of their values (`None`: untyped ones, and
    mixes with `object` that only a conservative comparison can judge)."""
    found: dict[str | None, list[list[Loc]]] = {}
    for branch, view in zip(branches, views, strict=True):
        if view.object_like:
            continue
        if view.types is None or "object" in view.types:
            found.setdefault(None, []).append(branch)
            continue
        for kind in sorted({_kind(t) for t in view.types}):
            found.setdefault(kind, []).append(branch)
    return found


def _restrict(view: _View, kind: str) -> _View:
    """What `view` says about the values of the JSON type `kind`."""
    keywords = _KEYWORDS_OF.get(kind, frozenset())
    enum = view.enum
    if enum is not None:
        enum = [v for v in enum if _kind(_json_type(v)) == kind]
    return _View(
        types=view.types,
        enum=enum,
        bounds={k: v for k, v in view.bounds.items() if k in keywords},
        multiple_of=view.multiple_of if kind == "number" else set(),
        patterns=view.patterns if kind == "string" else set(),
        formats=view.formats if kind == "string" else set(),
        items=view.items if kind == "array" else [],
    )


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _covers(wide: frozenset[str], narrow: frozenset[str]) -> bool:
    """Whether every value of the `narrow` types is one of the `wide` types."""
    return all(t in wide or (t == "integer" and "number" in wide) for t in narrow)


def _show_types(types: frozenset[str]) -> str:
    return "|".join(sorted(types)) or "nothing"


def _enum(node: Mapping[str, Any]) -> list[Any] | None:
    if "const" in node:
        return [node["const"]]
    value = node.get("enum")
    return list(value) if isinstance(value, list) else None


def _has(values: list[Any], value: Any) -> bool:
    """`value in values` by JSON equality (`true` is not `1`)."""
    shown = json.dumps(value, sort_keys=True)
    return any(json.dumps(v, sort_keys=True) == shown for v in values)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _num(value: float | None) -> str:
    return "none" if value is None else json.dumps(value)


def _nums(values: set[float]) -> str:
    return ", ".join(sorted(map(json.dumps, values)))


def _compare(
    name: str, old: _Side, new: _Side, old_doc: Document, new_doc: Document
) -> list[Break]:
    old_queue, new_queue = old_doc.body.get("x-queue"), new_doc.body.get("x-queue")
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
            breaks.append(Break(name, str(old_queue), "$", what, _BOTH))
    walk = _Walk(old, new)
    walk.schema("$", [old_doc.root], [new_doc.root])
    breaks += [Break(name, queue, path, what, d) for path, what, d in walk.found]
    return breaks


def compare(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Break]:
    """The breaks between two versions of one self-contained message schema (all directions)."""
    old_side, new_side = _Side(_single(old)), _Side(_single(new))
    [old_doc], [new_doc] = old_side.folder.documents, new_side.folder.documents
    names = message_names([new_doc], Problems()) or message_names([old_doc], Problems())
    name = next(iter(names.values()), "Message")
    breaks = _compare(name, old_side, new_side, old_doc, new_doc)
    _raise_problems(old_side, new_side)
    return breaks


def _single(body: Mapping[str, Any]) -> Folder:
    path = Path("schema.json")
    return Folder([Document(path, ROOT + path.name, dict(body), path.stem, is_message=True)])


# --- folders, the command ------------------------------------------------------------------


def _load(directory: Path) -> tuple[_Side, dict[str, Document]]:
    """The folder as codegen reads it, and its messages by class name."""
    if not directory.is_dir():
        raise ConfigurationError(f"{directory.as_posix()}: not a directory of *.json schemas")
    problems = Problems()
    # no schemas (yet): nothing to break
    folder = load_folder(directory, problems) if any(directory.rglob("*.json")) else Folder([])
    for doc in folder.documents:
        if not isinstance(doc.body, dict):
            problems.add(doc.path, "not a schema object at #", "write the schema as a JSON object")
    messages = [d for d in folder.documents if d.is_message and isinstance(d.body, dict)]
    names = message_names(messages, problems)
    problems.raise_any()
    return _Side(folder), {name: doc for doc, name in names.items()}


def _raise_problems(*sides: _Side) -> None:
    errors = [error for side in sides for error in side.problems.errors]
    if errors:
        raise CodegenError.collect(errors)


def compare_dirs(old_dir: Path | str, new_dir: Path | str) -> list[Break]:
    """Every break between the schemas of two folders, sorted (all directions)."""
    old, old_messages = _load(Path(old_dir))
    new, new_messages = _load(Path(new_dir))
    breaks: list[Break] = []
    for name, before in sorted(old_messages.items()):
        after = new_messages.get(name)
        if after is None:
            queue = str(before.body.get("x-queue") or "no queue")
            what = "schema removed (no message schema of this name)"
            breaks.append(Break(name, queue, "$", what, _BOTH))
        else:
            breaks += _compare(name, old, new, before, after)
    _raise_problems(old, new)
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
        for line in str(exc).splitlines():
            print(f"error: {line}", file=err)
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
