"""Answers to recently handled messages, so a producer's retry does not run a handler twice.

A message is identified by (`ce-source`, `ce-id`), as CloudEvents defines uniqueness: two
producers may pick the same id. The cache is an LRU bounded in entries and in bytes (the
stored reply bodies plus the keys), so a burst of large replies cannot grow it without end.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Final

from streamtools.transports.http._outcome import Outcome

Key = tuple[str, str]
"""(source, id)."""

# What an entry costs beyond its body and key: the tuple, the OrderedDict node, the Outcome.
_ENTRY_OVERHEAD: Final = 200


def cost(key: Key, outcome: Outcome) -> int:
    """The bytes an entry is counted as."""
    return len(outcome.body) + len(key[0]) + len(key[1]) + _ENTRY_OVERHEAD


class Dedup:
    """Outcomes of recently handled messages (bounded LRU) and the messages being handled.

    `running` maps a key being handled to None, or to a future once a duplicate of it
    arrives and waits for the outcome: most messages never have one, so none is made.
    """

    __slots__ = ("done", "max_bytes", "running", "size", "stored_bytes")

    def __init__(self, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.stored_bytes = 0
        self.done: OrderedDict[Key, Outcome] = OrderedDict()
        self.running: dict[Key, asyncio.Future[Outcome] | None] = {}

    def get(self, key: Key) -> Outcome | None:
        outcome = self.done.get(key)
        if outcome is not None:
            self.done.move_to_end(key)
        return outcome

    def remember(self, key: Key, outcome: Outcome) -> None:
        """Keep `outcome`, evicting the least recently used entries past either bound.

        An outcome larger than the whole byte budget is not kept (a retry then runs the
        handler again, as it would once the entry had been evicted).
        """
        size = cost(key, outcome)
        if size > self.max_bytes:
            return
        previous = self.done.pop(key, None)
        if previous is not None:
            self.stored_bytes -= cost(key, previous)
        self.done[key] = outcome
        self.stored_bytes += size
        while len(self.done) > self.size or self.stored_bytes > self.max_bytes:
            old_key, old = self.done.popitem(last=False)
            self.stored_bytes -= cost(old_key, old)

    def waiter(self, key: Key) -> asyncio.Future[Outcome]:
        """A future for the outcome of `key`, which is being handled."""
        future = self.running[key]
        if future is None:
            future = self.running[key] = asyncio.get_running_loop().create_future()
        return future
