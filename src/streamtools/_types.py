"""Type variables, the Queue contract and the handler type shared by every module."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic

import msgspec
from typing_extensions import TypeVar

# A message type: a msgspec Struct for typed contracts, Any for raw JSON. The
# default lets `Producer("name")` be a `Producer[Any]` without annotations.
T = TypeVar("T", default=Any)
R = TypeVar("R")

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
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a queue name must be a non-empty string, got {self.name!r}")

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, {getattr(self.message_type, '__name__', self.message_type)})"
