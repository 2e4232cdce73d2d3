"""JSON Schema -> msgspec types, and whether msgspec alone enforces exactly what the schema says.

Every subschema becomes the tightest Python type msgspec can decode that still accepts every
instance the schema accepts. Where msgspec checks exactly what the schema says, the type is
*exact*; where it cannot (``uniqueItems``, ``not``, an untagged union of objects, a constraint
on a schema without ``type``, ...), the type is as loose as it must be (``Any`` at worst) and
the contract is marked for the JSON Schema validator, which enforces the rest at send and
receive. Nothing is dropped: a keyword is either translated exactly, or enforced by the
validator, or an annotation.

Composition: ``allOf`` of object schemas (local or ``$ref``'d) merges into one Struct;
``oneOf``/``anyOf`` of objects with a discriminator (OpenAPI ``discriminator`` or a property
that is ``const``/single-value ``enum`` in every branch) is a msgspec tagged union; unions of
scalar types, ``type`` arrays and OpenAPI ``nullable`` become Python unions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from streamtools.codegen import _naming
from streamtools.codegen._load import Document, Folder, Loc, walk
from streamtools.codegen._patterns import to_python
from streamtools.codegen._problems import Problems

TYPED_FORMATS = frozenset({"uuid", "date-time", "date", "time"})

# Keywords that say nothing about validity (JSON Schema 2020-12 annotations, OpenAPI's).
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "example",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$comment",
        "$schema",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$recursiveAnchor",
        "$defs",
        "definitions",
        "$vocabulary",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
        "discriminator",
        "xml",
        "externalDocs",
        "nullable",
        "format",
        "x-queue",
    }
)
# Every keyword of the 2020-12 vocabularies (and older drafts' that validators still apply).
KNOWN = ANNOTATIONS | frozenset(
    {
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxContains",
        "minContains",
        "maxProperties",
        "minProperties",
        "required",
        "dependentRequired",
        "properties",
        "patternProperties",
        "additionalProperties",
        "propertyNames",
        "items",
        "prefixItems",
        "additionalItems",
        "contains",
        "unevaluatedItems",
        "unevaluatedProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "dependentSchemas",
        "dependencies",
        "$ref",
        "$dynamicRef",
        "$recursiveRef",
    }
)
_STRING = frozenset({"minLength", "maxLength", "pattern"})
_NUMBER = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"})
_ARRAY = frozenset(
    {
        "items",
        "prefixItems",
        "contains",
        "minContains",
        "maxContains",
        "minItems",
        "maxItems",
        "uniqueItems",
        "unevaluatedItems",
    }
)
_OBJECT = frozenset(
    {
        "properties",
        "required",
        "additionalProperties",
        "patternProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "dependentSchemas",
        "unevaluatedProperties",
        "dependencies",
    }
)
# Object keywords a Struct cannot express: the validator checks them.
_OBJECT_BY_VALIDATOR = tuple(sorted(_OBJECT - {"properties", "required", "additionalProperties"}))
_JSON_TYPES = ("boolean", "object", "array", "number", "integer", "string", "null")


def stdlib_name(name: str) -> str:
    """A placeholder for `datetime`, `date` or `time` in a type expression: the module's
    renderer spells it, aliased where a field of the module is named like it (a field called
    `datetime` would hide the type from mypy in the annotations after it)."""
    return f"\x00{name}\x00"


def assertions(node: dict[str, Any]) -> set[str]:
    """The keywords of `node` that can make an instance invalid (unknown ones are annotations)."""
    found = {key for key in node if key in KNOWN and key not in ANNOTATIONS}
    if node.get("format") in TYPED_FORMATS:
        found.add("format")  # an assertion for these four, as codegen types them
    return found


@dataclass(eq=False)
class StructDef:
    """One generated msgspec Struct."""

    name: str
    module: str
    doc: Document
    description: str | None
    fields: list[FieldDef] = field(default_factory=list)
    forbid_unknown_fields: bool = False
    tag_field: str | None = None
    tag: str | int | None = None
    exact: bool = True
    """Whether msgspec enforces all of this Struct's own keywords (its fields' types apart)."""
    used_directly: bool = False


@dataclass
class FieldDef:
    attr: str
    wire: str
    type: PyType
    required: bool
    default: str | None = None
    """Python source of the default value, or None for no default."""
    factory: bool = False
    checks: list[str] = field(default_factory=list)
    """URIs of the subschemas the validator checks this field's value against (in the Struct's
    `__post_init__`): set where msgspec is not exact and the value is plain JSON."""


@dataclass
class PyType:
    """A Python type expression, what it needs imported, and whether it is exact."""

    text: str
    kind: str
    """msgspec's union slot: str, int, float, bool, null, array, object, struct, any."""
    exact: bool = True
    structs: tuple[StructDef, ...] = ()
    names: frozenset[str] = frozenset()
    """Names the expression uses from typing, uuid, datetime (Annotated, UUID, date, ...)."""

    @property
    def plain_json(self) -> bool:
        """Whether a value of this type is the JSON value as decoded (no Struct, UUID, dates):
        then the validator can check it as it is, exactly."""
        return not self.structs and self.names <= {"Any", "Literal", "Annotated"}

    def loose(self) -> PyType:
        return PyType(self.text, self.kind, False, self.structs, self.names)


