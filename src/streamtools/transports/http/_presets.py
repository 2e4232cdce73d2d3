"""Header presets: named wire formats for `HTTPProducer.send(headers_tag=...)`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from streamtools._codec import CONTENT_TYPES, JSON, MSGPACK
from streamtools.errors import ConfigurationError


@dataclass(frozen=True, slots=True, eq=False)  # hashed by identity: a cache key
class HeadersPreset:
    """A named wire format for `send(headers_tag=...)`: content type plus extra headers."""

    name: str
    content_type: str
    headers: Mapping[str, str]


_MANAGED_HEADERS: Final = frozenset({"content-type", "authorization", "content-length"})
_BUILTIN_PRESETS: Final = frozenset({"JSON", "MSGPACK"})
_presets: dict[str, HeadersPreset] = {
    "JSON": HeadersPreset("JSON", JSON, MappingProxyType({"Accept": JSON})),
    "MSGPACK": HeadersPreset("MSGPACK", MSGPACK, MappingProxyType({"Accept": MSGPACK})),
}
DEFAULT: Final = _presets["JSON"]


def register_headers_preset(
    name: str, content_type: str = JSON, extra_headers: Mapping[str, str] | None = None
) -> HeadersPreset:
    """Register a header preset that `HTTPProducer.send(headers_tag=name)` can name.

    Names are case-insensitive. `content_type` picks the codec (JSON or msgpack);
    `extra_headers` go on every request (an `Accept` defaults to the content type).
    Content-Type, Authorization and `ce-*` headers are set by the producer and cannot be
    overridden here; the built-in JSON and MSGPACK presets cannot be replaced.
    """
    if not isinstance(name, str) or not name.strip():  # type: ignore[redundant-expr]  # untyped callers
        raise ConfigurationError(f"a headers preset needs a non-empty name, got {name!r}")
    key = name.strip().upper()
    if key in _BUILTIN_PRESETS:
        raise ConfigurationError(f"headers preset {key!r} is built in and cannot be replaced")
    if content_type not in CONTENT_TYPES:
        raise ConfigurationError(
            f"headers preset {key!r}: content type must be one of {', '.join(CONTENT_TYPES)}, "
            f"got {content_type!r}"
        )
    headers = {"Accept": content_type}
    for header, value in (extra_headers or {}).items():
        lowered = header.lower()
        if lowered in _MANAGED_HEADERS or lowered.startswith("ce-"):
            raise ConfigurationError(
                f"headers preset {key!r}: {header} is set by the producer; remove it"
            )
        headers[header] = value
    preset = _presets[key] = HeadersPreset(key, content_type, MappingProxyType(headers))
    return preset


def headers_presets() -> Mapping[str, HeadersPreset]:
    """The registered header presets by name."""
    return MappingProxyType(_presets)


def preset(tag: object) -> HeadersPreset:
    """The preset named `tag` (any case)."""
    found = _presets.get(tag.upper()) if isinstance(tag, str) else None
    if found is None:
        raise ConfigurationError(
            f"unknown headers_tag {tag!r}; known: {', '.join(sorted(_presets))} "
            "(add one with register_headers_preset)"
        )
    return found
