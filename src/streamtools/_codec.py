"""Encode and decode messages with cached msgspec codecs; CloudEvents metadata.

One encoder per format and one decoder per (type, format) are built once and reused, so the
hot path is one msgspec pass per message. msgspec errors are mapped to streamtools errors
here and nowhere else.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Final, Generic

import msgspec
import msgspec.inspect as mi

from streamtools._schema import SchemaCheck, schema_check
from streamtools._types import T
from streamtools.errors import (
    CodecError,
    DecodeError,
    EncodeError,
    OutsideHandlerError,
    ValidationError,
)

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
CONTENT_TYPES: Final = (JSON, MSGPACK)
SPECVERSION: Final = "1.0"

_PATH_RE = re.compile(r" - at (?:`key` in )?`(\$[^`]*)`$")  # a bad dict key: its dict
# A Struct's own field check: msgspec adds the Struct's path, except at the root.
_FIELD_RE = re.compile(r" - at `\$([.\[][^`]*)`(?: - at `(\$[^`]*)`)?$")
_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


class Metadata(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What travels beside every message (CloudEvents attributes, binary content mode).

    `id` is unique per message and kept across retries, so receivers can drop duplicates.
    `attempt` counts deliveries to this consumer (1 on the first). `headers` carries
    transport extras, e.g. the error headers of a dead-lettered message.
    """

    id: str
    type: str
    source: str
    time: str
    content_type: str = JSON
    specversion: str = SPECVERSION
    attempt: int = 1
    headers: Mapping[str, str] = msgspec.field(default_factory=lambda: _NO_HEADERS)


_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})


class _Ids:
    """Message ids: 128 random bits each, 32 hex digits, unguessable like a uuid4.

    The randomness is drawn from the OS in blocks (one `os.urandom` call per 256 ids), so
    an id costs a slice and a hex() instead of a system call; one observed id says nothing
    of the next. A forked child drops the parent's block, so the two never share ids.
    """

    _BLOCK = 16 * 256

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.block = b""
        self.position = 0

    def next(self) -> str:
        position = self.position
        if position >= len(self.block):
            self.block = os.urandom(self._BLOCK)
            position = 0
        self.position = position + 16
        return self.block[position : position + 16].hex()


_ids = _Ids()
_second: int = -1
_second_text: str = ""


def _now() -> str:
    # RFC 3339 UTC with microseconds; the date-and-seconds prefix is formatted once a second.
    global _second, _second_text
    now = time.time()
    second = int(now)
    if second != _second:
        _second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = second
    return f"{_second_text}.{int((now - second) * 1_000_000):06d}Z"


def new_metadata(type_name: str, source: str, content_type: str = JSON) -> Metadata:
    """Fresh metadata for a message about to be sent."""
    return Metadata(
        id=_ids.next(),
        type=type_name,
        source=source,
        time=_now(),
        content_type=content_type,
    )


@functools.cache
def default_source() -> str:
    """The CloudEvents `source` of this process: `STREAMTOOLS_SOURCE`, else host and program."""
    configured = os.environ.get("STREAMTOOLS_SOURCE")
    if configured:
        return configured
    program = os.path.basename(sys.argv[0] or "python") or "python"
    return f"//{socket.gethostname()}/{program}"


def type_name(message_type: type[Any]) -> str:
    """The `ce-type` of a message type: the Struct's name, or `json` for raw messages."""
    if issubclass(message_type, msgspec.Struct):
        return message_type.__name__
    return "json"


def error_path(exc: msgspec.ValidationError) -> str:
    """The `$.field[0].path` msgspec names at the end of a validation message, or ""."""
    text = str(exc)
    field = _FIELD_RE.search(text)
    if field is not None:  # a Struct's own field check: its field's path under the Struct's
        return (field.group(2) or "$") + field.group(1)
    match = _PATH_RE.search(text)
    return match.group(1) if match else ""


def error_text(exc: msgspec.ValidationError) -> str:
    """msgspec's message, a Struct's own field check named by its whole path."""
    text = str(exc)
    field = _FIELD_RE.search(text)
    if field is None:
        return text
    return f"{text[: field.start()]} - at `{field.group(2) or '$'}{field.group(1)}`"


