"""Type variables, the Queue contract and the handler type shared by every module."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Generic

import msgspec
from typing_extensions import TypeVar

from streamtools.errors import QueueNameError

# A message type: a msgspec Struct for typed contracts, Any for raw JSON. The
# default lets `Producer("name")` be a `Producer[Any]` without annotations.
T = TypeVar("T", default=Any)
R = TypeVar("R")

QUEUE_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9._-]*$"
"""What a queue name may be: the same rule at run time and in codegen (and for every broker:
RabbitMQ queue names, Kafka topic names and HTTP paths all take it unescaped)."""
MAX_QUEUE_NAME: Final = 200
_QUEUE_NAME_RE: Final = re.compile(QUEUE_NAME_PATTERN)


def check_queue_name(name: object) -> str:
    """`name` if it is a valid queue name, else QueueNameError saying what one is."""
    if (
        not isinstance(name, str)
        or len(name) > MAX_QUEUE_NAME
        or not _QUEUE_NAME_RE.match(name)
        or name.endswith((".", "-"))
    ):
        raise QueueNameError(
            f"{name!r} is not a queue name: use a letter, then letters, digits, '.', '_' or "
            f"'-' (at most {MAX_QUEUE_NAME} characters, not ending in '.' or '-'), "
            "e.g. 'orders.created'"
        )
    return name


Handler = Callable[[T], Awaitable[msgspec.Struct | None]]
"""An async message handler: takes the decoded message, returns nothing or a reply Struct."""


@dataclass(frozen=True, slots=True)
class Queue(Generic[T]):
    """A typed contract: the queue `name` and the `message_type` it carries.

    Generated code defines one per `x-queue`, e.g.
    `ORDERS_CREATED: Queue[OrderCreated] = Queue("orders.created", OrderCreated)`.
    """

    name: str
    message_type: type[T]

    def __post_init__(self) -> None:
        check_queue_name(self.name)

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, {getattr(self.message_type, '__name__', self.message_type)})"
