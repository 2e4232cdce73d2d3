"""CloudEvents attributes <-> transport headers (binary content mode), in one place.

A `HeaderBinding` writes a message's `Metadata` as headers and reads it back from what a
peer sent. The prefix is the protocol binding's: `ce-` for HTTP and AMQP, `ce_` for Kafka
(whose binding also carries the content type in a `content-type` header). Besides the
CloudEvents attributes it carries streamtools' attempt counter and the extra headers of
`Metadata.headers` (e.g. the dead-letter headers).

Foreign messages (sent without streamtools) may miss any header: a missing id becomes a
fresh uuid, a missing type the consumer's message type, a missing time the arrival time, a
missing specversion "1.0"; values of other types (AMQP ints, bytes) are read as text, and
an attempt that is not a positive integer counts as 1.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

from streamtools._codec import JSON, SPECVERSION, Metadata, _now

ATTEMPT_HEADER: Final = "x-streamtools-attempt"
"""How many times this consumer's queue has delivered the message (absent on the first)."""

DEAD_LETTER_HEADERS: Final = (
    "x-death-reason",
    "x-error-type",
    "x-error-message",
    "x-attempts",
    "x-original-queue",
)
"""The headers a dead-lettered message carries, on every transport."""

# Broker bookkeeping that describes one delivery, not the message: never copied to a retry
# or dead-letter copy (RabbitMQ adds `x-death` when it dead-letters by itself).
_BOOKKEEPING: Final = ("x-death", "x-delivery-count")
_BOOKKEEPING_PREFIXES: Final = ("x-first-death-", "x-last-death-")


def text(value: object) -> str | None:
    """A header value as text: str as is, bytes as UTF-8, numbers printed; else None."""
    kind = type(value)  # the common cases first, by exact type (the receive path's)
    if kind is bytes:
        return value.decode("utf-8", "replace")  # type: ignore[attr-defined,no-any-return]
    if kind is str:
        return value  # type: ignore[return-value]
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, bool | int | float):
        return str(value)
    return None


def content_type(value: str | None) -> str:
    """The media type of a Content-Type value, lowercased ("" and None mean JSON)."""
    if not value:
        return JSON
    if value == JSON:
        return JSON
    return value.split(";", 1)[0].strip().lower() or JSON


def carried(headers: Mapping[str, str]) -> dict[str, str]:
    """The extra headers a retry or dead-letter copy keeps (broker bookkeeping dropped)."""
    return {
        key: value
        for key, value in headers.items()
        if key not in _BOOKKEEPING and not key.startswith(_BOOKKEEPING_PREFIXES)
    }


def attempt_of(value: object) -> int:
    """The attempt number carried in a header (1 when missing or not a positive integer)."""
    if value is None:
        return 1
    try:
        attempt = int(text(value) or 1)
    except ValueError:
        return 1
    return attempt if attempt >= 1 else 1


