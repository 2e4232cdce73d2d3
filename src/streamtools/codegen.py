"""Generate msgspec Structs and typed queue contracts from JSON Schemas.

`streamtools codegen SCHEMAS_DIR OUT_DIR` reads every ``*.json`` file of SCHEMAS_DIR (one
message type per file) and writes OUT_DIR as an importable package:

- one module per schema, named after the snake case of its ``title``
  (``OrderCreated`` -> ``order_created.py``), holding the ``title`` Struct and its nested
  Structs, built by datamodel-code-generator's ``msgspec.Struct`` output;
- ``__init__.py``: re-exports every top-level Struct (and every nested Struct or type alias
  whose name only one module defines), one ``Queue[T]`` constant per ``x-queue``
  (``orders.created`` -> ``ORDERS_CREATED``), ``QUEUES`` (queue name -> contract), a sorted
  ``__all__``, and a call to ``register_contracts(QUEUES)``;
- ``py.typed``.

Mapping: ``format: uuid`` -> ``uuid.UUID``; ``date-time`` ->
``Annotated[datetime, Meta(tz=True)]`` (a timestamp without a UTC offset fails validation);
``date`` -> ``datetime.date``; ``time`` -> ``datetime.time``; ``email`` and ``uri`` stay
``str`` (annotations, as JSON Schema 2020-12 treats ``format`` by default); ``enum``/``const``
-> ``Literal[...]``; ``$ref``/``$defs`` and inline objects -> nested Structs; an object with
``additionalProperties: {schema}`` and no ``properties`` -> ``dict[str, T]``; numeric, length,
pattern and item-count keywords -> ``msgspec.Meta`` constraints; ``additionalProperties:
false`` -> ``forbid_unknown_fields=True`` (an unknown field fails validation, naming it;
without it unknown fields are accepted and dropped, so that producers can add fields). Every
Struct is ``kw_only=True, omit_defaults=True``: a field outside ``required`` defaults to its
``default`` or to ``None``, and is left out on encode while it holds that default. A ``null``
sent for such a field is accepted as "absent".

Supported keywords (anything else is an error, so nothing is silently dropped; the README has
the table): ``type`` (one type, optionally with ``"null"``), ``properties``, ``required``,
``items``, ``additionalProperties`` (a boolean, or a map's value schema), ``$ref`` (local:
``#/$defs/...`` or ``#/definitions/...``), ``$defs``/``definitions``, ``enum``, ``const``,
``default``, ``format`` (``uuid``, ``date-time``, ``date``, ``time``, ``email``, ``uri``),
``minimum``, ``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``
(integers only), ``minLength``, ``maxLength``, ``pattern``, ``minItems``, ``maxItems``, and
the annotations ``title``, ``description``, ``examples``, ``deprecated``, ``$schema``,
``$id``, ``$comment`` and any ``x-`` extension.

Refused, each with its reason in ``_UNSUPPORTED_WHY``: ``oneOf``/``anyOf``/``allOf``/``not``/
``if``/``then``/``else`` (msgspec cannot decode untagged unions of Structs),
``patternProperties``, ``propertyNames``, ``minProperties``/``maxProperties``,
``prefixItems``, ``contains``, ``uniqueItems``, ``unevaluatedProperties``,
``dependentRequired``/``dependentSchemas``; objects that have neither ``properties`` nor a
value schema; ``$ref`` to another file (each schema is self-contained: copy shared
``$defs``); a ``default`` on a ``format`` string (it would be written as a ``str``). Every
problem of every file is reported in one run, each with its file and JSON pointer.

Output is deterministic: no timestamps, no absolute paths, schemas and names sorted.
``streamtools[codegen]`` accepts datamodel-code-generator `DATAMODEL_RANGE`; the committed demo
output is made with `DATAMODEL_VERSION`, pinned in the dev extra.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import keyword
import re
import shutil
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

# The run-time queue-name rule: codegen refuses exactly the names a Queue would.
from streamtools._types import check_queue_name
from streamtools.errors import ConfigurationError

__all__ = [
    "DATAMODEL_RANGE",
    "DATAMODEL_VERSION",
    "CodegenError",
    "check",
    "generate",
    "main",
    "render",
    "run",
]

DATAMODEL_VERSION = "0.89.0"
"""The datamodel-code-generator release the committed demo output is made with (dev extra)."""
DATAMODEL_RANGE = ">=0.89,<0.90"
"""The releases `streamtools[codegen]` accepts: the ones this module's rewrites are made for."""
_SUPPORTED_SERIES = (0, 89)

