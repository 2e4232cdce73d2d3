"""Checks for constructor settings, shared by every transport: one rule, one style of message.

Each check returns the value in its canonical type or raises ConfigurationError naming the
class, the setting, what it must be and what was given:

    RabbitMQConsumer: prefetch must be an int >= 1, got '5'
"""

from __future__ import annotations

import math

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


def retry_delays(owner: str, retry_delay: object, max_retry_delay: object) -> tuple[float, float]:
    """(retry_delay, max_retry_delay): both seconds >= 0, the maximum not below the first."""
    first = seconds(owner, "retry_delay", retry_delay)
    maximum = seconds(owner, "max_retry_delay", max_retry_delay)
    if maximum < first:
        raise _fail(owner, "max_retry_delay", f"seconds >= retry_delay ({first})", max_retry_delay)
    return first, maximum


def choice(owner: str, name: str, value: object, choices: tuple[str, ...]) -> str:
    """One of `choices`."""
    if not isinstance(value, str) or value not in choices:
        raise _fail(owner, name, " or ".join(repr(c) for c in choices), value)
    return value
