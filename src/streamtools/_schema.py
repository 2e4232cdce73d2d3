"""The JSON Schema validator for the contracts msgspec cannot check alone.

Where a keyword msgspec cannot express (``uniqueItems``, ``not``, an untagged union, ...) sits
on a field whose value is plain JSON, the generated Struct checks that field against its
subschema in ``__post_init__`` (`field_check`): msgspec runs it while decoding, and the
send path's validating pass runs it too, so the rest of the message stays on msgspec's one
pass. Where it cannot be checked field by field (an object's ``patternProperties``, a union of
Structs), generated code calls `enforce_schema(Struct, uri, registry)`, and every Codec of
that type checks the whole message against the schema, on send (`encode(validate=True)`) and
on receive (`decode`), with the same rule at both ends. The
validator is an optional extra (``streamtools[validator]``); a contract that needs it fails at
import, naming the install command, never later on a message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from streamtools.errors import ConfigurationError, ValidationError

INSTALL: Final = "pip install 'streamtools[validator]'"
# Only these formats are assertions (as codegen types them); codegen strips the others.
_ASSERTED_FORMATS: Final = ("uuid", "date-time", "date", "time")


class SchemaCheck:
    """One compiled validator: `problem(instance)` is None or (message, `$.json.path`)."""

    __slots__ = ("_validator", "is_valid", "uri")

    def __init__(self, validator: Any, uri: str) -> None:
        self._validator = validator
        self.is_valid: Callable[[Any], bool] = validator.is_valid
        self.uri = uri

    def problem(self, instance: Any) -> tuple[str, str] | None:
        if self.is_valid(instance):
            return None
        return self.explain(instance)

    def explain(self, instance: Any) -> tuple[str, str]:
        """The first error of an invalid `instance`: (message, `$.json.path`)."""
        error = next(iter(self._validator.iter_errors(instance)))
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


class SchemaFieldError(ValidationError, ValueError):
    """A field broke a rule that its Struct checks itself (a ValueError, so that msgspec
    reports it at the Struct's path while decoding; a ValidationError for everyone else)."""


class SchemaRegistry:
    """The schema documents of a generated module, compiled once (see `schema_registry`)."""

    __slots__ = ("_registry", "_validators")

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self._validators: dict[str, Any] = {}

    def validator(self, uri: str) -> Any:
        found = self._validators.get(uri)
        if found is None:
            import jsonschema_rs

            found = self._validators[uri] = jsonschema_rs.validator_for(
                {"$ref": uri}, registry=self._registry, validate_formats=True, offline=True
            )
        return found


def schema_registry(owner: str, documents: str | Mapping[str, Any]) -> SchemaRegistry:
    """The schema documents (a JSON object of documents by URI) of the generated module
    `owner`, for `enforce_schema` and `field_check`. Fails at import, naming the install
    command, when the validator is not installed."""
    try:
        import jsonschema_rs
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"the contracts of {owner} have schema keywords msgspec cannot check, so they need "
            f"the JSON Schema validator (jsonschema-rs), which is not installed — {INSTALL}"
        ) from exc
    docs = json.loads(documents) if isinstance(documents, str) else dict(documents)
    return SchemaRegistry(jsonschema_rs.Registry(list(docs.items())))


def field_check(registry: SchemaRegistry, uri: str) -> Callable[[Any, str], None]:
    """A check of one field's value against the subschema at `uri`; generated Structs call it
    from `__post_init__` with the field's wire path (`.tags`), for the keywords msgspec cannot
    check (only where the field's value is plain JSON, so the check is exact)."""
    validator = registry.validator(uri)
    is_valid = validator.is_valid

    def check(value: Any, where: str) -> None:
        if not is_valid(value):
            error = next(iter(validator.iter_errors(value)))
            path = "$" + where + json_path(error.instance_path)[1:]
            raise SchemaFieldError(f"{error.message} - at `{path}`", path=path)

    return check


_checks: dict[type[Any], SchemaCheck] = {}


def enforce_schema(message_type: type[Any], uri: str, registry: SchemaRegistry) -> None:
    """Check every `message_type` message against the whole schema at `uri` on send and
    receive: generated code calls this for a message whose schema has a keyword msgspec cannot
    check and no field-level check can cover (an object's `patternProperties`, ...)."""
    _checks[message_type] = SchemaCheck(registry.validator(uri), uri)


def schema_check(message_type: type[Any]) -> SchemaCheck | None:
    """The validator `message_type` needs beside msgspec, or None (msgspec is exact)."""
    return _checks.get(message_type)