_TITLE_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_FORMATS = frozenset({"uuid", "date-time", "date", "time", "email", "uri"})
_TYPED_FORMATS = frozenset({"uuid", "date-time", "date", "time"})
_TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})
_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "$ref",
        "$defs",
        "definitions",
        "title",
        "description",
        "default",
        "examples",
        "enum",
        "const",
        "format",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "additionalProperties",
        "$schema",
        "$id",
        "$comment",
        "deprecated",
    }
)
_UNSUPPORTED_WHY = {
    "oneOf": "msgspec cannot decode untagged unions; use one object schema per message",
    "anyOf": "msgspec cannot decode untagged unions; use one object schema per message",
    "allOf": "composition is not supported; write the merged properties out",
    "not": "negation cannot be expressed as a msgspec constraint; remove it",
    "if": "conditional schemas are not supported; remove if/then/else",
    "then": "conditional schemas are not supported; remove if/then/else",
    "else": "conditional schemas are not supported; remove if/then/else",
    "patternProperties": "use a typed map (additionalProperties with the values' schema)",
    "propertyNames": "map keys are not constrained; check them in the handler",
    "minProperties": "msgspec checks no property count on a Struct; remove it",
    "maxProperties": "msgspec checks no property count on a Struct; remove it",
    "prefixItems": "tuples are not supported; use an object with named properties",
    "contains": "msgspec has no contains constraint; check it in the handler",
    "unevaluatedProperties": "use additionalProperties: false",
    "dependentRequired": "conditional schemas are not supported; remove it",
    "dependentSchemas": "conditional schemas are not supported; remove it",
    "uniqueItems": "msgspec has no unique-items constraint; remove it and check in the handler",
}
# Names the generated __init__.py defines itself: a schema title must not shadow them.
_RESERVED = frozenset(
    {"Any", "Mapping", "MappingProxyType", "QUEUES", "Queue", "register_contracts"}
)


class CodegenError(ConfigurationError):
    """A schema cannot be turned into code; the message names the file and what to change.

    `path` is the offending schema file (or the directory), as given on the command line.
    """

    def __init__(self, path: Path | str, what: str, todo: str) -> None:
        super().__init__(f"{Path(path).as_posix()}: {what} — {todo}")
        self.path = Path(path)
        self.errors: list[CodegenError] = [self]
        """Every problem of the run, one line each (just this one when there is one)."""

    @classmethod
    def collect(cls, errors: Sequence[CodegenError]) -> CodegenError:
        """One error for all of `errors`: their lines, the first one's path."""
        if len(errors) == 1:
            return errors[0]
        combined = cls(errors[0].path, "", "")
        combined.args = ("\n".join(str(error) for error in errors),)
        combined.errors = list(errors)
        return combined


@dataclass(frozen=True, slots=True)
class _Schema:
    path: Path
    title: str
    queue: str | None
    module: str
    body: dict[str, Any]


# --- public API --------------------------------------------------------------------------


def render(schemas_dir: Path | str) -> dict[str, bytes]:
    """Return the files OUT_DIR must hold (relative name -> bytes), without writing anything.

    Every problem of every schema is found before this raises; `CodegenError.errors` has them.
    """
    missing = _datamodel_problem()
    if missing is not None:
        what, _, todo = missing.partition(" — ")
        raise CodegenError("datamodel-code-generator", what, todo)
    schemas = _load_schemas(Path(schemas_dir))
    files: dict[str, bytes] = {"py.typed": b""}
    exports: dict[str, list[str]] = {}
    problems: list[CodegenError] = []
    with _forbidding_unknown_fields():
        for schema in schemas:
            try:
                source = _finish_module(_run_datamodel(schema), schema)
            except CodegenError as exc:
                problems.append(exc)
                continue
            files[f"{schema.module}.py"] = source.encode()
            exports[schema.module] = _public_names(source)
    if problems:
        raise CodegenError.collect(problems)
    files["__init__.py"] = _render_init(schemas, exports).encode()
    return dict(sorted(files.items()))


