"""The AsyncAPI page: `streamtools docs serve` and `ConsumerRunner(docs=True)`.

Endpoints (the runner's `Endpoint`s, so they mount next to `/healthz` on an HTTP consumer's
port or on the runner's own server): `/docs`, an HTML page that renders the document embedded
in it; `/docs/viewer.js` and `/docs/viewer.css`, the viewer shipped with the package
(`_docs_assets/`: vanilla JS and CSS, no framework, no fonts); `/asyncapi.json` and
`/asyncapi.yaml`, the document itself. Nothing on the page comes from another origin: its
Content-Security-Policy (a `<meta>` in the page, and a header where the server sends one)
allows the page's own origin only, so the page works offline and cannot leak a request.
"""

from __future__ import annotations

import html
import json
import string
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata, resources
from types import MappingProxyType
from typing import Any, Final

from streamtools import asyncapi
from streamtools._health import Answer, Endpoint
from streamtools._types import Queue

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "DOCS_PATH",
    "HEADERS",
    "JSON_PATH",
    "SCRIPT_PATH",
    "STYLE_PATH",
    "YAML_PATH",
    "contracts_package",
    "distribution_version",
    "docs_endpoints",
    "page",
]

DOCS_PATH: Final = "/docs"
SCRIPT_PATH: Final = "/docs/viewer.js"
STYLE_PATH: Final = "/docs/viewer.css"
JSON_PATH: Final = "/asyncapi.json"
YAML_PATH: Final = "/asyncapi.yaml"

_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)
CONTENT_SECURITY_POLICY: Final = f"{_POLICY}; frame-ancestors 'none'"
"""The page's policy: its own origin only (a `<meta>` cannot carry frame-ancestors)."""
HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
)
"""What a server the docs own (the CLI's, the runner's) sends with every answer."""

_HTML: Final = "text/html; charset=utf-8"
_ASSETS: Final = resources.files("streamtools") / "_docs_assets"
# JSON inside <script type="application/json">: no "</script>", no "<!--" can end it early
_SCRIPT_SAFE: Final = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def page(doc: Mapping[str, Any]) -> str:
    """The HTML page of `doc`: the document embedded as JSON, rendered by the viewer."""
    template = string.Template(_ASSETS.joinpath("page.html").read_text(encoding="utf-8"))
    info = doc.get("info")
    title = info.get("title") if isinstance(info, Mapping) else None
    embedded = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    return template.substitute(
        csp=_POLICY,
        title=html.escape(f"{title or 'AsyncAPI'} - AsyncAPI"),
        document=embedded.translate(_SCRIPT_SAFE),
        css=STYLE_PATH,
        js=SCRIPT_PATH,
        json_path=JSON_PATH,
        yaml_path=YAML_PATH,
    )


def docs_endpoints(build: Callable[[], Mapping[str, Any]]) -> dict[str, Endpoint]:
    """The page, its assets and the document, by path. `build()` makes the document once,
    on the first request (a runner's HTTP server knows its bound port only then)."""
    answers: dict[str, Answer] = {}

    def answer(path: str) -> Answer:
        if not answers:
            doc = build()
            answers[DOCS_PATH] = Answer(200, page(doc).encode(), _HTML)
            answers[JSON_PATH] = Answer(200, asyncapi.dumps(doc).encode(), "application/json")
            answers[YAML_PATH] = Answer(
                200, asyncapi.dumps(doc, yaml=True).encode(), "application/yaml; charset=utf-8"
            )
            for name, path_of, kind in (
                ("viewer.js", SCRIPT_PATH, "text/javascript; charset=utf-8"),
                ("viewer.css", STYLE_PATH, "text/css; charset=utf-8"),
            ):
                answers[path_of] = Answer(200, _ASSETS.joinpath(name).read_bytes(), kind)
        return answers[path]

    def endpoint(path: str) -> Endpoint:
        return lambda: answer(path)

    paths = (DOCS_PATH, SCRIPT_PATH, STYLE_PATH, JSON_PATH, YAML_PATH)
    return {path: endpoint(path) for path in paths}


def contracts_package(queues: Iterable[Queue[Any]]) -> str:
    """The package holding the queues' message types (`examples.contracts`), as a title."""
    packages = {
        q.message_type.__module__.rpartition(".")[0] or q.message_type.__module__ for q in queues
    }
    return packages.pop() if len(packages) == 1 else "streamtools service"


def distribution_version(package: str) -> str:
    """The version of the distribution that holds `package`, else 0.0.0."""
    top = package.partition(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "0.0.0"
