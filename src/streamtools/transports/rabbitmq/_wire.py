"""AMQP properties of a message: CloudEvents headers and the mirrored properties, built
directly, and for a producer's plain sends encoded from parts prebuilt once (`_Stamp`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import aio_pika
import aiormq

from streamtools._binding import CE
from streamtools._codec import SPECVERSION, Metadata
from streamtools._foreign.pamqp import WiredProperties

_PERSISTENT: Final = int(aio_pika.DeliveryMode.PERSISTENT)
_NOT_PERSISTENT: Final = int(aio_pika.DeliveryMode.NOT_PERSISTENT)


_second_text = ""
_second: datetime | None = None


def _timestamp(iso: str) -> datetime | None:
    # AMQP timestamps are whole seconds: one datetime per second for streamtools' own times
    # (`_codec._now`: 27 characters, microseconds, UTC), parsed in full for any other.
    global _second_text, _second
    if len(iso) == 27 and iso[19] == "." and iso[26] == "Z":
        text = iso[:19]
        if text != _second_text:
            try:
                _second = datetime.fromisoformat(text).replace(tzinfo=UTC)
            except ValueError:
                return None
            _second_text = text
        return _second
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        return None


def _properties(
    meta: Metadata,
    *,
    headers: Mapping[str, object] | None = None,
    expiration: float | None = None,
    reply_to: str | None = None,
    persistent: bool = True,
) -> aiormq.spec.Basic.Properties:
    """AMQP properties carrying `meta` as CloudEvents headers and mirrored properties.

    Built directly rather than through `aio_pika.Message` (the same fields and encodings:
    expiration in whole milliseconds, priority 0), which costs several microseconds per
    message on the publish path.
    """
    all_headers: dict[str, object] = dict(CE.write(meta))
    if headers:
        all_headers.update(headers)
    return aiormq.spec.Basic.Properties(
        content_type=meta.content_type,
        headers=all_headers,  # type: ignore[arg-type]  # pamqp's FieldTable is invariant
        delivery_mode=_PERSISTENT if persistent else _NOT_PERSISTENT,
        priority=0,
        correlation_id=meta.id if reply_to else None,
        reply_to=reply_to,
        expiration=None if expiration is None else str(int(expiration * 1000)),
        message_id=meta.id,
        timestamp=_timestamp(meta.time),
        message_type=meta.type,
    )


_LONG: Final = struct.Struct(">I")
_SECONDS: Final = struct.Struct(">Q")
# Basic.Properties flags of a plain send: content_type, headers, delivery_mode, priority,
# message_id, timestamp, type (AMQP 0-9-1, 4.2.6.1; the bits pamqp's marshal sets).
_PLAIN_FLAGS: Final = 0x8000 | 0x2000 | 0x1000 | 0x0800 | 0x0080 | 0x0040 | 0x0020


def _short(text: str) -> bytes | None:
    """An AMQP shortstr, or None when `text` is too long for one (255 bytes)."""
    data = text.encode()
    return bytes((len(data),)) + data if len(data) < 256 else None


def _table_key(key: str) -> bytes:
    """A field-table entry's name and the type tag of a long string ('S')."""
    return bytes((len(key),)) + key.encode() + b"S"


class _Stamp:
    """The properties of one producer's plain sends: the constant parts built once.

    `type`, `source` and `specversion` are the same on every message of a producer; a send
    adds only `ce-id` and `ce-time`, the message id and the timestamp. Their AMQP encoding
    is prepared here too, byte for byte what pamqp writes (its headers table in sorted key
    order: ce-id, ce-source, ce-specversion, ce-time, ce-type); a test holds the two equal.
    The prepared bytes reach pamqp in a `WiredProperties` (see `streamtools._foreign.pamqp`).
    A message whose metadata differs (trace or other extra headers, another source set
    since, a retried copy) takes the general `_properties` and pamqp's encoding.
    """

    __slots__ = (
        "_after_id",
        "_after_time",
        "_head",
        "_id_key",
        "_seconds",
        "_stamp",
        "_tail",
        "_time_key",
        "constant",
        "content_type",
        "source",
        "type",
        "wired",
    )

    def __init__(self, type_name: str, source: str, content_type: str) -> None:
        self.type = type_name
        self.source = source
        self.content_type = content_type
        constant = CE.constant(type_name, source)
        self.constant = {k: constant[k] for k in (CE.type, CE.source, CE.specversion)}
        short_type, short_ct = _short(type_name), _short(content_type)
        self.wired = short_type is not None and short_ct is not None
        self._head = _LONG.pack(_PLAIN_FLAGS)[2:] + (short_ct or b"")
        self._id_key = _table_key(CE.id)
        self._after_id = b"".join(
            _table_key(key) + _LONG.pack(len(data)) + data
            for key, data in ((CE.source, source.encode()), (CE.specversion, SPECVERSION.encode()))
        )
        self._time_key = _table_key(CE.time)
        encoded_type = type_name.encode()
        self._after_time = _table_key(CE.type) + _LONG.pack(len(encoded_type)) + encoded_type
        self._tail = short_type or b""
        self._stamp: datetime | None = None
        self._seconds = b""

    def properties(self, meta: Metadata) -> aiormq.spec.Basic.Properties:
        if (
            meta.type != self.type
            or meta.source != self.source
            or meta.content_type != self.content_type
            or meta.specversion != SPECVERSION
            or meta.attempt != 1
        ):
            return _properties(meta)
        headers: dict[str, object] = {CE.id: meta.id, **self.constant, CE.time: meta.time}
        stamp = _timestamp(meta.time)
        wire = self._wire(meta, stamp) if not meta.headers else None
        if meta.headers:
            headers.update(meta.headers)
        properties = (aiormq.spec.Basic.Properties if wire is None else WiredProperties)(
            content_type=meta.content_type,
            headers=headers,  # type: ignore[arg-type]  # pamqp's FieldTable is invariant
            delivery_mode=_PERSISTENT,
            priority=0,
            message_id=meta.id,
            timestamp=stamp,
            message_type=meta.type,
        )
        if wire is not None:
            properties.wire = wire  # type: ignore[attr-defined]  # a WiredProperties
        return properties

    def _wire(self, meta: Metadata, stamp: datetime | None) -> bytes | None:
        """The AMQP encoding of a plain send's properties; None where pamqp must do it."""
        message_id, time = meta.id.encode(), meta.time.encode()
        if not self.wired or stamp is None or len(message_id) > 255:
            return None
        if stamp is not self._stamp:  # one datetime per second (see _timestamp)
            self._stamp, self._seconds = stamp, _SECONDS.pack(int(stamp.timestamp()))
        table = b"".join(
            (
                self._id_key,
                _LONG.pack(len(message_id)),
                message_id,
                self._after_id,
                self._time_key,
                _LONG.pack(len(time)),
                time,
                self._after_time,
            )
        )
        return b"".join(
            (
                self._head,
                _LONG.pack(len(table)),
                table,
                b"\x02\x00",  # delivery_mode 2 (persistent), priority 0
                bytes((len(message_id),)),
                message_id,
                self._seconds,
                self._tail,
            )
        )