def generate(schemas_dir: Path | str, out_dir: Path | str) -> list[str]:
    """Write the generated package to `out_dir`, replacing it only if generation succeeds.

    Returns the names of the files written. On any error `out_dir` is left untouched.
    """
    out = Path(out_dir)
    files = render(schemas_dir)
    _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the package gets the umask's permissions (mkdtemp's 0700 would hide
    # it from a service that runs as another user than the one that built its image).
    staging = _unique_sibling(out, "new")
    staging.mkdir()
    try:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        _swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return list(files)


def check(schemas_dir: Path | str, out_dir: Path | str) -> list[str]:
    """Return the files of `out_dir` that differ from a fresh generation (empty: up to date)."""
    expected = render(schemas_dir)
    actual = _read_tree(Path(out_dir))
    return sorted(
        name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name)
    )


def run(
    schemas_dir: str,
    out_dir: str,
    *,
    check_only: bool = False,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run codegen as the CLI does: print one line per outcome, return the exit status."""
    out_stream = stdout if stdout is not None else sys.stdout
    err_stream = stderr if stderr is not None else sys.stderr
    missing = _datamodel_problem()
    if missing is not None:  # a missing extra is a usage problem: exit 2, as argparse does
        print(f"error: {missing}", file=err_stream)
        return 2
    try:
        if check_only:
            stale = check(schemas_dir, out_dir)
            if stale:
                shown = f"{Path(out_dir).as_posix().rstrip('/')}/"
                command = f"streamtools codegen {schemas_dir} {out_dir}"
                print(
                    f"{shown} is stale (differs: {', '.join(stale)}); run '{command}'"
                    + _version_note(),
                    file=err_stream,
                )
                return 1
            print(f"{Path(out_dir).as_posix()} is up to date", file=out_stream)
            return 0
        written = generate(schemas_dir, out_dir)
    except CodegenError as exc:
        for error in exc.errors:
            print(f"error: {error}", file=err_stream)
        return 1
    except OSError as exc:
        print(f"error: {exc} — check the paths and permissions", file=err_stream)
        return 1
    print(f"wrote {len(written)} files to {Path(out_dir).as_posix()}", file=out_stream)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the codegen arguments (SCHEMAS_DIR OUT_DIR [--check]) to `parser`."""
    parser.add_argument("schemas_dir", metavar="SCHEMAS_DIR", help="directory of *.json schemas")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="package directory to (re)write")
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if OUT_DIR differs from what would be generated",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m streamtools.codegen SCHEMAS_DIR OUT_DIR [--check]`."""
    parser = argparse.ArgumentParser(
        prog="streamtools codegen", description="Generate msgspec Structs from JSON Schemas."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args.schemas_dir, args.out_dir, check_only=args.check)


# --- loading and validating schemas ------------------------------------------------------


_INSTALL = "pip install 'streamtools[codegen]'"


def _datamodel_problem() -> str | None:
    """Why codegen cannot run here (datamodel-code-generator missing or unsupported), or None."""
    try:
        installed = metadata.version("datamodel-code-generator")
    except metadata.PackageNotFoundError:
        return (
            "streamtools codegen needs datamodel-code-generator, which is not installed "
            f"— {_INSTALL}"
        )
    if tuple(int(part) for part in re.findall(r"\d+", installed)[:2]) != _SUPPORTED_SERIES:
        return (
            f"datamodel-code-generator {installed} is installed; streamtools codegen supports "
            f"{DATAMODEL_RANGE} — {_INSTALL}"
        )
    return None


def _version_note() -> str:
    """Why a fresh generation may differ from committed output made with another release."""
    installed = metadata.version("datamodel-code-generator")
    if installed == DATAMODEL_VERSION:
        return ""
    return (
        f" (datamodel-code-generator {installed} is installed; the pinned release is "
        f"{DATAMODEL_VERSION})"
    )


class _Problems:
    """Every problem found in one run, so that a user sees them all at once."""

    def __init__(self) -> None:
        self.errors: list[CodegenError] = []

    def add(self, path: Path, what: str, todo: str) -> None:
        self.errors.append(CodegenError(path, what, todo))

    def raise_any(self) -> None:
        if self.errors:
            raise CodegenError.collect(self.errors)


