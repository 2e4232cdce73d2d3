"""Loading a schemas folder: documents, their URIs, `$ref` resolution across files.

Every ``*.json`` file of the folder is a document with the URI ``file:///schemas/<name>``
(a fixed root, so that the output never holds a machine's path), or the `$id` it declares;
a subschema with its own `$id` or `$anchor` is a resource too. A `$ref` resolves against the
URI of the resource it is written in (RFC 3986), to a document of the folder and a JSON
pointer in it. A reference to anything else (``https://...`` that no file of the folder
declares as its `$id`) is refused with its reason: codegen never fetches.

A document is a *message* when it has `x-queue`, a root `type: object`, `properties`, or a
root `$ref`/`allOf`; a document that only holds `$defs` (``common.json``) is a library of
shared types, generated once and imported where used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

from streamtools.codegen._problems import Problems
from streamtools.errors import CodegenError

ROOT = "file:///schemas/"

# Keywords whose value is a schema, a map of schemas, or a list of schemas (2020-12 and the
# older drafts' spellings that real schemas still use).
SCHEMA_KEYWORDS = frozenset(
    {
        "additionalProperties",
        "items",
        "additionalItems",
        "contains",
        "propertyNames",
        "not",
        "if",
        "then",
        "else",
        "unevaluatedItems",
        "unevaluatedProperties",
        "contentSchema",
    }
)
MAP_KEYWORDS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})


@dataclass(frozen=True, slots=True)
class Loc:
    """A subschema and where it is: its document, its JSON pointer, its base URI."""

    doc: Document
    pointer: str
    base: str
    node: Any

    @property
    def where(self) -> str:
        return self.pointer or "#"

    @property
    def key(self) -> str:
        """The schema's identity across the folder: its document's URI and pointer."""
        return f"{self.doc.uri}{self.where}"

    def child(self, *tokens: str) -> Loc:
        node = self.node
        for token in tokens:
            node = node[int(token)] if isinstance(node, list) else node[token]
        pointer = self.where + "".join(f"/{escape(token)}" for token in tokens)
        base = self.base
        if isinstance(node, dict) and isinstance(node.get("$id"), str):
            base = urldefrag(join(base, node["$id"])).url
        return Loc(self.doc, pointer, base, node)


@dataclass(eq=False, slots=True)
class Document:
    path: Path
    uri: str
    body: Any
    stem: str
    is_message: bool = False
    anchors: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Loc:
        base = self.uri
        if isinstance(self.body, dict) and isinstance(self.body.get("$id"), str):
            base = urldefrag(join(self.uri, self.body["$id"])).url
        return Loc(self, "", base, self.body)


def join(base: str, ref: str) -> str:
    """`ref` resolved against `base` (RFC 3986), URNs included (`urljoin` drops their base)."""
    if ref.startswith("#"):
        return urldefrag(base).url + ref
    return urljoin(base, ref)


def escape(token: str) -> str:
    """`token` as one JSON pointer token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def subschemas(loc: Loc) -> Iterator[Loc]:
    """The direct subschemas of `loc`, by keyword position (never inside `enum` or `const`)."""
    node = loc.node
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in SCHEMA_KEYWORDS and isinstance(value, dict | bool):
            yield loc.child(key)
        elif (
            key in SCHEMA_KEYWORDS
            and key in ("items", "additionalItems")
            and isinstance(value, list)
        ):
            for index in range(len(value)):
                yield loc.child(key, str(index))
        elif key in MAP_KEYWORDS and isinstance(value, dict):
            for name, child in value.items():
                if isinstance(child, dict | bool):
                    yield loc.child(key, name)
        elif key in LIST_KEYWORDS and isinstance(value, list):
            for index, child in enumerate(value):
                if isinstance(child, dict | bool):
                    yield loc.child(key, str(index))


def walk(loc: Loc) -> Iterator[Loc]:
    """`loc` and every subschema under it, depth first."""
    yield loc
    for child in subschemas(loc):
        yield from walk(child)


class Folder:
    """Every document of a schemas folder, by URI, and `$ref` resolution between them."""

    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        self.by_uri: dict[str, Document] = {}
        self.resources: dict[str, Loc] = {}
        for doc in documents:
            self.by_uri[doc.uri] = doc
            for loc in walk(doc.root):
                node = loc.node
                if not isinstance(node, dict):
                    continue
                if loc.pointer == "" or isinstance(node.get("$id"), str):
                    self.resources.setdefault(loc.base, loc)
                for keyword in ("$anchor", "$dynamicAnchor"):
                    anchor = node.get(keyword)
                    if isinstance(anchor, str):
                        self.resources.setdefault(f"{loc.base}#{anchor}", loc)

    def resolve(self, loc: Loc, ref: str) -> Loc | str:
        """The schema `ref` (written at `loc`) points to, or why it cannot be resolved."""
        target = join(loc.base, ref)
        url, fragment = urldefrag(target)
        if fragment and not fragment.startswith("/"):
            found = self.resources.get(f"{url}#{unquote(fragment)}")
            if found is None:
                return f"no $anchor {fragment!r} in {url}"
            return found
        resource = self.resources.get(url)
        if resource is None:
            if url.startswith(ROOT):
                name = url[len(ROOT) :]
                return f"no file {name!r} in the schemas folder"
            return (
                f"{url} is not a file of the schemas folder (codegen never fetches remote "
                "schemas): copy it into the folder, with its $id"
            )
        current = resource
        for token in [unescape(unquote(t)) for t in fragment.split("/")[1:]] if fragment else []:
            node = current.node
            if isinstance(node, dict) and token in node:
                current = current.child(token)
            elif isinstance(node, list) and re.fullmatch(r"0|[1-9][0-9]*", token):
                if int(token) >= len(node):
                    return f"{ref!r} does not resolve (no item {token})"
                current = current.child(token)
            else:
                return f"{ref!r} does not resolve (no {token!r} at {current.where})"
        return current


def load_folder(schemas_dir: Path, problems: Problems) -> Folder:
    if not schemas_dir.is_dir():
        raise CodegenError(schemas_dir, "not a directory", "pass the directory of *.json schemas")
    paths = sorted(schemas_dir.rglob("*.json"), key=lambda p: p.relative_to(schemas_dir).as_posix())
    if not paths:
        raise CodegenError(
            schemas_dir, "no *.json schema files", "add one JSON Schema file per message type"
        )
    documents: list[Document] = []
    for path in paths:
        relative = path.relative_to(schemas_dir).as_posix()
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            problems.add(
                path,
                f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                "fix the JSON syntax",
            )
            continue
        except UnicodeDecodeError:
            problems.add(path, "not UTF-8 text", "save the file as UTF-8")
            continue
        doc = Document(path=path, uri=ROOT + relative, body=body, stem=path.stem)
        doc.is_message = is_message(body)
        documents.append(doc)
    return Folder(documents)


def is_message(body: Any) -> bool:
    """A message: `x-queue`, an object schema or an `allOf` at the root, or a titled schema of
    its own; a file of untitled definitions (or of one untitled `$ref` or scalar schema) is
    shared types."""
    if not isinstance(body, dict):
        return True  # reported: not a schema object
    kind = body.get("type")
    if "x-queue" in body or "properties" in body or "allOf" in body or kind == "object":
        return True
    if isinstance(kind, list) and "object" in kind:
        return True
    own = {k for k in body if k not in ("$defs", "definitions", "$schema", "$id", "$comment")}
    return "title" in body and bool(own - {"title", "description"})
