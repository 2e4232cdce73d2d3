"""Checks for constructor settings, shared by every transport: one rule, one style of message.

Each check returns the value in its canonical type or raises ConfigurationError naming the
class, the setting, what it must be and what was given:

    RabbitMQConsumer: prefetch must be an int >= 1, got '5'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Container, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Final

from streamtools.errors import ConfigurationError


def _fail(owner: str, name: str, must: str, value: object) -> ConfigurationError:
    return ConfigurationError(f"{owner}: {name} must be {must}, got {value!r}")


def integer(owner: str, name: str, value: object, *, minimum: int) -> int:
    """An int (not a bool, not a str) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(owner, name, f"an int >= {minimum}", value)
    return value


def seconds(owner: str, name: str, value: object, *, positive: bool = False) -> float:
    """A finite number of seconds: > 0 with `positive`, else >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or (value <= 0 if positive else value < 0)
    ):
        raise _fail(owner, name, "seconds > 0" if positive else "seconds >= 0", value)
    return float(value)


def choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise _fail(owner, name, " or ".join(repr(c) for c in choices), value)
    return value


# --- the policy's settings, one vocabulary for every transport --------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a message is tried again: up to `attempts` more times, the first after `delay`
    seconds, each later wait doubled (with jitter) up to `max_delay`.

    On a consumer (`retry=`), a handler failure is redelivered this way and dead-lettered to
    `<queue>.dlq` after the last attempt; `RetryPolicy(attempts=0)` dead-letters at once. On
    the HTTP producer (`resend=`), a send the server did not take is sent again this way.
    """

    attempts: int = 3
    delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        integer("RetryPolicy", "attempts", self.attempts, minimum=0)
        object.__setattr__(self, "delay", seconds("RetryPolicy", "delay", self.delay))
        maximum = seconds("RetryPolicy", "max_delay", self.max_delay)
        if maximum < self.delay:
            raise _fail("RetryPolicy", "max_delay", f"seconds >= delay ({self.delay})", maximum)
        object.__setattr__(self, "max_delay", maximum)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one consumer takes on: messages of at most `max_message_size` bytes (a larger one
    is dead-lettered, or answered 413 over HTTP, without being decoded) and at most
    `max_in_flight` handlers at once (RabbitMQ's prefetch, Kafka's records per poll)."""

    max_message_size: int = 1024 * 1024
    max_in_flight: int = 64

    def __post_init__(self) -> None:
        integer("Limits", "max_message_size", self.max_message_size, minimum=1)
        integer("Limits", "max_in_flight", self.max_in_flight, minimum=1)


DEFAULT_RETRY: Final = RetryPolicy()
DEFAULT_LIMITS: Final = Limits()
_NONE_GIVEN: Final[Mapping[str, object]] = MappingProxyType({})


def policy(
    owner: str,
    retry: object,
    limits: object,
    deprecated: Mapping[str, object] = _NONE_GIVEN,
    *,
    stacklevel: int = 4,
) -> tuple[RetryPolicy, Limits]:
    """A consumer's (RetryPolicy, Limits) from `retry=` and `limits=`, and from the old
    keywords in `deprecated` (`max_retries`, `retry_delay`, `max_retry_delay`,
    `max_message_size`, `max_in_flight`, `prefetch`, `max_body_size`; None where not given),
    each given one with a DeprecationWarning naming its new spelling. Passing an old keyword
    and the object that replaces it is an error. `stacklevel` points the warning at the
    user's constructor call."""
    if not isinstance(retry, RetryPolicy):
        raise _fail(owner, "retry", "a RetryPolicy", retry)
    if not isinstance(limits, Limits):
        raise _fail(owner, "limits", "a Limits", limits)
    given = {name: value for name, value in deprecated.items() if value is not None}
    if not given:
        return retry, limits
    retry_changes: dict[str, Any] = {}
    limit_changes: dict[str, Any] = {}
    for name, value in given.items():
        target, field = _RENAMED[name]
        (retry_changes if target == "retry" else limit_changes)[field] = value
        new = "RetryPolicy" if target == "retry" else "Limits"
        warnings.warn(
            f"{owner}: {name}= is deprecated, pass {target}={new}({field}={value!r}) instead",
            DeprecationWarning,
            stacklevel=stacklevel,
        )
    if retry_changes and retry != RetryPolicy():
        raise ConfigurationError(f"{owner}: pass retry= or {', '.join(retry_changes)}=, not both")
    if limit_changes and limits != Limits():
        raise ConfigurationError(f"{owner}: pass limits= or {', '.join(limit_changes)}=, not both")
    if len(limit_changes) < sum(1 for n in given if _RENAMED[n][0] == "limits"):
        raise ConfigurationError(f"{owner}: {' and '.join(sorted(given))} name the same limit")
    try:
        if retry_changes:
            retry = replace(retry, **retry_changes)
        if limit_changes:
            limits = replace(limits, **limit_changes)
    except ConfigurationError as exc:  # say it with the keyword the user wrote
        raise ConfigurationError(f"{owner}: {exc}") from None
    return retry, limits


_RENAMED: Final = {
    "max_retries": ("retry", "attempts"),
    "retry_delay": ("retry", "delay"),
    "max_retry_delay": ("retry", "max_delay"),
    "max_message_size": ("limits", "max_message_size"),
    "max_body_size": ("limits", "max_message_size"),
    "max_in_flight": ("limits", "max_in_flight"),
    "prefetch": ("limits", "max_in_flight"),
}


def renamed(owner: str, old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that the keyword `old` is deprecated in favour of `new` (kept for one release)."""
    warnings.warn(
        f"{owner}: {old}= is deprecated, pass {new} instead",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


DEPRECATED: Final = frozenset(
    {*_RENAMED, "timeout", "retries", "retry_backoff", "max_retry_backoff"}
)
"""Constructor keywords kept for one release; `Producer.settings` / `Consumer.settings` list
the others (the README's settings tables are checked against them)."""


# --- send options --------------------------------------------------------------------------


def send_options(owner: str, options: Mapping[str, object], accepted: frozenset[str]) -> None:
    """Refuse a send option `owner` does not take, listing the ones it does."""
    unknown = options.keys() - accepted
    if unknown:
        raise ConfigurationError(
            f"{owner}.send has no option {', '.join(sorted(unknown))}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )


def extra_headers(options: Mapping[str, object], owned: Container[str]) -> dict[str, str]:
    """The `headers=` send option: a mapping of str to str naming none of the headers (or
    fields) streamtools sets itself (`owned`), as a new dict; {} when not given."""
    headers = options.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigurationError("send option headers must be a mapping of str to str")
    reserved = sorted(k for k in headers if k in owned)
    if reserved:
        raise ConfigurationError(
            f"send option headers may not set {', '.join(reserved)}; streamtools sets them"
        )
    return dict(headers)