def _load_schemas(schemas_dir: Path) -> list[_Schema]:
    if not schemas_dir.is_dir():
        raise CodegenError(schemas_dir, "not a directory", "pass the directory of *.json schemas")
    paths = sorted(schemas_dir.glob("*.json"), key=lambda p: p.name)
    if not paths:
        raise CodegenError(
            schemas_dir, "no *.json schema files", "add one JSON Schema file per message type"
        )
    problems = _Problems()
    loaded = [_load_schema(path, problems) for path in paths]
    schemas = [schema for schema in loaded if schema is not None]
    seen_title: dict[str, Path] = {}
    seen_module: dict[str, Path] = {}
    seen_queue: dict[str, Path] = {}
    seen_constant: dict[str, Path] = {}
    for schema in schemas:
        for key, seen, what in (
            (schema.title, seen_title, f"title {schema.title!r} at #/title"),
            (schema.module, seen_module, f"module name {schema.module!r} (from #/title)"),
            (schema.queue, seen_queue, f"x-queue {schema.queue!r} at #/x-queue"),
            (
                _constant_name(schema.queue),
                seen_constant,
                f"queue constant for {schema.queue!r} (from #/x-queue)",
            ),
        ):
            if key is None:
                continue
            if key in seen:
                problems.add(
                    schema.path,
                    f"{what} is already used by {seen[key].name}",
                    "give every schema its own title and queue",
                )
            else:
                seen[key] = schema.path
    problems.raise_any()
    return sorted(schemas, key=lambda s: s.title)


def _queue_problem(queue: object) -> str | None:
    """Why `queue` is not a queue name (the rule `Queue` applies at run time), or None."""
    try:
        check_queue_name(queue)
    except ValueError as exc:
        return str(exc)
    return None


def _load_schema(path: Path, problems: _Problems) -> _Schema | None:
    """The schema in `path`, or None after adding every problem it has to `problems`."""
    before = len(problems.errors)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        problems.add(
            path,
            f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
            "fix the JSON syntax",
        )
        return None
    except UnicodeDecodeError:
        problems.add(path, "not UTF-8 text", "save the file as UTF-8")
        return None
    if not isinstance(body, dict) or body.get("type") != "object":
        problems.add(
            path,
            "not an object schema at #",
            'a message schema needs "type": "object" and "properties"',
        )
        return None
    title = body.get("title")
    if title is None:
        problems.add(path, "missing title at #", 'add "title": "PascalCaseName" (the Struct name)')
    elif not isinstance(title, str) or not _TITLE_RE.match(title) or title in _RESERVED:
        problems.add(
            path,
            f"title {title!r} at #/title is not a usable class name",
            "use a PascalCase name such as OrderCreated (not one of: "
            + ", ".join(sorted(_RESERVED))
            + ")",
        )
    queue = body.get("x-queue")
    why = None if queue is None else _queue_problem(queue)
    if why is not None:
        problems.add(path, f"x-queue {queue!r} at #/x-queue is not a queue name", why)
    if isinstance(title, str) and title in _definitions(body):
        problems.add(
            path,
            f"a definition at #/$defs/{title} is named like the title {title!r}",
            "rename the definition",
        )
    for pointer, node in _walk(body, "#"):
        _validate_node(path, pointer, node, body, problems)
    if len(problems.errors) > before or not isinstance(title, str):
        return None
    stripped = {key: value for key, value in body.items() if key != "x-queue"}
    return _Schema(
        path=path,
        title=title,
        queue=queue if isinstance(queue, str) else None,
        module=_snake(title),
        body=stripped,
    )


def _definitions(body: Mapping[str, Any]) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    for key in ("$defs", "definitions"):
        value = body.get(key, {})
        if isinstance(value, dict):
            defs.update(value)
    return defs


def _walk(node: Any, pointer: str) -> Iterator[tuple[str, Any]]:
    """Yield every subschema of `node` with its JSON pointer (keyword positions only)."""
    yield pointer, node
    if not isinstance(node, dict):
        return
    for key in ("properties", "$defs", "definitions"):
        children = node.get(key)
        if isinstance(children, dict):
            for name, child in children.items():
                yield from _walk(child, f"{pointer}/{key}/{_escape(name)}")
    for key in ("items", "additionalProperties"):
        child = node.get(key)
        if child is not None and not isinstance(child, bool):
            yield from _walk(child, f"{pointer}/{key}")


