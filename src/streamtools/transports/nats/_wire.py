"""Metadata on NATS message headers: the CloudEvents NATS protocol binding, binary mode.

The payload is the message's JSON (or msgpack) alone; the headers are `ce-id`, `ce-type`,
`ce-source`, `ce-specversion`, `ce-time` and `Content-Type` (the binding maps
datacontenttype to the `Content-Type` header), so other NATS clients and the CloudEvents
SDKs read our messages, and theirs reach our typed handlers. `Nats-Msg-Id` (JetStream's
duplicate detection) is the message id on a producer's send, and the id, the target queue
and the attempt on a consumer's retry or dead-letter copy (a copy made again after a crash
is then dropped as a duplicate, while the next retry is not).

A request carries the subject its reply goes to in `x-streamtools-reply-to` (JetStream uses
the message's own reply subject for its PubAck); a reply carrying `x-streamtools-error` says
the request was dead-lettered instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import msgspec
from nats.aio.msg import Msg

from streamtools._binding import HeaderBinding
from streamtools._codec import Metadata
from streamtools.transports.nats._client import MSG_ID

BINDING: Final = HeaderBinding("ce-", content_type_header="Content-Type")
"""The CloudEvents NATS binding: `ce-` attributes and a `Content-Type` header."""
REPLY_TO: Final = "x-streamtools-reply-to"
REPLY_ERROR: Final = "x-streamtools-error"
OWNED: Final = BINDING.owned | {MSG_ID, REPLY_TO}
"""Headers a send option may not set."""


def message_headers(meta: Metadata, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A producer's headers for `meta` (and `extra`): JetStream drops a second `meta.id`."""
    headers = BINDING.write(meta)
    if extra:
        headers.update(extra)
    headers[MSG_ID] = meta.id
    return headers


def copy_headers(meta: Metadata, target: str) -> dict[str, str]:
    """A retry or dead-letter copy's headers: its own duplicate-detection id."""
    headers = BINDING.write(meta)
    headers[MSG_ID] = f"{meta.id}:{target}:{meta.attempt}"
    return headers


def without_reply(meta: Metadata) -> Metadata:
    """`meta` without the requester's reply subject (a dead-letter copy answers nobody)."""
    if REPLY_TO not in meta.headers:
        return meta
    headers = {k: v for k, v in meta.headers.items() if k != REPLY_TO}
    return msgspec.structs.replace(meta, headers=headers)


def message_metadata(msg: Msg, stream: str, default_type: str) -> Metadata:
    """The metadata of a received message (a foreign one's too: its id from its position)."""
    headers = {k: v for k, v in (msg.headers or {}).items() if k != MSG_ID}
    try:
        position = f"{stream}-{msg.metadata.sequence.stream}"
    except Exception:  # not a JetStream message
        position = None
    return BINDING.read(headers, default_type=default_type, id=position)
