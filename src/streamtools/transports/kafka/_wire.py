"""Metadata on Kafka records: the CloudEvents Kafka protocol binding in binary mode.

The record value is the message's JSON (or msgpack) alone; the headers are `ce_id`,
`ce_type`, `ce_source`, `ce_specversion`, `ce_time` and `content-type` (UTF-8), so plain
Kafka clients and the CloudEvents SDK read our records, and theirs reach our typed handlers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from streamtools._binding import HeaderBinding
from streamtools._codec import Metadata, _now

BINDING: Final = HeaderBinding("ce_", content_type_header="content-type")
"""The CloudEvents Kafka binding: `ce_` attributes and a `content-type` header."""


def record_headers(
    meta: Metadata, extra: Mapping[str, str] | None = None
) -> list[tuple[str, bytes]]:
    """A record's headers for `meta` (and `extra`), every one encoded."""
    headers = BINDING.write(meta)
    if extra:
        headers.update(extra)
    return [(key, value.encode()) for key, value in headers.items()]


class HeaderEncoder:
    """A producer's record headers: its constant ones encoded once, only id and time per
    message."""

    __slots__ = ("_constant",)

    def __init__(self) -> None:
        self._constant: dict[tuple[str, str, str], list[tuple[str, bytes]]] = {}

    def encode(self, meta: Metadata, extra: Mapping[str, str]) -> list[tuple[str, bytes]]:
        cache_key = (meta.type, meta.source, meta.content_type)
        constant = self._constant.get(cache_key)
        if constant is None:
            built = BINDING.constant(meta.type, meta.source, meta.content_type)
            constant = self._constant[cache_key] = [(k, v.encode()) for k, v in built.items()]
        headers = [(BINDING.id, meta.id.encode()), (BINDING.time, meta.time.encode()), *constant]
        if meta.headers:  # the trace context, when tracing
            headers.extend((k, v.encode()) for k, v in meta.headers.items())
        if extra:
            headers.extend((k, v.encode()) for k, v in extra.items())
        return headers


def record_metadata(topic: str, partition: int, record: Any, default_type: str) -> Metadata:
    """The metadata of a consumed record (a foreign record's too: ids from its position)."""
    meta = BINDING.read_pairs(record.headers or (), default_type=default_type)
    if meta.id and meta.time:
        return meta
    # A foreign record: an id from its position, its own time (else the arrival time).
    return msgspec.structs.replace(
        meta,
        id=meta.id or f"{topic}-{partition}-{record.offset}",
        time=meta.time or record_time(record.timestamp) or _now(),
    )


def record_time(timestamp_ms: int | None) -> str | None:
    """A record's timestamp (milliseconds) as an RFC 3339 time, None when it has none."""
    if not timestamp_ms or timestamp_ms < 0:
        return None
    moment = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