ANY = PyType("Any", "any", True, (), frozenset({"Any"}))


def _any(exact: bool = False) -> PyType:
    return PyType("Any", "any", exact, (), frozenset({"Any"}))


def _meta(base: PyType, constraints: dict[str, Any]) -> PyType:
    if not constraints:
        return base
    args = ", ".join(f"{key}={_literal(value)}" for key, value in sorted(constraints.items()))
    return PyType(
        f"Annotated[{base.text}, msgspec.Meta({args})]",
        base.kind,
        base.exact,
        base.structs,
        base.names | {"Annotated"},
    )


def _literal(value: Any) -> str:
    """Python source for a JSON value."""
    if isinstance(value, str):
        return json.dumps(value)
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return repr(value)
        raise ValueError(value)
    if isinstance(value, list):
        return "[" + ", ".join(_literal(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(value)


class Translator:
    """Turns the schemas of one folder into Structs, one module per document."""

    def __init__(self, folder: Folder, problems: Problems, modules: dict[Document, str]) -> None:
        self.folder = folder
        self.problems = problems
        self.modules = modules
        self.structs: dict[str, StructDef] = {}
        self.class_names: dict[str, set[str]] = {}
        self.in_progress: set[str] = set()
        self.results: dict[str, PyType] = {}  # every subschema's type, by location
        self.checked: set[str] = set()  # the locations a Struct's field check covers
        # $dynamicRef resolves against the path it was reached by: checked whole, never by field
        self.dynamic = any(
            isinstance(loc.node, dict)
            and ("$dynamicRef" in loc.node or "$recursiveRef" in loc.node)
            for doc in folder.documents
            for loc in walk(doc.root)
        )

    # --- entry points --------------------------------------------------------------------

    def message(self, doc: Document, name: str) -> StructDef | None:
        root = doc.root
        parts = self.parts(root)
        if parts is None or not self._struct_parts(parts, root=True):
            self.problems.add(
                doc.path,
                "the message at # is not an object schema",
                'a message is a JSON object: give it "type": "object" (and its properties)',
            )
            return None
        struct = self._struct(root, parts, name, root=True)
        struct.used_directly = True
        return struct

    def exact(self, struct: StructDef) -> bool:
        """Whether msgspec alone enforces everything `struct`'s schema says, nested ones too."""
        seen: set[int] = set()
        stack = [struct]
        while stack:
            current = stack.pop()
            if id(current) in seen:
                continue
            seen.add(id(current))
            if not current.exact or (current.tag_field is not None and current.used_directly):
                return False
            for item in current.fields:
                if not item.type.exact and not item.checks:
                    return False
                stack.extend(item.type.structs)
        return True

    # --- types ---------------------------------------------------------------------------

    def type_of(self, loc: Loc, hint: str) -> PyType:
        typed = self._type_of(loc, hint)
        self.results[loc.key] = typed
        return typed

    def covered(self, loc: Loc) -> bool:
        """Whether msgspec (with the Structs' field checks) enforces exactly everything the
        subschema at `loc` says, where it stands: then the whole-message validator need not."""
        if loc.key in self.checked:
            return True
        typed = self.results.get(loc.key)
        return typed is not None and typed.exact and all(self.exact(s) for s in typed.structs)

    def _type_of(self, loc: Loc, hint: str) -> PyType:
        node = loc.node
        if node is True or node == {}:
            return _any(exact=True)
        if node is False:
            return _any()
        if not isinstance(node, dict):
            self.problems.add(loc.doc.path, f"{loc.where} is not a schema", "write a JSON object")
            return _any()
        if "$dynamicRef" in node or "$recursiveRef" in node:
            return _any()
        if "$ref" in node and not (assertions(node) - {"$ref"}):
            target = self._deref(loc)
            if target is None or target.key in self.in_progress:
                return _any()  # unresolvable (reported), or a cycle that no Struct breaks
            self.in_progress.add(target.key)
            try:
                return self.type_of(target, self._name_for(target, hint))
            finally:
                self.in_progress.discard(target.key)
        if "allOf" in node or "$ref" in node:
            parts = self.parts(loc)
            if parts is None:
                return _any()
            if self._struct_parts(parts):
                return self._struct_type(loc, parts, self._name_for(loc, hint))
            if any(self._object_like(part) for part in parts):
                return _any()
            return self._merged_scalars(loc, parts, hint)
        if "oneOf" in node or "anyOf" in node:
            return self._union(loc, hint)
        if "not" in node or "if" in node:
            rest = {k: v for k, v in node.items() if k not in ("not", "if", "then", "else")}
            return self._plain(loc, rest, hint).loose()
        return self._plain(loc, node, hint)

    def _plain(self, loc: Loc, node: dict[str, Any], hint: str) -> PyType:
        """A schema without composition: `type`, `enum`/`const` and the type's keywords."""
        types = self._types(node)
        if "enum" in node or "const" in node:
            return self._enum(loc, node, types)
        if types is None:
            if not assertions(node) - {"type"}:
                return _any(exact=True)
            return _any()  # keywords that only apply to some JSON types: any value may pass
        members: list[PyType] = []
        if "number" in types:
            types = [t for t in types if t != "integer"]
        for kind in types:
            members.append(self._one_type(loc, node, kind, hint))
        return _union_of(members, disjoint=True)

    def _types(self, node: dict[str, Any]) -> list[str] | None:
        raw = node.get("type")
        if raw is None:
            return None
        types = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        types = [t for t in _JSON_TYPES if t in types]  # a fixed order: deterministic output
        if node.get("nullable") is True and "null" not in types:
            types.append("null")
        return types

    def _one_type(self, loc: Loc, node: dict[str, Any], kind: str, hint: str) -> PyType:
        if kind == "null":
            return PyType("None", "null")
        if kind == "boolean":
            return PyType("bool", "bool")
        if kind == "string":
            return self._string(node)
        if kind in ("integer", "number"):
            return self._number(node, kind)
        if kind == "array":
            return self._array(loc, node, hint)
        if kind == "object":
            if (
                "properties" in node
                or "required" in node
                or node.get("additionalProperties") is False
            ):
                return self._struct_type(loc, [loc], self._name_for(loc, hint))
            return self._map(loc, node, hint)
        return _any()

    def _string(self, node: dict[str, Any]) -> PyType:
        fmt = node.get("format")
        if fmt in TYPED_FORMATS:
            typed = {
                "uuid": PyType("UUID", "str", names=frozenset({"UUID"})),
                "date-time": PyType(
                    f"Annotated[{stdlib_name('datetime')}, msgspec.Meta(tz=True)]",
                    "str",
                    names=frozenset({"Annotated", "datetime"}),
                ),
                "date": PyType(stdlib_name("date"), "str", names=frozenset({"date"})),
                "time": PyType(
                    f"Annotated[{stdlib_name('time')}, msgspec.Meta(tz=True)]",
                    "str",
                    names=frozenset({"Annotated", "time"}),
                ),
            }[fmt]
            return typed.loose() if _STRING & set(node) else typed
        constraints: dict[str, Any] = {}
        exact = True
        for key, name in (("minLength", "min_length"), ("maxLength", "max_length")):
            value = _count(node.get(key))
            if key in node:
                if value is None:
                    exact = False
                else:
                    constraints[name] = value
        if "pattern" in node:
            pattern = node["pattern"]
            translated = to_python(pattern) if isinstance(pattern, str) else None
            if translated is None:
                exact = False
            else:
                constraints["pattern"] = translated
        typed = _meta(PyType("str", "str"), constraints)
        return typed if exact else typed.loose()

    def _number(self, node: dict[str, Any], kind: str) -> PyType:
        integer = kind == "integer"
        constraints: dict[str, Any] = {}
        exact = True
        for key in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
            if key not in node:
                continue
            value = node[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                exact = False
                continue
            if isinstance(value, float) and not math.isfinite(value):
                exact = False
                continue
            name, bound = _bound(key, value, integer)
            if abs(bound) >= 2**63:
                exact = False
                continue
            known = constraints.get(name)
            if (
                known is None
                or (name in ("ge", "gt") and bound > known)
                or (name in ("le", "lt") and bound < known)
            ):
                constraints[name] = bound
        if "multipleOf" in node:
            step = node["multipleOf"]
            if (
                integer
                and isinstance(step, int | float)
                and not isinstance(step, bool)
                and float(step).is_integer()
                and 0 < step < 2**63
            ):
                constraints["multiple_of"] = int(step)
            elif not (integer and isinstance(step, int | float) and step > 0 and 1 / step % 1 == 0):
                exact = False  # a float remainder check is not exact; JSON Schema's is
        if {"ge", "gt"} <= set(constraints) or {"le", "lt"} <= set(constraints):
            exact = False  # keep one of each side only: msgspec refuses both
            for a, b in (("ge", "gt"), ("le", "lt")):
                if a in constraints and b in constraints:
                    del constraints[b]
        typed = _meta(
            PyType("int" if integer else "float", "int" if integer else "float"), constraints
        )
        return typed if exact else typed.loose()

    def _array(self, loc: Loc, node: dict[str, Any], hint: str) -> PyType:
        exact = True
        items = node.get("items")
        if isinstance(items, dict | bool) and "items" in node:
            item = self.type_of(loc.child("items"), _naming.class_name(f"{hint} item"))
            if items is False:
                exact = False
        else:
            item = _any(exact=True)
            if "items" in node:
                exact = False  # the older drafts' list of item schemas
        for key in ("prefixItems", "contains", "unevaluatedItems", "minContains", "maxContains"):
            if key in node:
                exact = False
        if node.get("uniqueItems") is True:
            exact = False
        constraints: dict[str, Any] = {}
        for key, name in (("minItems", "min_length"), ("maxItems", "max_length")):
            if key in node:
                value = _count(node[key])
                if value is None:
                    exact = False
                else:
                    constraints[name] = value
        typed = _meta(
            PyType(f"list[{item.text}]", "array", item.exact, item.structs, item.names),
            constraints,
        )
        return typed if exact else typed.loose()

    def _map(self, loc: Loc, node: dict[str, Any], hint: str) -> PyType:
        extra = node.get("additionalProperties", True)
        exact = not (_OBJECT - {"additionalProperties", "properties"}) & set(node)
        if node.get("required"):
            exact = False
        if isinstance(extra, dict):
            value = self.type_of(
                loc.child("additionalProperties"), _naming.class_name(f"{hint} value")
            )
        else:
            value = _any(exact=True)
            if extra is False:
                exact = False
        typed = PyType(
            f"dict[str, {value.text}]", "object", value.exact, value.structs, value.names
        )
        return typed if exact else typed.loose()

    def _enum(self, loc: Loc, node: dict[str, Any], types: list[str] | None) -> PyType:
        values = [node["const"]] if "const" in node else node.get("enum")
        if not isinstance(values, list) or not values:
            return _any()
        if "const" in node and "enum" in node:
            return _any()
        allowed = [value for value in values if types is None or _json_type(value) in types]
        exact = not (assertions(node) - {"type", "enum", "const"})
        literal = [
            v
            for v in allowed
            if isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool))
        ]
        has_null = None in allowed
        if len(literal) + has_null != len(allowed) or not allowed:
            return _any()  # objects, arrays, booleans, floats: the validator checks them
        parts: list[PyType] = []
        if literal:
            kinds = {"str" if isinstance(v, str) else "int" for v in literal}
            text = "Literal[" + ", ".join(_literal(v) for v in literal) + "]"
            parts.append(
                PyType(text, "str" if kinds == {"str"} else "literal", names=frozenset({"Literal"}))
            )
        if has_null:
            parts.append(PyType("None", "null"))
        if types is None and any(isinstance(v, int) for v in literal):
            # JSON Schema's 1.0 equals 1, msgspec's int Literal refuses it: take numbers too,
            # and let the validator tell 1.0 from 1.5 (`"type": "integer"` keeps it exact).
            parts.append(PyType("float", "float"))
            exact = False
        typed = _union_of(parts, disjoint=False)
        return typed if exact else typed.loose()

    # --- composition ---------------------------------------------------------------------

    def _deref(self, loc: Loc) -> Loc | None:
        """Follow a schema that is only a `$ref` (annotations aside) to its target."""
        seen: set[str] = set()
        while (
            isinstance(loc.node, dict)
            and "$ref" in loc.node
            and not (assertions(loc.node) - {"$ref"})
        ):
            if loc.key in seen:
                return None
            seen.add(loc.key)
            target = self.folder.resolve(loc, loc.node["$ref"])
            if isinstance(target, str):
                self.problems.add(
                    loc.doc.path,
                    f"$ref {loc.node['$ref']!r} at {loc.where}: {target}",
                    "fix the $ref",
                )
                return None
            loc = target
        return loc

    def parts(self, loc: Loc, depth: int = 0) -> list[Loc] | None:
        """The schemas whose conjunction `loc` is: its `$ref` target and `allOf` branches,
        flattened, and itself (without those) when it has keywords of its own."""
        if depth > 32:
            return None
        node = loc.node
        if not isinstance(node, dict):
            return [loc]
        if "$ref" in node and not (assertions(node) - {"$ref"}):
            target = self._deref(loc)
            if target is None:
                return None
            if target is loc or not isinstance(target.node, dict) or "allOf" not in target.node:
                return [target]
            return self.parts(target, depth + 1)
        if "allOf" not in node and "$ref" not in node:
            return [loc]
        parts: list[Loc] = []
        if "$ref" in node:
            target = self._deref(_only_ref(loc))
            if target is None:
                return None
            sub = self.parts(target, depth + 1)
            if sub is None:
                return None
            parts.extend(sub)
        branches = node.get("allOf", [])
        for index in range(len(branches) if isinstance(branches, list) else 0):
            sub = self.parts(loc.child("allOf", str(index)), depth + 1)
            if sub is None:
                return None
            parts.extend(sub)
        own = {k: v for k, v in node.items() if k not in ("allOf", "$ref")}
        if assertions(own) or not parts:
            parts.append(Loc(loc.doc, loc.pointer, loc.base, own))
        return parts

    def _object_like(self, loc: Loc, root: bool = False) -> bool:
        node = loc.node
        if node is True:
            return True
        if not isinstance(node, dict):
            return False
        types = self._types(node)
        if types is not None:
            return "object" in types and (root or types == ["object"])
        if root:
            return bool(_OBJECT & set(node)) or not assertions(node)
        return bool({"properties", "required"} & set(node))

    def _struct_parts(self, parts: list[Loc], root: bool = False) -> bool:
        """Whether the conjunction of `parts` is one object schema (a Struct)."""
        typed = root
        for part in parts:
            node = part.node
            if node is True:
                continue
            if not isinstance(node, dict):
                return False
            types = self._types(node)
            if types is not None and "object" not in types:
                return False
            typed = typed or types == ["object"]
        return typed

    def _typed_object(self, loc: Loc) -> bool:
        node = loc.node
        return node is True or (isinstance(node, dict) and self._types(node) == ["object"])

    def _merged_scalars(self, loc: Loc, parts: list[Loc], hint: str) -> PyType:
        """`allOf` of non-object schemas: their keywords merged when none conflict."""
        merged: dict[str, Any] = {}
        exact = True
        for part in parts:
            if not isinstance(part.node, dict):
                exact = exact and part.node is True
                continue
            if part.base != loc.base and any(
                isinstance(sub.node, dict) and "$ref" in sub.node for sub in walk(part)
            ):
                exact = False  # its refs would resolve against this schema's base, not its own
            for key, value in part.node.items():
                if key in merged and merged[key] != value and key not in ANNOTATIONS:
                    exact = False
                    continue
                merged.setdefault(key, value)
        if any(key in merged for key in ("oneOf", "anyOf", "allOf", "$ref", "not", "if")):
            return _any()
        typed = self._plain(Loc(loc.doc, loc.pointer, loc.base, merged), merged, hint)
        return typed if exact else typed.loose()

    def _union(self, loc: Loc, hint: str) -> PyType:
        node = loc.node
        one_of = "oneOf" in node
        if "oneOf" in node and "anyOf" in node:
            return _any()
        raw = node["oneOf" if one_of else "anyOf"]
        if not isinstance(raw, list) or not raw:
            return _any()
        own = assertions(node) - {"oneOf", "anyOf", "type"}
        branches: list[Loc] = []
        for index in range(len(raw)):
            target = self._deref(loc.child("oneOf" if one_of else "anyOf", str(index)))
            if target is None:
                return _any()
            branches.append(target)
        if any(b.node is True or b.node == {} for b in branches):
            return _any(exact=not own and not one_of)
        nulls = [
            b
            for b in branches
            if isinstance(b.node, dict)
            and b.node.get("type") == "null"
            and len(assertions(b.node)) == 1
        ]
        others = [b for b in branches if b not in nulls]
        nullable = bool(nulls) or node.get("nullable") is True  # OpenAPI's nullable beside anyOf
        own -= {"nullable"}
        if len(others) == 1:  # `[X, {"type": "null"}]`, or one branch: X itself (or None)
            typed = self.type_of(others[0], hint)
            if nullable:
                typed = _union_of([typed, PyType("None", "null")], disjoint=True)
            return typed.loose() if own or "type" in node else typed
        if others and all(self._object_like(b) for b in others):
            tagged = self._tagged(loc, others, hint)
            if tagged is not None:
                if nullable:
                    tagged = _union_of([tagged, PyType("None", "null")], disjoint=True)
                return tagged if not own else tagged.loose()
            return (
                PyType("dict[str, Any]", "object", False, (), frozenset({"Any"}))
                if not nullable
                else _any()
            )
        members = [self.type_of(b, hint) for b in branches]
        if node.get("nullable") is True and not nulls:
            members.append(PyType("None", "null"))
        typed = _union_of(members, disjoint=one_of)
        if own:
            typed = typed.loose()
        if "type" in node:
            typed = typed.loose()
        return typed

    def _tagged(self, loc: Loc, branches: list[Loc], hint: str) -> PyType | None:
        """A msgspec tagged union of `branches`, if one property tells them apart."""
        discriminator = loc.node.get("discriminator")
        candidates: list[str]
        if isinstance(discriminator, dict) and isinstance(discriminator.get("propertyName"), str):
            candidates = [discriminator["propertyName"]]
        else:
            names = [set(_properties(b)) for b in branches]
            candidates = sorted(set.intersection(*names)) if names else []
        for tag_field in candidates:
            tags: list[str | int] = []
            for branch in branches:
                value = _tag_value(branch, tag_field, self)
                if value is None:
                    break
                tags.append(value)
            else:
                if len(set(tags)) != len(tags) or len({type(t) for t in tags}) != 1:
                    continue
                structs: list[StructDef] = []
                for branch, tag in zip(branches, tags, strict=True):
                    parts = self.parts(branch)
                    if parts is None:
                        return None
                    name = self._name_for(branch, _naming.class_name(f"{hint} {tag}"))
                    struct = self._struct(branch, parts, name)
                    if struct.tag_field not in (None, tag_field) or struct.tag not in (None, tag):
                        return None
                    struct.tag_field, struct.tag = tag_field, tag
                    structs.append(struct)
                exact = all(_required_in(branch, tag_field, self) for branch in branches)
                return PyType(
                    " | ".join(s.name for s in structs),
                    "struct",
                    exact,
                    tuple(structs),
                )
        return None

    # --- Structs -------------------------------------------------------------------------

    def _name_for(self, loc: Loc, hint: str) -> str:
        node = loc.node
        if (
            isinstance(node, dict)
            and isinstance(node.get("title"), str)
            and _naming.class_name(node["title"]) != "Model"
        ):
            return _naming.class_name(node["title"])
        tokens = loc.pointer.split("/")
        if len(tokens) >= 2 and tokens[-2] in ("$defs", "definitions"):
            return _naming.class_name(tokens[-1].replace("~1", "/").replace("~0", "~"))
        return hint

    def _struct_type(self, loc: Loc, parts: list[Loc], name: str) -> PyType:
        struct = self._struct(loc, parts, name)
        struct.used_directly = True
        return PyType(struct.name, "struct", True, (struct,))

    def _struct(self, loc: Loc, parts: list[Loc], name: str, root: bool = False) -> StructDef:
        known = self.structs.get(loc.key)
        if known is not None:
            return known
        module = self.modules[loc.doc]
        taken = self.class_names.setdefault(module, set())
        description = loc.node.get("description") if isinstance(loc.node, dict) else None
        struct = StructDef(
            name=_naming.unique(name, taken),
            module=module,
            doc=loc.doc,
            description=description if isinstance(description, str) else None,
        )
        if struct.name != name:
            self.problems.notice(
                loc.doc.path,
                f"class {name!r} for {loc.where} is taken in module {module}; named it "
                f"{struct.name!r}",
            )
        self.structs[loc.key] = struct
        self._fill(struct, loc, parts, root)
        return struct

    def _fill(self, struct: StructDef, loc: Loc, parts: list[Loc], root: bool) -> None:
        properties: dict[str, list[Loc]] = {}
        required: list[str] = []
        forbid: list[bool] = []
        for part in parts:
            node = part.node
            if node is True:
                continue
            if not isinstance(node, dict):
                struct.exact = False
                continue
            extra = set(assertions(node)) - _OBJECT - _STRING - _NUMBER - _ARRAY - {"type"}
            if extra:
                struct.exact = False  # `not`, `if`, unions beside an object's properties
            types = self._types(node)
            if types is not None and "object" not in types:
                struct.exact = False
            for key in _OBJECT_BY_VALIDATOR:
                if key in node:
                    struct.exact = False
            props = node.get("properties", {})
            if isinstance(props, dict):
                for wire in props:
                    properties.setdefault(wire, []).append(part.child("properties", wire))
            names = node.get("required", [])
            if isinstance(names, list):
                required.extend(n for n in names if isinstance(n, str) and n not in required)
            extra_props = node.get("additionalProperties", True)
            if isinstance(extra_props, dict) and extra_props != {}:
                struct.exact = False
            forbid.append(extra_props is False)
        if any(forbid):
            if (
                len(
                    [
                        p
                        for p in parts
                        if isinstance(p.node, dict)
                        and (
                            p.node.get("properties") or p.node.get("additionalProperties") is False
                        )
                    ]
                )
                == 1
            ):
                struct.forbid_unknown_fields = True
            else:
                struct.exact = False  # additionalProperties: false in one branch of an allOf
        for wire in required:
            properties.setdefault(wire, [])
        taken = {"msgspec"}
        for wire, locs in properties.items():
            attr = _naming.unique(_naming.attribute(wire), taken)
            if attr != _naming.attribute(wire):
                self.problems.notice(
                    loc.doc.path,
                    f"property {wire!r} at {loc.where} is the attribute {attr!r} (its snake_case "
                    "name is taken)",
                )
            hint = _naming.class_name(wire)
            if not locs:
                typed = _any(exact=True)
            else:
                typed = self.type_of(locs[0], hint)
                if any(
                    json.dumps(other.node, sort_keys=True)
                    != json.dumps(locs[0].node, sort_keys=True)
                    or other.base != locs[0].base
                    for other in locs[1:]
                ):
                    typed = typed.loose()
            is_required = wire in required
            default, factory = (None, False) if is_required else _default(locs, typed)
            item = FieldDef(attr, wire, typed, is_required, default, factory)
            if locs and not typed.exact and typed.plain_json and not self.dynamic:
                item.checks = [location_uri(other) for other in locs]
                self.checked.update(other.key for other in locs)
            struct.fields.append(item)


def location_uri(loc: Loc) -> str:
    """The URI of the subschema at `loc` (its document's URI and JSON pointer fragment)."""
    return f"{loc.doc.uri}#{quote(loc.where.removeprefix('#'), safe=_POINTER_SAFE)}"


_POINTER_SAFE = "/~!$&'()*+,;=:@-._"


def _only_ref(loc: Loc) -> Loc:
    return Loc(loc.doc, loc.pointer, loc.base, {"$ref": loc.node["$ref"]})


def _properties(loc: Loc) -> dict[str, Any]:
    node = loc.node
    props = node.get("properties") if isinstance(node, dict) else None
    return props if isinstance(props, dict) else {}


def _tag_value(loc: Loc, name: str, translator: Translator) -> str | int | None:
    parts = translator.parts(loc) or []
    for part in parts:
        schema = _properties(part).get(name)
        if not isinstance(schema, dict):
            continue
        if "const" in schema:
            value = schema["const"]
        elif isinstance(schema.get("enum"), list) and len(schema["enum"]) == 1:
            value = schema["enum"][0]
        else:
            continue
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return value
    return None


def _required_in(loc: Loc, name: str, translator: Translator) -> bool:
    for part in translator.parts(loc) or []:
        node = part.node
        required = node.get("required") if isinstance(node, dict) else None
        if isinstance(required, list) and name in required:
            return True
    return False


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value.is_integer() else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if 0 <= value < 2**63 else None


def _bound(key: str, value: int | float, integer: bool) -> tuple[str, int | float]:
    if not integer:
        name = {
            "minimum": "ge",
            "exclusiveMinimum": "gt",
            "maximum": "le",
            "exclusiveMaximum": "lt",
        }[key]
        return name, value
    if key == "minimum":
        return "ge", math.ceil(value)
    if key == "maximum":
        return "le", math.floor(value)
    if key == "exclusiveMinimum":
        return ("gt", int(value)) if float(value).is_integer() else ("ge", math.floor(value) + 1)
    return ("lt", int(value)) if float(value).is_integer() else ("le", math.ceil(value) - 1)


_SLOTS = ("str", "int", "float", "bool", "null", "array", "object")


def _union_of(members: list[PyType], disjoint: bool) -> PyType:
    """`A | B`, if msgspec can decode it; `Any` (loose) if not. `disjoint`: a `oneOf`."""
    if len(members) == 1:
        return members[0]
    flat: list[PyType] = []
    for member in members:
        if member.kind == "any":
            return _any(exact=all(m.exact for m in members) and not disjoint)
        flat.append(member)
    slots: dict[str, int] = {}
    for member in flat:
        kinds = ("str", "int") if member.kind == "literal" else (member.kind,)
        for kind in kinds:
            slot = "object" if kind == "struct" else kind
            slots[slot] = slots.get(slot, 0) + 1
    if any(count > 1 for count in slots.values()):
        return _any()
    exact = all(m.exact for m in flat)
    if disjoint and "int" in slots and "float" in slots:
        exact = False  # an integer is also a number: oneOf fails on it, a Python union does not
    texts: list[str] = []
    for member in flat:
        if member.text not in texts:
            texts.append(member.text)
    text = " | ".join(texts)
    structs = tuple(s for m in flat for s in m.structs)
    names = frozenset().union(*(m.names for m in flat))
    return PyType(text, "union", exact, structs, names)


def _default(locs: list[Loc], typed: PyType) -> tuple[str, bool]:
    """The Python default of an optional field and whether it needs a factory: its schema's
    `default` where the field's type holds it as is, else None."""
    node = locs[0].node if locs else None
    if not isinstance(node, dict) or "default" not in node:
        return "None", False
    value = node["default"]
    if not _fits(value, typed):
        return "None", False
    try:
        text = _literal(value)
    except ValueError:  # NaN or infinity
        return "None", False
    return text, isinstance(value, list | dict) and bool(value)


def _fits(value: Any, typed: PyType) -> bool:
    """Whether a JSON `value` is a value of `typed` as Python spells it (no conversion)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if typed.kind == "str":
        if not isinstance(value, str) or not typed.names <= {"Literal", "Annotated"}:
            return False  # a UUID or a datetime default would be a str
        return "Literal" not in typed.names or _literal(value) in typed.text
    if typed.kind == "int":
        return number and isinstance(value, int)
    if typed.kind == "float":
        return number
    if typed.kind == "bool":
        return isinstance(value, bool)
    if typed.kind == "array":
        return isinstance(value, list) and typed.exact
    if typed.kind == "object":
        return isinstance(value, dict) and typed.text.startswith("dict")
    return typed.kind == "any"
