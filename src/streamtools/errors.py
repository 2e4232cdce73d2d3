"""The streamtools error tree; every error the library raises is a `StreamtoolsError`.

    StreamtoolsError
    ├── ConfigurationError        a setting, option, registry name or topology is wrong
    │   └── UnknownQueueError     a HandlerFactory has no such queue (also a KeyError)
    ├── ConnectError              the transport could not connect, or lost its connection
    ├── PublishError              a message was not accepted by the broker or server
    │   ├── DeliveryError         the receiver answered with an error status (HTTP)
    │   └── ReplyTimeoutError     no reply to a request in time
    ├── CodecError                a message could not be encoded or decoded
    │   ├── EncodeError           the message could not be serialised
    │   ├── DecodeError           the bytes are not valid for the content type (malformed)
    │   └── ValidationError       the bytes or the Struct break the message's schema
    ├── HandlerError              a handler raised (wraps the original as __cause__)
    ├── OutsideHandlerError       current_metadata() outside a handler (also a LookupError)
    └── UnsupportedError          the transport does not offer this operation

Lower-layer errors (aiohttp, aio-pika, msgspec) are mapped at one place per module and
chained with ``raise ... from exc``; they never reach the user unwrapped.
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "ConfigurationError",
    "ConnectError",
    "DecodeError",
    "DeliveryError",
    "EncodeError",
    "HandlerError",
    "OutsideHandlerError",
    "PublishError",
    "ReplyTimeoutError",
    "StreamtoolsError",
    "UnknownQueueError",
    "UnsupportedError",
    "ValidationError",
]


class StreamtoolsError(Exception):
    """Base of every error raised by streamtools."""


class ConfigurationError(StreamtoolsError):
    """A setting, option, registry name or queue declaration is wrong; fix the configuration."""


class UnknownQueueError(ConfigurationError, KeyError):
    """A lookup named a queue that is not configured (`HandlerFactory[...]`)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConnectError(StreamtoolsError):
    """The transport could not reach its peer or lost the connection."""


class PublishError(StreamtoolsError):
    """A message was not confirmed by its receiver; it may not have been delivered."""


class DeliveryError(PublishError):
    """The receiver answered with an error status.

    `status` is the HTTP status, `body` the receiver's error body (decoded JSON if possible).
    """

    def __init__(self, message: str, *, status: int, body: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ReplyTimeoutError(PublishError):
    """No reply to a `request` arrived within its timeout; the message may still be handled."""


class CodecError(StreamtoolsError):
    """A message could not be encoded or decoded."""


class EncodeError(CodecError):
    """The message could not be serialised (an unsupported value in a field)."""


class DecodeError(CodecError):
    """The bytes are not well-formed for their content type."""


class ValidationError(CodecError):
    """The message does not satisfy its schema.

    `path` is the failing field as msgspec reports it (`$.items[0].qty`), or "" if unknown.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class HandlerError(StreamtoolsError):
    """A handler raised; the original exception is the `__cause__`."""


class OutsideHandlerError(StreamtoolsError, LookupError):
    """`current_metadata()` was called outside a message handler."""


class UnsupportedError(StreamtoolsError):
    """The transport does not offer this operation (e.g. `request` without replies)."""