# What decoding checks beyond the declared type, per msgspec.inspect node. Types not named
# here (Literal, Enum, custom and extension types, anything msgspec adds later) count as
# constrained: checked, never skipped by mistake.
_PLAIN: Final = (
    mi.AnyType,
    mi.NoneType,
    mi.BoolType,
    mi.UUIDType,
    mi.DecimalType,
    mi.DateType,
    mi.TimeDeltaType,
    mi.RawType,
)
_BOUNDS: Final = ("gt", "ge", "lt", "le", "multiple_of")
_LENGTHS: Final = ("min_length", "max_length")
_FIELDS: Final = (mi.StructType, mi.DataclassType, mi.TypedDictType, mi.NamedTupleType)


def has_constraints(message_type: type[Any], content_type: str = JSON) -> bool:
    """Whether decoding `message_type` can fail on a value of the declared type: a bound, a
    length, a pattern, a timezone requirement, a Literal or Enum, a `__post_init__`, a JSON
    float (NaN and infinities are encoded as null), or a type not listed here (to be safe).
    """
    return _constrained(mi.type_info(message_type), content_type == JSON, set())


def _constrained(node: mi.Type, json: bool, seen: set[type[Any]]) -> bool:
    if isinstance(node, _PLAIN):
        return False
    if isinstance(node, mi.FloatType) and json:
        return True
    if isinstance(node, mi.IntType | mi.FloatType):
        return any(getattr(node, name) is not None for name in _BOUNDS)
    if isinstance(node, mi.StrType) and node.pattern is not None:
        return True
    if isinstance(node, mi.StrType | mi.BytesType | mi.ByteArrayType | mi.MemoryViewType):
        return any(getattr(node, name) is not None for name in _LENGTHS)
    if isinstance(node, mi.DateTimeType | mi.TimeType):
        return node.tz is not None
    if isinstance(node, mi.CollectionType):  # list, set, frozenset, tuple[X, ...]
        return any(getattr(node, name) is not None for name in _LENGTHS) or _constrained(
            node.item_type, json, seen
        )
    if isinstance(node, mi.DictType | mi.FrozenDictType):
        return (
            any(getattr(node, name) is not None for name in _LENGTHS)
            or _constrained(node.key_type, json, seen)
            or _constrained(node.value_type, json, seen)
        )
    if isinstance(node, mi.TupleType):
        return any(_constrained(item, json, seen) for item in node.item_types)
    if isinstance(node, mi.UnionType):
        return any(_constrained(member, json, seen) for member in node.types)
    if isinstance(node, _FIELDS):
        if node.cls in seen:  # a recursive type: its fields are being looked at already
            return False
        seen.add(node.cls)
        if hasattr(node.cls, "__post_init__"):
            return True
        return any(_constrained(field.type, json, seen) for field in node.fields)
    return True


