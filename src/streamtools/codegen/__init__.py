"""Generate msgspec Structs and typed queue contracts from JSON Schemas.

`streamtools codegen SCHEMAS_DIR OUT_DIR` reads every ``*.json`` file of SCHEMAS_DIR and writes
OUT_DIR as an importable package:

- one module per message schema, named after the snake case of its class name (the PascalCase
  of its ``title``, else of its file name: ``"Order Placed"`` -> ``OrderPlaced`` ->
  ``order_placed.py``), holding that Struct and the Structs of its own ``$defs`` and inline
  objects; one module per file of shared ``$defs`` (``common.json`` -> ``common.py``), whose
  types are generated once and imported where used;
- ``__init__.py``: every message Struct (and every other Struct whose name one module alone
  defines), one ``Queue[T]`` constant per ``x-queue`` (``orders.created`` ->
  ``ORDERS_CREATED``), ``QUEUES`` and a call to ``register_contracts(QUEUES)``; ``py.typed``.

Any property name works: the attribute is the snake_case of the wire name (``orderId`` ->
``order_id``), the wire name is kept (``msgspec.field(name=...)``), and errors name the wire
field. A keyword msgspec cannot check (``uniqueItems``, ``not``, an untagged union, ...) is
never dropped: the contract is generated with the loosest type that accepts every valid
message, and ``enforce_schema`` puts the JSON Schema validator (jsonschema-rs,
``streamtools[validator]``) on its send and receive paths. Contracts that msgspec enforces
exactly stay on the one-pass msgspec path. The README has the keyword table.

Every problem of every file is reported in one run, each with its file and JSON pointer.
Output is deterministic: no timestamps, no absolute paths, schemas and names sorted.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from streamtools._types import check_queue_name
from streamtools.codegen import _naming
from streamtools.codegen._load import Document, Folder, Loc, load_folder, walk
from streamtools.codegen._model import KNOWN, TYPED_FORMATS, StructDef, Translator
from streamtools.codegen._problems import Problems
from streamtools.codegen._render import Message, init_source, module_source
from streamtools.codegen._write import check_tree, write_tree
from streamtools.errors import CodegenError

__all__ = [
    "CodegenError",
    "add_arguments",
    "check",
    "generate",
    "main",
    "render",
    "run",
]

INSTALL = "pip install 'streamtools[codegen]'"


def render(schemas_dir: Path | str) -> dict[str, bytes]:
    """Return the files OUT_DIR must hold (relative name -> bytes), without writing anything.

    Every problem of every schema is found before this raises; `CodegenError.errors` has them.
    """
    return _render(Path(schemas_dir), Problems())


def generate(schemas_dir: Path | str, out_dir: Path | str) -> list[str]:
    """Write the generated package to `out_dir`, replacing it only if generation succeeds.

    Returns the names of the files written. On any error `out_dir` is left untouched.
    """
    return write_tree(render(schemas_dir), Path(out_dir))


def check(schemas_dir: Path | str, out_dir: Path | str) -> list[str]:
    """Return the files of `out_dir` that differ from a fresh generation (empty: up to date)."""
    return check_tree(render(schemas_dir), Path(out_dir))


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
    missing = _validator_missing()
    if missing is not None:  # a missing extra is a usage problem: exit 2, as argparse does
        print(f"error: {missing}", file=err_stream)
        return 2
    problems = Problems()
    try:
        files = _render(Path(schemas_dir), problems)
        for line in problems.notices:
            print(f"warning: {line}", file=err_stream)
        if check_only:
            stale = check_tree(files, Path(out_dir))
            if stale:
                shown = f"{Path(out_dir).as_posix().rstrip('/')}/"
                command = f"streamtools codegen {schemas_dir} {out_dir}"
                print(
                    f"{shown} is stale (differs: {', '.join(stale)}); run '{command}'",
                    file=err_stream,
                )
                return 1
            print(f"{Path(out_dir).as_posix()} is up to date", file=out_stream)
            return 0
        written = write_tree(files, Path(out_dir))
    except CodegenError as exc:
        for line in problems.notices:
            print(f"warning: {line}", file=err_stream)
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


# --- the run -----------------------------------------------------------------------------


def _validator_missing() -> str | None:
    try:
        metadata.version("jsonschema-rs")
    except metadata.PackageNotFoundError:
        return (
            "streamtools codegen needs jsonschema-rs (it checks every schema and compiles the "
            f"validator of the contracts msgspec cannot check alone), which is not installed — "
            f"{INSTALL}"
        )
    return None


def _render(schemas_dir: Path, problems: Problems) -> dict[str, bytes]:
    missing = _validator_missing()
    if missing is not None:
        what, _, todo = missing.partition(" — ")
        raise CodegenError("jsonschema-rs", what, todo)
    folder = load_folder(schemas_dir, problems)
    for doc in folder.documents:
        if isinstance(doc.body, dict):
            _check_document(folder, doc, problems)
        else:
            problems.add(doc.path, "not a schema object at #", "write the schema as a JSON object")
    messages_docs = [
        doc for doc in folder.documents if doc.is_message and isinstance(doc.body, dict)
    ]
    if not messages_docs and not problems.errors:
        problems.add(
            schemas_dir,
            "no message schemas (only shared definitions)",
            'add a schema with "type": "object" per message type',
        )
    names = _naming.message_names(messages_docs, problems)
    modules = _module_names(folder, names)
    translator = Translator(folder, problems, modules)
    messages: list[Message] = []
    failed = {error.path for error in problems.errors}
    for doc in messages_docs:
        if doc not in names or doc.path in failed:
            continue
        struct = translator.message(doc, names[doc])
        if struct is None:
            continue
        queue = doc.body.get("x-queue")
        messages.append(
            Message(
                struct=struct,
                queue=queue if isinstance(queue, str) else None,
                constant=_naming.constant_name(queue) if isinstance(queue, str) else None,
                source=_relative(schemas_dir, doc.path),
            )
        )
    _check_unique(messages, problems)
    for message in messages:
        message.whole = not translator.exact(message.struct)
    problems.raise_any()
    by_module: dict[str, list[StructDef]] = {}
    for struct in translator.structs.values():
        by_module.setdefault(struct.module, []).append(struct)
    docs_by_module = {module: doc for doc, module in modules.items()}
    files: dict[str, bytes] = {"py.typed": b""}
    exports: dict[str, list[str]] = {}
    for module, structs in sorted(by_module.items()):
        own = [m for m in messages if m.struct.module == module]
        source = _relative(schemas_dir, docs_by_module[module].path)
        checks = sorted({uri for s in structs for f in s.fields for uri in f.checks})
        wholes = [m.struct.doc.uri + "#" for m in own if m.whole]
        documents = pruned = None
        if checks:
            documents = _documents(folder, checks, docs_by_module[module], problems)
        if wholes:
            pruned = _documents(folder, wholes, docs_by_module[module], problems)
            if pruned is not None:
                for message in own:
                    if message.whole:
                        pruned[message.struct.doc.uri] = _prune(
                            translator, message.struct.doc, pruned[message.struct.doc.uri]
                        )
        files[f"{module}.py"] = module_source(
            module, source, structs, own, documents, pruned
        ).encode()
        exports[module] = sorted(s.name for s in structs)
    problems.raise_any()
    published = _published(folder, messages)
    files["__init__.py"] = init_source(messages, exports, published).encode()
    return dict(sorted(files.items()))


def _relative(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _check_document(folder: Folder, doc: Document, problems: Problems) -> None:
    """Every problem of one file: invalid schemas, refs that do not resolve, bad queues."""
    import jsonschema_rs

    body = doc.body
    if not isinstance(body, dict):
        problems.add(doc.path, "not a schema object at #", "write the schema as a JSON object")
        return
    draft = body.get("$schema")
    try:
        if isinstance(draft, str) and "json-schema.org" in draft:
            jsonschema_rs.meta.validate(body)
        else:
            jsonschema_rs.meta.validate(
                {**body, "$schema": "https://json-schema.org/draft/2020-12/schema"}
            )
    except jsonschema_rs.ValidationError as exc:
        pointer = "#" + "".join(f"/{p}" for p in exc.instance_path)
        problems.add(
            doc.path, f"not a valid JSON Schema at {pointer}: {exc.message}", "fix the schema"
        )
    except Exception as exc:  # an unknown $schema: the meta-schema cannot be had offline
        problems.notice(doc.path, f"not checked against its meta-schema ({exc})")
    queue = body.get("x-queue")
    if queue is not None:
        try:
            check_queue_name(queue)
        except ValueError as exc:
            problems.add(doc.path, f"x-queue {queue!r} at #/x-queue is not a queue name", str(exc))
    unknown: set[str] = set()
    for loc in walk(doc.root):
        node = loc.node
        if not isinstance(node, dict):
            continue
        if "x-queue" in node and loc.pointer != "":
            problems.add(
                doc.path, f"x-queue at {loc.where}", "x-queue belongs at the top level only"
            )
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and key == "$ref":
                target = folder.resolve(loc, ref)
                if isinstance(target, str):
                    problems.add(doc.path, f"$ref {ref!r} at {loc.where}: {target}", "fix the $ref")
        unknown.update(k for k in node if k not in KNOWN and not k.startswith("x-"))
        dialect = node.get("$schema")
        if isinstance(dialect, str) and dialect.rstrip("#") not in _DIALECTS:
            problems.notice(
                doc.path,
                f"$schema {dialect!r} at {loc.where} is not a JSON Schema draft: read as draft "
                "2020-12 (custom meta-schemas and vocabularies are not applied)",
            )
    if unknown:
        problems.notice(
            doc.path,
            "unknown keywords taken as annotations (JSON Schema 2020-12): "
            + ", ".join(sorted(unknown)),
        )


_DIALECTS = frozenset(
    f"{scheme}://json-schema.org/{path}"
    for scheme in ("http", "https")
    for path in (
        "draft/2020-12/schema",
        "draft/2019-09/schema",
        "draft-07/schema",
        "draft-06/schema",
        "draft-04/schema",
    )
)


def _module_names(folder: Folder, names: dict[Document, str]) -> dict[Document, str]:
    modules: dict[Document, str] = {}
    taken = {"__init__"}
    for doc in sorted(folder.documents, key=lambda d: (not d.is_message, d.uri)):
        base = _naming.snake(names[doc]) if doc in names else _naming.snake(doc.stem) or "shared"
        if base[0].isdigit():
            base = f"m_{base}"
        modules[doc] = _naming.unique(base, taken)
    return modules


def _check_unique(messages: list[Message], problems: Problems) -> None:
    seen_queue: dict[str, Message] = {}
    seen_constant: dict[str, Message] = {}
    for message in messages:
        for key, seen, what in (
            (message.queue, seen_queue, f"x-queue {message.queue!r} at #/x-queue"),
            (message.constant, seen_constant, f"queue constant {message.constant}"),
        ):
            if key is None:
                continue
            if key in seen:
                problems.add(
                    message.struct.doc.path,
                    f"{what} is already used by {seen[key].source}",
                    "give every schema its own queue",
                )
            else:
                seen[key] = message


# --- the validator's view of a schema ----------------------------------------------------


def _documents(
    folder: Folder, uris: list[str], owner: Document, problems: Problems
) -> dict[str, Any] | None:
    """The documents (by URI) the validator needs for the subschemas at `uris`, as it should
    read them; each of `uris` is compiled here, so that a schema it refuses fails codegen."""
    import jsonschema_rs

    needed = _reachable(folder, [folder.by_uri[uri.split("#")[0]] for uri in uris])
    documents = {uri: _for_validator(needed[uri]) for uri in sorted(needed)}
    try:
        registry = jsonschema_rs.Registry(list(documents.items()))
        for uri in uris:
            jsonschema_rs.validator_for({"$ref": uri}, registry=registry, validate_formats=True)
    except Exception as exc:  # jsonschema-rs raises several types for a schema it refuses
        problems.add(owner.path, f"the JSON Schema validator refuses the schema: {exc}", "fix it")
        return None
    return documents


def _reachable(folder: Folder, start: list[Document]) -> dict[str, Document]:
    """`start` and every document their `$ref`s reach, by URI."""
    needed: dict[str, Document] = {}
    pending = list(start)
    while pending:
        current = pending.pop()
        if current.uri in needed:
            continue
        needed[current.uri] = current
        for loc in walk(current.root):
            ref = loc.node.get("$ref") if isinstance(loc.node, dict) else None
            if isinstance(ref, str):
                target = folder.resolve(loc, ref)
                if not isinstance(target, str):
                    pending.append(target.doc)
    return needed


def _published(folder: Folder, messages: list[Message]) -> dict[str, Any]:
    """The source schemas as an AsyncAPI document publishes them: one named schema per document
    (a message's under its class name, shared files under theirs), every `$ref` rewritten to
    point within them (`#/components/schemas/Common/$defs/Money`), `$id` and `$schema` left
    out, OpenAPI's `discriminator` object as AsyncAPI's property name; wire names, composition
    and shared definitions as written."""
    needed = _reachable(folder, [m.struct.doc for m in messages])
    names: dict[str, str] = {m.struct.doc.uri: m.struct.name for m in messages}
    taken = set(names.values())
    for uri in sorted(needed):
        if uri not in names:
            names[uri] = _naming.unique(_naming.class_name(needed[uri].stem), taken)
    published: dict[str, Any] = {}
    for uri in sorted(needed, key=lambda u: names[u]):
        doc = needed[uri]
        body = copy.deepcopy(doc.body)
        for loc in walk(doc.root):
            node = loc.node
            if not isinstance(node, dict):
                continue
            copied = _at(body, loc.where)
            ref = node.get("$ref")
            if isinstance(ref, str):
                target = folder.resolve(loc, ref)
                if not isinstance(target, str):
                    pointer = target.where.removeprefix("#")
                    copied["$ref"] = f"#/components/schemas/{names[target.doc.uri]}{pointer}"
            for key in ("$id", "$schema"):
                copied.pop(key, None)
            discriminator = node.get("discriminator")
            if isinstance(discriminator, dict) and "propertyName" in discriminator:
                copied["discriminator"] = discriminator["propertyName"]  # AsyncAPI's spelling
        published[names[uri]] = body
    return published


def _at(body: Any, where: str) -> Any:
    node = body
    for token in where.removeprefix("#").split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _prune(translator: Translator, doc: Document, body: Any) -> Any:
    """`body` (the validator's copy of a message's document) with every subschema msgspec
    already enforces exactly, where msgspec decodes it, replaced by `true`.

    The whole-message validator then checks only what msgspec cannot: the codec decodes the
    typed Struct first, then validates the pruned schema. Only positions msgspec decodes as
    they are walked (a Struct's properties and inline `allOf` branches, a list's `items`, a
    map's `additionalProperties`); nothing under `not`, `if`, unions or a `$ref` is touched,
    so the pruned schema only ever accepts more, and only what msgspec refuses itself."""
    prune: list[str] = []

    def descend(loc: Loc) -> None:
        if translator.covered(loc):
            prune.append(loc.where)
            return
        typed = translator.results.get(loc.key)
        if typed is None:
            return
        if typed.kind == "struct" and len(typed.structs) == 1:
            struct_at(loc)
        elif isinstance(loc.node, dict):
            inner = {"array": "items", "object": "additionalProperties"}.get(typed.kind)
            if inner is not None and isinstance(loc.node.get(inner), dict):
                descend(loc.child(inner))

    def struct_at(loc: Loc) -> None:
        node = loc.node
        if not isinstance(node, dict) or "$ref" in node:
            return
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name in properties:
                descend(loc.child("properties", name))
        branches = node.get("allOf")
        if isinstance(branches, list):
            for index in range(len(branches)):
                struct_at(loc.child("allOf", str(index)))

    struct_at(doc.root)
    for where in prune:
        parent, _, token = where.rpartition("/")
        container = _at(body, parent)
        key = token.replace("~1", "/").replace("~0", "~")
        if isinstance(container, list):
            container[int(key)] = True
        else:
            container[key] = True
    return body


def _for_validator(doc: Document) -> Any:
    """`doc` as the validator reads it: `format` asserted only for the four typed formats,
    OpenAPI's `nullable: true` as a `null` type."""
    body = copy.deepcopy(doc.body)
    for loc in list(_walk_copy(doc, body)):
        node = loc.node
        if not isinstance(node, dict):
            continue
        if "format" in node and node["format"] not in TYPED_FORMATS:
            del node["format"]
        dialect = node.get("$schema")
        if isinstance(dialect, str) and dialect.rstrip("#") not in _DIALECTS:
            del node["$schema"]  # a custom meta-schema: read as draft 2020-12, never fetched
        if node.get("nullable") is True and "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            if "null" not in types:
                node["type"] = [*types, "null"]
            if isinstance(node.get("enum"), list) and None not in node["enum"]:
                node["enum"] = [*node["enum"], None]
        node.pop("x-queue", None) if loc.pointer else None
    return body


def _walk_copy(doc: Document, body: Any) -> Iterator[Loc]:
    copied = Document(path=doc.path, uri=doc.uri, body=body, stem=doc.stem)
    return walk(copied.root)