def _escape(name: str) -> str:
    """`name` as one JSON pointer token (RFC 6901)."""
    return name.replace("~", "~0").replace("/", "~1")


def _validate_node(
    path: Path, pointer: str, node: Any, root: Mapping[str, Any], problems: _Problems
) -> None:
    if not isinstance(node, dict):
        problems.add(path, f"{pointer} is not a schema object", "write it as a JSON object")
        return
    for key in node:
        if key in _UNSUPPORTED_WHY:
            problems.add(path, f"unsupported keyword {key!r} at {pointer}", _UNSUPPORTED_WHY[key])
        elif key not in _KEYWORDS and not key.startswith("x-"):
            problems.add(
                path,
                f"unsupported keyword {key!r} at {pointer}",
                "remove it (the README's keyword table lists what codegen supports)",
            )
    if "x-queue" in node and pointer != "#":
        problems.add(path, f"x-queue at {pointer}", "x-queue belongs at the top level only")
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    non_null = [t for t in types if t != "null"] if isinstance(types, list) else []
    if not isinstance(types, list) or any(t not in _TYPES for t in types) or len(non_null) > 1:
        problems.add(
            path,
            f"type {node.get('type')!r} at {pointer} is not supported",
            'use one JSON type, optionally with "null"',
        )
    extra = node.get("additionalProperties")
    if extra is not None and not isinstance(extra, bool | dict):
        problems.add(
            path,
            f"additionalProperties at {pointer} is neither a boolean nor a schema",
            "use false (no unknown fields), true, or the schema of a map's values",
        )
    if isinstance(extra, dict):
        if node.get("properties"):
            problems.add(
                path,
                f"properties and a schema-valued additionalProperties at {pointer}",
                "a Struct has fixed fields: use either properties or a typed map, not both",
            )
        if "object" not in non_null:
            problems.add(
                path,
                f'additionalProperties as a schema at {pointer} without "type": "object"',
                'add "type": "object"',
            )
    elif "object" in non_null and not node.get("properties"):
        problems.add(
            path,
            f"object without properties at {pointer}",
            "declare its properties, or make it a typed map with an additionalProperties schema",
        )
    if "array" in non_null and "items" not in node:
        problems.add(path, f"array without items at {pointer}", "declare its items schema")
    fmt = node.get("format")
    if fmt is not None and fmt not in _FORMATS:
        problems.add(
            path,
            f"unsupported format {fmt!r} at {pointer}",
            "use one of " + ", ".join(sorted(_FORMATS)) + ", or remove the format",
        )
    if fmt in _TYPED_FORMATS and "default" in node:
        problems.add(
            path,
            f"a default on a {fmt} string at {pointer}",
            "remove the default (make the field required, or leave it optional)",
        )
    if "multipleOf" in node and "integer" not in non_null:
        problems.add(
            path,
            f"multipleOf on a non-integer at {pointer}",
            "msgspec checks it by floating-point remainder; use an integer (e.g. cents)",
        )
    required = node.get("required", [])
    properties = node.get("properties", {})
    if not isinstance(properties, dict):
        problems.add(path, f"properties at {pointer} is not an object", "map names to schemas")
        properties = {}
    if not isinstance(required, list) or any(name not in properties for name in required):
        problems.add(
            path,
            f"required at {pointer} names a property that is not declared",
            "list only names from properties",
        )
    for name in properties:
        if not name.isidentifier() or keyword.iskeyword(name) or name != name.lower():
            problems.add(
                path,
                f"property {name!r} at {pointer}/properties is not a snake_case identifier",
                "rename it in snake_case (fields keep their JSON names)",
            )
    ref = node.get("$ref")
    if ref is not None:
        _check_ref(path, pointer, ref, root, problems)


def _check_ref(
    path: Path, pointer: str, ref: Any, root: Mapping[str, Any], problems: _Problems
) -> None:
    match = re.fullmatch(r"#/(\$defs|definitions)/([^/]+)", ref) if isinstance(ref, str) else None
    if match is None:
        problems.add(
            path,
            f"$ref {ref!r} at {pointer} is not a local definition",
            "point it at #/$defs/<Name> in the same file",
        )
        return
    defs = root.get(match.group(1))
    if not isinstance(defs, dict) or match.group(2) not in defs:
        problems.add(path, f"$ref {ref!r} at {pointer} does not resolve", "define it under $defs")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _constant_name(queue: str | None) -> str | None:
    return None if queue is None else re.sub(r"[.\-]", "_", queue).upper()


