"""Middleware: code around every message a producer sends or a consumer handles, once in the core.

A `Middleware` overrides `publish`, `consume` or both; each gets the message, its metadata
and the next step, and calls `await call_next(...)` to go on (with the same or other values),
or returns without calling it. `middlewares=[outer, inner]` on a producer, a consumer, a
`ConsumerFactory` or a `ConsumerRunner`: the first in the list is the outermost (it runs
first and sees the others' result last). The chains are built once per endpoint, not per
message; an endpoint without middleware takes the path it always took.

- `publish(msg, meta, options, call_next)` runs for every message a producer sends
  (`send`, each of `send_many`, `request`), before it is validated and encoded; what
  `call_next` returns (the message id; a `request`'s reply) is what the caller gets.
- `consume(msg, meta, call_next)` runs around the handler with the decoded, validated message
  (`current_metadata()` works inside it). Raising is a handler failure for the delivery
  policy (retried, then dead-lettered); returning without calling `call_next` settles the
  message as handled, and what it returns is the reply of a request.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from streamtools._codec import Metadata
from streamtools.errors import ConfigurationError

PublishNext = Callable[[Any, Metadata, Mapping[str, object]], Awaitable[Any]]
"""The rest of the publish chain: `await call_next(msg, meta, options)`."""
ConsumeNext = Callable[[Any, Metadata], Awaitable[Any]]
"""The rest of the consume chain: `await call_next(msg, meta)`."""


class Middleware:
    """Subclass and override `publish`, `consume` or both (the defaults pass through)."""

    async def publish(
        self, msg: Any, meta: Metadata, options: Mapping[str, object], call_next: PublishNext
    ) -> Any:
        """Around one message leaving a producer; return what `call_next` returned."""
        return await call_next(msg, meta, options)

    async def consume(self, msg: Any, meta: Metadata, call_next: ConsumeNext) -> Any:
        """Around the handler of one received message; return the handler's result."""
        return await call_next(msg, meta)


def checked(owner: str, middlewares: object) -> tuple[Middleware, ...]:
    """`middlewares` as a tuple, each a Middleware, else a ConfigurationError saying so."""
    if isinstance(middlewares, Middleware) or not isinstance(middlewares, Sequence):
        raise ConfigurationError(
            f"{owner}: middlewares must be a list of Middleware, got {middlewares!r}"
        )
    for middleware in middlewares:
        if not isinstance(middleware, Middleware):
            raise ConfigurationError(
                f"{owner}: {middleware!r} is not a streamtools.Middleware; subclass it and "
                "override publish and/or consume"
            )
    return tuple(middlewares)


def publish_chain(middlewares: Sequence[Middleware], last: PublishNext) -> PublishNext | None:
    """`last` behind the middlewares that override `publish` (outermost first), or None
    when none does (the caller keeps its direct path)."""
    chain: PublishNext | None = _chain(middlewares, "publish", last)
    return chain


def consume_chain(middlewares: Sequence[Middleware], last: ConsumeNext) -> ConsumeNext | None:
    """`last` behind the middlewares that override `consume`, or None when none does."""
    chain: ConsumeNext | None = _chain(middlewares, "consume", last)
    return chain


def _chain(middlewares: Sequence[Middleware], hook: str, last: Any) -> Any:
    """`last` wrapped in each middleware's `hook`, where its class overrides it (the
    default passes through: no step for it); None when none does."""
    step = last
    for middleware in reversed(middlewares):
        if getattr(type(middleware), hook) is not getattr(Middleware, hook):
            step = functools.partial(getattr(middleware, hook), call_next=step)
    return None if step is last else step