class Codec(Generic[T]):
    """Encoder and validating decoder for one message type and one content type."""

    __slots__ = (
        "_any_decode",
        "_checked",
        "_decoder",
        "_encode",
        "_schema",
        "_schema_valid",
        "content_type",
        "message_type",
        "type_name",
    )

    def __init__(self, message_type: type[T], content_type: str = JSON) -> None:
        self.message_type = message_type
        self.content_type = content_type
        self.type_name = type_name(message_type)
        self._decoder: msgspec.json.Decoder[T] | msgspec.msgpack.Decoder[T]
        if content_type == JSON:
            self._encode = _json_encoder.encode
            self._decoder = msgspec.json.Decoder(message_type)
            self._any_decode: Callable[[Any], Any] = _json_any.decode
        elif content_type == MSGPACK:
            self._encode = _msgpack_encoder.encode
            self._decoder = msgspec.msgpack.Decoder(message_type)
            self._any_decode = _msgpack_any.decode
        else:
            raise ValueError(
                f"unsupported content type {content_type!r}; use one of {CONTENT_TYPES}"
            )
        # Decided once per type: whether `encode(validate=True)` needs its second pass.
        self._checked = self.type_name != "json" and has_constraints(message_type, content_type)
        # A contract with a rule on the whole message (codegen decided): the validator checks
        # what msgspec cannot, after its typed decode.
        self._schema: SchemaCheck | None = schema_check(message_type)
        self._schema_valid = None if self._schema is None else self._schema.is_valid

    def encode(self, msg: T, *, validate: bool = True) -> bytes:
        """Serialise `msg`; with `validate`, check it against its schema first.

        msgspec Struct constructors check neither types nor constraints, so validation decodes
        the encoded bytes once more: a value that breaks a constraint (a bound, a length, a
        pattern, a timezone, a Literal or Enum) is the sender's error, not the receiver's. A
        type with no constraints anywhere skips that pass: what it could still catch is a
        wrong type, which is mypy's error at the sender (and the receiver's ValidationError).
        """
        try:
            data = self._encode(msg)
        except (TypeError, ValueError, OverflowError, msgspec.EncodeError, RecursionError) as exc:
            raise EncodeError(
                f"cannot encode {self.type_name} message: {exc}; "
                "fields must hold JSON-compatible values of their declared types"
            ) from exc
        if validate and self._checked:
            try:
                self._decoder.decode(data)
            except msgspec.ValidationError as exc:
                raise ValidationError(
                    f"invalid {self.type_name} message: {error_text(exc)}; fix the value before "
                    "sending (or pass validate=False to skip the check)",
                    path=error_path(exc),
                ) from exc
        if validate and self._schema is not None:
            # What msgspec enforces was checked above; the validator checks the rest.
            problem = self._schema.problem(self._any_decode(data))
            if problem is not None:
                raise ValidationError(
                    f"invalid {self.type_name} message: {problem[0]} - at `{problem[1]}`; fix "
                    "the value before sending (or pass validate=False to skip the check)",
                    path=problem[1],
                )
        return data

    def decode(self, data: bytes | bytearray | memoryview) -> T:
        """Decode and validate `data` into the message type in one pass.

        A contract with a rule on the whole message (codegen decided) takes a second one:
        msgspec's typed decode first (it enforces what it can, exactly), then the validator on
        the same body as JSON values, against a schema from which codegen left out what
        msgspec enforces. Inline, not a method of its own: this is the hot path.
        """
        valid = self._schema_valid
        try:
            msg = self._decoder.decode(data)
            if valid is None or valid(self._any_decode(data)):
                return msg
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            raise self._refusal(exc)  # noqa: B904  (its cause is set by _refusal)
        raise self._schema_refusal(data)

    def _refusal(self, exc: Exception) -> CodecError:
        """The streamtools error for what msgspec raised while decoding a body."""
        if isinstance(exc, msgspec.ValidationError):
            refusal: CodecError = ValidationError(
                f"{self.type_name} message does not match its schema: {error_text(exc)}",
                path=error_path(exc),
            )
            refusal.__cause__ = exc
            return refusal
        if isinstance(exc, RecursionError):
            # Nesting deeper than the interpreter's recursion limit: refused, never retried.
            deep = DecodeError(f"malformed {self.content_type} body: nested too deeply to decode")
            deep.__suppress_context__ = True
            return deep
        malformed = DecodeError(f"malformed {self.content_type} body: {exc}")
        malformed.__cause__ = exc
        return malformed

    def _schema_refusal(self, data: bytes | bytearray | memoryview) -> ValidationError:
        """The error for a body the whole-message validator refused: its first problem."""
        assert self._schema is not None
        message, path = self._schema.explain(self._any_decode(data))
        return ValidationError(
            f"{self.type_name} message does not match its schema: {message} - at `{path}`",
            path=path,
        )


_json_any = msgspec.json.Decoder()
_msgpack_any = msgspec.msgpack.Decoder()
_codecs: dict[tuple[type[Any], str], Codec[Any]] = {}


def codec_for(message_type: type[T], content_type: str = JSON) -> Codec[T]:
    """The shared codec for a (message type, content type) pair, built once."""
    key = (message_type, content_type)
    codec = _codecs.get(key)
    if codec is None:
        codec = _codecs[key] = Codec(message_type, content_type)
    return codec


_current: ContextVar[Metadata] = ContextVar("streamtools_metadata")


def current_metadata() -> Metadata:
    """The metadata of the message being handled; call it inside a handler.

    Raises OutsideHandlerError (a StreamtoolsError and a LookupError) outside a handler.
    """
    try:
        return _current.get()
    except LookupError:
        raise OutsideHandlerError(
            "current_metadata() is only available inside a message handler"
        ) from None
