"""The streamtools error tree; every error the library raises is a `StreamtoolsError`.

    StreamtoolsError
    ├── ConfigurationError        a setting, option, registry name or topology is wrong
    │   ├── UnknownQueueError     a HandlerFactory has no such queue (also a KeyError)
    │   ├── UnknownTransportError a registry has no such transport name (also a KeyError)
    │   ├── QueueNameError        a queue name breaks the naming rule (also a ValueError)
    │   └── CodegenError          a JSON Schema cannot be turned into code
    ├── ConnectError              the transport could not connect, or lost its connection
    ├── PublishError              a message was not accepted by the broker or server
    │   ├── DeliveryError         the receiver answered with an error status (HTTP)
    │   └── ReplyTimeoutError     no reply to a request in time
    ├── CodecError                a message could not be encoded or decoded
    │   ├── EncodeError           the message could not be serialised
    │   └── DecodeError           the bytes are not a valid message (malformed or invalid)
    │       └── ValidationError   well-formed, but the bytes or the Struct break the schema
    ├── HandlerError              a handler raised (wraps the original as __cause__)
    ├── BatchError                raised by a batch handler: these messages of it failed
    ├── OutsideHandlerError       current_metadata() outside a handler (also a LookupError)
    └── UnsupportedError          the transport does not offer this operation

Lower-layer errors (aiohttp, aio-pika, msgspec) are mapped at one place per module and
chained with ``raise ... from exc``; they never reach the user unwrapped.

`ValidationError` is a `DecodeError`, as msgspec's are (`msgspec.ValidationError` subclasses
`msgspec.DecodeError`): ``except DecodeError`` means the same in both libraries, every message
that could not be taken in; catch `ValidationError` first to tell a schema violation from a
malformed body. A Struct that breaks its schema at the sender raises `ValidationError` too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = [
    "BatchError",
    "CodecError",
    "CodegenError",
    "ConfigurationError",
    "ConnectError",
    "DecodeError",
    "DeliveryError",
    "EncodeError",
    "HandlerError",
    "OutsideHandlerError",
    "PublishError",
    "QueueNameError",
    "ReplyTimeoutError",
    "StreamtoolsError",
    "UnknownQueueError",
    "UnknownTransportError",
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


class UnknownTransportError(ConfigurationError, KeyError):
    """A registry lookup (`PRODUCERS[...]`, `CONSUMER_LOOPS[...]`) named no registered transport."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class QueueNameError(ConfigurationError, ValueError):
    """A queue name breaks the rule (a ConfigurationError, and a ValueError as before)."""


class CodegenError(ConfigurationError):
    """A schema cannot be turned into code; the message names the file and what to change.

    `path` is the offending schema file (or the directory), as given on the command line;
    `errors` is every problem of the run, one line each (just this one when there is one).
    """

    def __init__(self, path: Path | str, what: str, todo: str) -> None:
        super().__init__(f"{Path(path).as_posix()}: {what} — {todo}")
        self.path = Path(path)
        self.errors: list[CodegenError] = [self]

    @classmethod
    def collect(cls, errors: Sequence[CodegenError]) -> CodegenError:
        """One error for all of `errors`: their lines, the first one's path."""
        if len(errors) == 1:
            return errors[0]
        combined = cls(errors[0].path, "", "")
        combined.args = ("\n".join(str(error) for error in errors),)
        combined.errors = list(errors)
        return combined


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
    """The bytes are not a valid message: not well-formed for their content type (this class
    itself) or breaking the schema (the subclass `ValidationError`)."""


class ValidationError(DecodeError):
    """The message does not satisfy its schema (a `DecodeError`, as msgspec's is).

    `path` is the failing field as msgspec reports it (`$.items[0].qty`), or "" if unknown.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class HandlerError(StreamtoolsError):
    """A handler raised; the original exception is the `__cause__`."""


class BatchError(StreamtoolsError):
    """Raise it from a batch handler to fail some of its messages: `failures` maps each
    failed message's index in the batch to why. Those go through the delivery policy alone
    (retried, then dead-lettered); the rest of the batch is handled."""

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        self.failures: Mapping[int, BaseException] = dict(failures)
        shown = ", ".join(
            f"{index}: {type(error).__name__}: {error}"
            for index, error in sorted(self.failures.items())[:5]
        )
        more = len(self.failures) - 5
        super().__init__(
            f"{len(self.failures)} message(s) of the batch failed ({shown}"
            + (f", and {more} more)" if more > 0 else ")")
        )


class OutsideHandlerError(StreamtoolsError, LookupError):
    """`current_metadata()` was called outside a message handler."""


class UnsupportedError(StreamtoolsError):
    """The transport does not offer this operation (e.g. `request` without replies)."""