class HeaderBinding:
    """CloudEvents binary-mode headers with one prefix (`ce-` or `ce_`)."""

    __slots__ = (
        "_slots",
        "content_type_header",
        "id",
        "owned",
        "source",
        "specversion",
        "time",
        "type",
    )

    def __init__(self, prefix: str = "ce-", *, content_type_header: str | None = None) -> None:
        self.id = f"{prefix}id"
        self.type = f"{prefix}type"
        self.source = f"{prefix}source"
        self.specversion = f"{prefix}specversion"
        self.time = f"{prefix}time"
        self.content_type_header = content_type_header
        owned = [self.id, self.type, self.source, self.specversion, self.time, ATTEMPT_HEADER]
        if content_type_header is not None:
            owned.append(content_type_header)
        self.owned: frozenset[str] = frozenset(owned)
        """Headers streamtools sets itself: a send option may not set them."""
        # read_pairs' place for each owned header, in its unpacking order.
        order = (self.id, self.type, self.source, self.time, self.specversion, ATTEMPT_HEADER)
        self._slots = {key: index for index, key in enumerate(order)}
        if content_type_header is not None:
            self._slots[content_type_header] = len(order)

    def constant(self, type_name: str, source: str, ct: str = JSON) -> dict[str, str]:
        """The headers every message of one producer shares (built once per producer)."""
        headers = {self.type: type_name, self.source: source, self.specversion: SPECVERSION}
        if self.content_type_header is not None:
            headers[self.content_type_header] = ct
        return headers

    def write(self, meta: Metadata, *, extra: bool = True) -> dict[str, str]:
        """Every header for `meta`: CloudEvents attributes, attempt, and (with `extra`) its
        extra headers."""
        headers = {
            self.id: meta.id,
            self.type: meta.type,
            self.source: meta.source,
            self.specversion: meta.specversion,
            self.time: meta.time,
        }
        if self.content_type_header is not None:
            headers[self.content_type_header] = meta.content_type
        if meta.attempt > 1:
            headers[ATTEMPT_HEADER] = str(meta.attempt)
        if extra and meta.headers:
            headers.update(meta.headers)
        return headers

    def read(
        self,
        headers: Mapping[str, Any],
        *,
        default_type: str,
        ct: str | None = None,
        id: str | None = None,
        type: str | None = None,
        source: str = "",
        time: str | None = None,
        extra: bool = True,
    ) -> Metadata:
        """Metadata from received `headers`; keywords are the protocol's own fallbacks.

        `ct` is the content type from the protocol (AMQP property, HTTP header); without it
        the binding's content-type header is read. With `extra`, every header the binding
        does not own becomes `Metadata.headers` (as text; values that are not text dropped).
        """
        get = headers.get
        if ct is None:
            ct = content_type(
                text(get(self.content_type_header)) if self.content_type_header else None
            )
        found: dict[str, str] = {}
        if extra:
            owned = self.owned
            for key, value in headers.items():
                if key not in owned and (value_text := text(value)) is not None:
                    found[key] = value_text
        return Metadata(
            id=text(get(self.id)) or id or uuid.uuid4().hex,
            type=text(get(self.type)) or type or default_type,
            # CloudEvents requires a non-empty source: a foreign sender that set none gets this
            source=text(get(self.source)) or source or UNKNOWN_SOURCE,
            time=text(get(self.time)) or time or _now(),
            content_type=ct,
            specversion=text(get(self.specversion)) or SPECVERSION,
            attempt=attempt_of(get(ATTEMPT_HEADER)),
            headers=found,
        )

    def read_pairs(self, pairs: Iterable[tuple[str, object]], *, default_type: str) -> Metadata:
        """`read` for headers as (key, value) pairs (Kafka's), in one pass over them: the
        same Metadata `read(dict(pairs), ...)` gives, but `id` and `time` are "" where the
        headers lack them: the caller fills them from the record (its position, timestamp).
        """
        slots = self._slots
        values: list[str | None] = [None] * 7  # (a binding without content-type has 6)
        found: dict[str, str] = {}
        for key, value in pairs:
            # Text at once; Kafka's values are bytes, nearly always valid UTF-8.
            if type(value) is bytes:
                try:
                    value_text: str | None = value.decode()
                except UnicodeDecodeError:
                    value_text = value.decode("utf-8", "replace")
            else:
                value_text = text(value)
            slot = slots.get(key)
            if slot is not None:
                values[slot] = value_text
            elif value_text is not None:
                found[key] = value_text
        found_id, found_type, found_source, found_time, found_spec, attempt, found_ct = values
        return Metadata(
            id=found_id or "",
            type=found_type or default_type,
            source=found_source or UNKNOWN_SOURCE,
            time=found_time or "",
            content_type=JSON if found_ct is None else content_type(found_ct),
            specversion=found_spec or SPECVERSION,
            attempt=1 if attempt is None else attempt_of(attempt),
            headers=found,
        )


UNKNOWN_SOURCE: Final = "urn:streamtools:unknown-source"
"""The `source` of a message whose sender set none (CloudEvents requires one)."""

CE: Final = HeaderBinding("ce-")
"""The binding of HTTP and AMQP."""