# --- running datamodel-code-generator and finishing its output ---------------------------


@contextlib.contextmanager
def _forbidding_unknown_fields() -> Iterator[None]:
    """Make datamodel's msgspec Structs honour ``additionalProperties: false``.

    datamodel-code-generator records the keyword in each model's template data but its msgspec
    output drops it; for the span of a run, its Struct's template data gets
    ``forbid_unknown_fields=True`` where the keyword is false.
    """
    from datamodel_code_generator.model import msgspec as dcg_msgspec

    struct = dcg_msgspec.Struct
    original = getattr(struct, "_builtin_template_data", None)
    if original is None:
        raise CodegenError(
            "datamodel-code-generator",
            "this release has no msgspec Struct template data to add forbid_unknown_fields to",
            _INSTALL,
        )

    def template_data(self: Any) -> dict[str, Any]:
        data: dict[str, Any] = original(self)
        if self.extra_template_data.get("additionalProperties") is False:
            kwargs = {**data.get("base_class_kwargs", {}), "forbid_unknown_fields": "True"}
            data = {**data, "base_class_kwargs": kwargs}
        return data

    struct._builtin_template_data = template_data  # type: ignore[method-assign]
    try:
        yield
    finally:
        struct._builtin_template_data = original  # type: ignore[method-assign]


def _run_datamodel(schema: _Schema) -> str:
    # Imported here: it is heavy (pydantic), and only codegen needs it.
    from collections import defaultdict

    import datamodel_code_generator as dcg
    from datamodel_code_generator.enums import DataModelType

    header = f"# Generated by streamtools codegen from {schema.path.name}; do not edit."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            output = dcg.generate(
                schema.body,
                input_file_type=dcg.InputFileType.JsonSchema,
                output_model_type=DataModelType.MsgspecStruct,
                target_python_version=dcg.PythonVersion.PY_311,
                use_standard_primitive_types=True,
                output_datetime_class=dcg.DatetimeClassType.Datetime,
                use_annotated=True,
                field_constraints=True,
                use_title_as_name=True,
                enum_field_as_literal=dcg.LiteralType.All,
                use_schema_description=True,
                keyword_only=True,
                extra_template_data=defaultdict(
                    dict, {"#all#": {"base_class_kwargs": {"omit_defaults": True}}}
                ),
                disable_timestamp=True,
                use_double_quotes=True,
                formatters=[dcg.Formatter.BUILTIN],
                custom_file_header=header,
            )
        except Exception as exc:  # datamodel raises many unrelated types; all mean "bad schema"
            raise CodegenError(
                schema.path, f"datamodel-code-generator failed at #: {exc}", "fix the schema"
            ) from exc
    # A warning means datamodel dropped or changed something: fail rather than lose a rule.
    # Deprecation warnings are about the tool, not the schema.
    for warning in caught:
        if not issubclass(warning.category, DeprecationWarning | PendingDeprecationWarning):
            raise CodegenError(
                schema.path,
                f"datamodel-code-generator warned at #: {warning.message}",
                "change the schema so that it can be generated exactly",
            )
    if not isinstance(output, str):
        raise CodegenError(
            schema.path,
            "datamodel-code-generator wrote several modules for #",
            "simplify the schema",
        )
    return output


