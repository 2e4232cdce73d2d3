"""Metadata on stream entries: the body in the field `body`, every other field a header.

An entry's fields are `body` (the message's JSON or msgpack, as sent), the CloudEvents
attributes `ce-id`, `ce-type`, `ce-source`, `ce-specversion`, `ce-time`, `content-type`,
streamtools' `x-streamtools-attempt` after a retry, and the extra headers (the dead-letter
ones: `x-death-reason`, ...). A foreign entry may carry any of them or none: a missing id is
made from the stream and entry id, a missing time from the entry id's milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from redis.typing import EncodableT, FieldT

from streamtools._binding import HeaderBinding
from streamtools._codec import Metadata

BINDING: Final = HeaderBinding("ce-", content_type_header="content-type")
"""CloudEvents attributes as `ce-` fields and a `content-type` field."""

BODY: Final = "body"
"""The field holding the message body."""

Fields = dict[FieldT, EncodableT]


def entry_fields(body: bytes, meta: Metadata, extra: Mapping[str, str] | None = None) -> Fields:
    """An entry's fields for `body` and `meta` (and `extra` headers)."""
    fields: Fields = {BODY: body}
    fields.update(BINDING.write(meta))
    if extra:
        fields.update(extra)
    return fields


class FieldEncoder:
    """A producer's entry fields: its constant ones built once, only id and time per message."""

    __slots__ = ("_constant",)

    def __init__(self) -> None:
        self._constant: dict[tuple[str, str, str], dict[str, str]] = {}

    def encode(self, body: bytes, meta: Metadata, extra: Mapping[str, str]) -> Fields:
        cache_key = (meta.type, meta.source, meta.content_type)
        constant = self._constant.get(cache_key)
        if constant is None:
            constant = self._constant[cache_key] = BINDING.constant(
                meta.type, meta.source, meta.content_type
            )
        fields: Fields = {BODY: body, BINDING.id: meta.id, BINDING.time: meta.time}
        fields.update(constant)
        if meta.headers:  # the trace context, when tracing
            fields.update(meta.headers)
        if extra:
            fields.update(extra)
        return fields


def entry_message(
    stream: str, entry_id: str, fields: Mapping[bytes, bytes], default_type: str
) -> tuple[bytes, Metadata]:
    """(body, metadata) of a consumed entry (a foreign entry's too)."""
    headers: dict[str, bytes] = {}
    body = b""
    for key, value in fields.items():
        name = key.decode("utf-8", "replace")
        if name == BODY:
            body = value
        else:
            headers[name] = value
    meta = BINDING.read(
        headers,
        default_type=default_type,
        id=f"{stream}-{entry_id}",
        time=None if BINDING.time in headers else entry_time(entry_id),
    )
    return body, meta


def entry_time(entry_id: str) -> str | None:
    """The time in a stream entry id (`<milliseconds>-<seq>`) as RFC 3339, None if odd."""
    millis, _, _ = entry_id.partition("-")
    if not millis.isdigit():
        return None
    moment = datetime.fromtimestamp(int(millis) / 1000, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
