"""The JSON Schema validator for the contracts msgspec cannot check alone.

Generated code calls `enforce_schema(Struct, uri, documents)` for a message whose schema has a
keyword msgspec cannot express (``uniqueItems``, ``not``, an untagged union, ...). From then
on, every Codec of that type checks each message against the schema with jsonschema-rs, on
send (`encode(validate=True)`) and on receive (`decode`), with the same rule at both ends. The
validator is an optional extra (``streamtools[validator]``); a contract that needs it fails at
import, naming the install command, never later on a message.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from streamtools.errors import ConfigurationError

INSTALL: Final = "pip install 'streamtools[validator]'"
# Only these formats are assertions (as codegen types them); codegen strips the others.
_ASSERTED_FORMATS: Final = ("uuid", "date-time", "date", "time")


class SchemaCheck:
    """One compiled validator: `problem(instance)` is None or (message, `$.json.path`)."""

    __slots__ = ("_validator", "uri")

    def __init__(self, validator: Any, uri: str) -> None:
        self._validator = validator
        self.uri = uri

    def problem(self, instance: Any) -> tuple[str, str] | None:
        validator = self._validator
        if validator.is_valid(instance):
            return None
        error = next(iter(validator.iter_errors(instance)))
        return error.message, json_path(error.instance_path)


def json_path(parts: Any) -> str:
    """`["total", "amountCents"]` -> `$.total.amountCents`; indexes as `[0]`, as msgspec does."""
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.isidentifier():
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


_checks: dict[type[Any], SchemaCheck] = {}


def enforce_schema(message_type: type[Any], uri: str, documents: str | Mapping[str, Any]) -> None:
    """Check every `message_type` message against the schema at `uri` (in `documents`, a JSON
    object of documents by URI) on send and receive. Called by generated contracts."""
    try:
        import jsonschema_rs
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the contract {message_type.__name__} has schema keywords msgspec cannot check, so "
            f"it needs the JSON Schema validator (jsonschema-rs), which is not installed — "
            f"{INSTALL}"
        ) from exc
    docs = json.loads(documents) if isinstance(documents, str) else dict(documents)
    registry = jsonschema_rs.Registry(list(docs.items()))
    validator = jsonschema_rs.validator_for(
        {"$ref": uri},
        registry=registry,
        validate_formats=True,
        offline=True,
    )
    _checks[message_type] = SchemaCheck(validator, uri)


def schema_check(message_type: type[Any]) -> SchemaCheck | None:
    """The validator `message_type` needs beside msgspec, or None (msgspec is exact)."""
    return _checks.get(message_type)