class _Edits:
    """Replacements at (line, column) positions of an `ast` tree; columns are UTF-8 offsets."""

    def __init__(self, source: str) -> None:
        self.data = source.encode()
        self.line_starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.edits: list[tuple[int, int, str]] = []

    def offset(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def replace(self, start: tuple[int, int], end: tuple[int, int], text: str) -> None:
        self.edits.append((self.offset(*start), self.offset(*end), text))

    def replace_node(self, node: ast.expr | ast.stmt, text: str) -> None:
        assert node.end_lineno is not None
        assert node.end_col_offset is not None
        self.replace((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset), text)

    def apply(self) -> str:
        data = self.data
        for start, end, text in sorted(self.edits, reverse=True):
            data = data[:start] + text.encode() + data[end:]
        return data.decode()


def _end(node: ast.expr) -> tuple[int, int]:
    assert node.end_lineno is not None
    assert node.end_col_offset is not None
    return node.end_lineno, node.end_col_offset


def _union_members(node: ast.expr) -> list[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return [*_union_members(node.left), *_union_members(node.right)]
    return [node]


def _is_name(node: ast.expr | None, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _finish_module(source: str, schema: _Schema) -> str:
    """Turn datamodel's output into the contract we promise.

    datamodel-code-generator 0.89 writes optional fields as ``X | UnsetType = UNSET`` and
    ``date-time`` as a naive-accepting ``datetime``; we rewrite those spans in place (so its
    formatting is kept) to ``X | None = None`` / ``X = default`` and
    ``Annotated[datetime, Meta(tz=True)]``, then rebuild the import block.
    """
    edits = _Edits(source)
    tree = ast.parse(source)
    # datamodel imports `datetime as datetime_aliased` when a field is named `datetime`.
    local_datetime = {
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "datetime"
        for alias in node.names
        if alias.name == "datetime"
    }
    for node in _body(tree):
        for sub in ast.walk(node):
            if isinstance(sub, ast.ClassDef):
                for stmt in sub.body:
                    if isinstance(stmt, ast.AnnAssign):
                        _drop_unset(edits, stmt)
            if (
                isinstance(sub, ast.Name)
                and sub.id in local_datetime
                and isinstance(sub.ctx, ast.Load)
            ):
                edits.replace_node(sub, f"Annotated[{sub.id}, Meta(tz=True)]")
    finished = edits.apply()
    if _used_names(ast.parse(finished)) & {"UNSET", "UnsetType"}:
        raise CodegenError(
            schema.path,
            "datamodel-code-generator used msgspec.UNSET where streamtools does not expect it",
            "simplify the schema (report this if it should be supported)",
        )
    return _rebuild_imports(finished, schema).rstrip("\n") + "\n"


def _is_import(node: ast.stmt) -> bool:
    return isinstance(node, ast.Import | ast.ImportFrom)


def _body(tree: ast.Module) -> list[ast.stmt]:
    """The top-level statements that are not imports."""
    return [node for node in tree.body if not _is_import(node)]


def _used_names(tree: ast.Module) -> set[str]:
    return {
        sub.id
        for node in _body(tree)
        for sub in ast.walk(node)
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load)
    }


def _drop_unset(edits: _Edits, stmt: ast.AnnAssign) -> None:
    annotation = stmt.annotation
    if not (
        isinstance(annotation, ast.BinOp)
        and isinstance(annotation.op, ast.BitOr)
        and _is_name(annotation.right, "UnsetType")
    ):
        return
    has_none = any(
        isinstance(member, ast.Constant) and member.value is None
        for member in _union_members(annotation.left)
    )
    if _is_name(stmt.value, "UNSET") and stmt.value is not None:
        if has_none:
            edits.replace(_end(annotation.left), _end(annotation.right), "")
        else:
            edits.replace_node(annotation.right, "None")
        edits.replace_node(stmt.value, "None")
    else:
        edits.replace(_end(annotation.left), _end(annotation.right), "")


# Names our rewrites introduce, and where they come from.
_ADDED_IMPORTS = {"Annotated": "typing", "Meta": "msgspec"}


def _rebuild_imports(source: str, schema: _Schema) -> str:
    tree = ast.parse(source)
    imports = [node for node in tree.body if _is_import(node)]
    if not imports:
        return source
    unexpected = CodegenError(
        schema.path,
        "datamodel-code-generator wrote an unexpected import",
        "simplify the schema (report this if it should be supported)",
    )
    if tree.body[: len(imports)] != imports:
        raise unexpected
    used = _used_names(tree)
    by_module: dict[str, set[str]] = {}
    for node in imports:
        if not isinstance(node, ast.ImportFrom) or node.module is None or node.level:
            raise unexpected
        if node.module == "__future__":
            continue
        for alias in node.names:
            if (alias.asname or alias.name) in used:
                spelled = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
                by_module.setdefault(node.module, set()).add(spelled)
    for name, module in _ADDED_IMPORTS.items():
        if name in used:
            by_module.setdefault(module, set()).add(name)
    stdlib = sorted(m for m in by_module if m in sys.stdlib_module_names)
    third = sorted(m for m in by_module if m not in sys.stdlib_module_names)
    blocks = ["from __future__ import annotations"]
    for group in (stdlib, third):
        if group:
            blocks.append(
                "\n".join(f"from {m} import {', '.join(sorted(by_module[m]))}" for m in group)
            )
    block = "\n\n".join(blocks) + "\n"
    first, last = imports[0], imports[-1]
    assert last.end_lineno is not None
    edits = _Edits(source)
    edits.replace((first.lineno, 0), (last.end_lineno + 1, 0), block)
    return edits.apply()


def _public_names(source: str) -> list[str]:
    """Struct classes and type aliases a module defines at its top level."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and _is_name(node.annotation, "TypeAlias")
        ):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_")]


# --- the package __init__ ----------------------------------------------------------------


def _render_init(schemas: Sequence[_Schema], exports: Mapping[str, list[str]]) -> str:
    titles = {schema.title for schema in schemas}
    constants = {
        const: schema
        for schema in schemas
        if (const := _constant_name(schema.queue)) is not None and schema.queue is not None
    }
    taken = titles | set(constants) | _RESERVED
    defined_in: dict[str, list[str]] = {}
    for module, names in exports.items():
        for name in names:
            defined_in.setdefault(name, []).append(module)
    # A nested name that several modules define (e.g. each schema's own Address) is not
    # re-exported: the package cannot tell which one is meant. Import it from its module.
    lines = [
        "# Generated by streamtools codegen; do not edit.",
        '"""Message contracts: msgspec Structs and typed queues generated from JSON Schemas."""',
        "",
        "from collections.abc import Mapping",
        "from types import MappingProxyType",
        "from typing import Any",
        "",
        "from streamtools import Queue, register_contracts",
        "",
    ]
    exported: set[str] = set()
    for schema in sorted(schemas, key=lambda s: s.module):
        names = sorted(
            name
            for name in exports[schema.module]
            if name == schema.title or (len(defined_in[name]) == 1 and name not in taken)
        )
        exported.update(names)
        lines.append(f"from .{schema.module} import {', '.join(names)}")
    lines.append("")
    for const, schema in sorted(constants.items()):
        name = json.dumps(schema.queue)
        lines.append(f"{const}: Queue[{schema.title}] = Queue({name}, {schema.title})")
    if constants:
        lines.append("")
    lines.append("QUEUES: Mapping[str, Queue[Any]] = MappingProxyType(")
    lines.append("    {")
    lines.extend(f"        {const}.name: {const}," for const in sorted(constants))
    lines.append("    }")
    lines.append(")")
    lines.append('"""Every queue contract of this package, by queue name."""')
    lines.append("")
    lines.append("__all__ = [")
    lines.extend(f'    "{name}",' for name in sorted(exported | set(constants) | {"QUEUES"}))
    lines.append("]")
    lines.append("")
    lines.append('# Lets a bare queue name (Producer("orders.created")) use its contract.')
    lines.append("register_contracts(QUEUES)")
    return "\n".join(lines) + "\n"


# --- writing OUT_DIR ---------------------------------------------------------------------


def _read_tree(out: Path) -> dict[str, bytes]:
    if not out.is_dir():
        return {}
    return {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and "__pycache__" not in path.relative_to(out).parts
    }


def _check_replaceable(out: Path) -> None:
    """Refuse to replace a directory holding files codegen did not write."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CodegenError(out, "exists and is not a directory", "choose another OUT_DIR")
    foreign = [
        name
        for name, data in _read_tree(out).items()
        if name != "py.typed"
        and not (name.endswith(".py") and data.startswith(b"# Generated by streamtools codegen"))
    ]
    if foreign:
        raise CodegenError(
            out,
            f"holds files codegen did not write ({', '.join(foreign)})",
            "move them out, or choose an empty OUT_DIR",
        )


def _unique_sibling(out: Path, role: str) -> Path:
    return out.parent / f".{out.name}.{role}-{uuid.uuid4().hex[:12]}"


def _swap_in(staging: Path, out: Path) -> None:
    """Replace `out` with `staging` by two renames; restore `out` if the second one fails."""
    if not out.exists():
        staging.rename(out)
        return
    old = _unique_sibling(out, "old")
    out.rename(old)
    try:
        staging.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
