"""What goes on the wire: content types, `Accept`, and GET query parameters <-> messages."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web
from multidict import MultiMapping

from streamtools._codec import JSON, MSGPACK, error_path, error_text, type_name
from streamtools.errors import DecodeError, ValidationError

CONTENT_TYPE_ALIASES: Final[Mapping[str, str]] = {
    JSON: JSON,
    MSGPACK: MSGPACK,
    "application/x-msgpack": MSGPACK,
    "application/vnd.msgpack": MSGPACK,
}
EXACT_TYPES: Final = frozenset({JSON, MSGPACK})
json_encoder: Final = msgspec.json.Encoder()
json_decoder: Final = msgspec.json.Decoder()


def body_type(raw: str | None, request: web.BaseRequest) -> str | None:
    """The codec's content type for a request's Content-Type (`raw` as sent): JSON when
    absent, None when unsupported."""
    if raw is None:
        return JSON
    # The usual exact value skips aiohttp's parse of the header (`request.content_type`).
    return CONTENT_TYPE_ALIASES.get(raw) or CONTENT_TYPE_ALIASES.get(request.content_type)


def accepted(accept: str | None) -> str:
    """The reply's content type for a GET: msgpack when the client prefers it, else JSON."""
    # GET has no body to take the format from.
    if accept:
        first = accept.split(",", 1)[0].split(";", 1)[0].strip().lower()
        if CONTENT_TYPE_ALIASES.get(first) == MSGPACK:
            return MSGPACK
    return JSON


def query_text(value: object) -> str:
    """A message field as a query parameter: scalars as text, nested values (and null) as
    compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json_encoder.encode(value).decode()


_SEQUENCE_TYPES: Final = (
    msgspec.inspect.ListType,
    msgspec.inspect.SetType,
    msgspec.inspect.FrozenSetType,
    msgspec.inspect.VarTupleType,
)
_NESTED_TYPES: Final = (
    *_SEQUENCE_TYPES,
    msgspec.inspect.TupleType,
    msgspec.inspect.DictType,
    msgspec.inspect.StructType,
    msgspec.inspect.TypedDictType,
    msgspec.inspect.DataclassType,
    msgspec.inspect.NamedTupleType,
)

_TEXT, _NULLABLE, _NESTED, _SEQUENCE, _AUTO = range(5)


def _field_kind(info: msgspec.inspect.Type) -> int:
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    members = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    nullable = any(isinstance(m, msgspec.inspect.NoneType) for m in members)
    values = [m for m in members if not isinstance(m, msgspec.inspect.NoneType)]
    if any(isinstance(m, msgspec.inspect.AnyType) for m in values):
        return _AUTO
    if values and all(isinstance(m, _SEQUENCE_TYPES) for m in values):
        return _SEQUENCE
    if values and all(isinstance(m, _NESTED_TYPES) for m in values):
        return _NESTED
    return _NULLABLE if nullable else _TEXT


class QueryConverter:
    """Turns GET query parameters into the JSON body of a message type (cached per type)."""

    def __init__(self, message_type: type[Any]) -> None:
        self.message_type = message_type
        info = msgspec.inspect.type_info(message_type)
        fields = getattr(info, "fields", ())
        self.kinds = {f.encode_name: _field_kind(f.type) for f in fields}
        self.default = _AUTO if not fields else _TEXT

    def to_json(self, query: MultiMapping[str]) -> bytes:
        """The message a GET query carries, as JSON; DecodeError or ValidationError if not."""
        try:
            return self._to_json(query)
        except RecursionError:
            # Nesting deeper than the interpreter's recursion limit: refused, as a body is.
            raise DecodeError("a query parameter is nested too deeply to decode") from None

    def _to_json(self, query: MultiMapping[str]) -> bytes:
        data: dict[str, object] = {}
        for key in dict.fromkeys(query.keys()):
            values = query.getall(key)
            kind = self.kinds.get(key, self.default)
            if len(values) > 1:
                if kind != _SEQUENCE:
                    raise DecodeError(f"query parameter {key!r} is given {len(values)} times")
                data[key] = values
                continue
            text = values[0]
            if kind == _TEXT:
                data[key] = text
            elif kind == _NULLABLE:
                data[key] = None if text == "null" else text
            elif kind == _AUTO:
                data[key] = self._auto(text)
            else:
                try:
                    data[key] = json_decoder.decode(text)
                except msgspec.DecodeError as exc:
                    if kind != _SEQUENCE:
                        raise DecodeError(f"query parameter {key!r} must be JSON ({exc})") from exc
                    data[key] = [text]  # `?tags=a` for a list field
        try:
            msg = msgspec.convert(data, self.message_type, strict=False)
        except msgspec.ValidationError as exc:
            raise ValidationError(
                f"{type_name(self.message_type)} message does not match its schema: "
                f"{error_text(exc)}",
                path=error_path(exc),
            ) from exc
        return json_encoder.encode(msg)

    @staticmethod
    def _auto(text: str) -> object:
        if text[:1] in ("{", "["):
            with contextlib.suppress(msgspec.DecodeError):
                return json_decoder.decode(text)
        return text


_converters: dict[type[Any], QueryConverter] = {}


def converter(message_type: type[Any]) -> QueryConverter:
    """The cached converter for `message_type`."""
    found = _converters.get(message_type)
    if found is None:
        found = _converters[message_type] = QueryConverter(message_type)
    return found
