"""One entry as the core's delivery policy sees it (`RedisIncoming`), and the batched XACKs
of settled entries (`Acks`: one XACK for up to `batch` ids, or `ACK_LINGER` after the first;
XACK is not cumulative, so the ids are listed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

from streamtools._codec import Metadata
from streamtools._delivery import Incoming
from streamtools.transports.redis._client import FIRST_BACKOFF
from streamtools.transports.redis._wire import entry_fields

if TYPE_CHECKING:
    from streamtools.transports.redis._consumer import RedisConsumer

logger = logging.getLogger("streamtools.redis")

ACK_LINGER: Final = 0.005  # seconds an XACK may wait for more settled ids
COPY_TIMEOUT: Final = 30.0  # seconds a retry or dead-letter copy may take to be added


class RedisIncoming(Incoming):
    """One stream entry and the policy's hooks on it."""

    __slots__ = ("consumer", "entry_id")

    def __init__(
        self, consumer: RedisConsumer[Any], entry_id: str, body: bytes, meta: Metadata
    ) -> None:
        super().__init__(body, meta)
        self.consumer = consumer
        self.entry_id = entry_id

    @property
    def span_attributes(self) -> dict[str, object]:
        return {
            "messaging.consumer.group.name": self.consumer.group,
            "messaging.message.id": self.meta.id,
            "messaging.redis.entry.id": self.entry_id,
        }

    async def publish(self, target: str, meta: Metadata, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)  # no delayed delivery: the original stays pending
        await self.consumer._add(target, entry_fields(self.body, meta), f"copy of {meta.id}")

    async def settle(self) -> None:
        self.consumer._settled(self.entry_id)

    async def requeue(self) -> None:
        await self.consumer._give_back([self.entry_id])

    def abandon(self) -> None:
        self.consumer._give_back_later(self.entry_id)


class Acks:
    """Settled entry ids, XACKed together: once `batch` are waiting, or `linger` after the
    first. A failed XACK keeps its ids for the next one."""

    def __init__(self, consumer: RedisConsumer[Any], batch: int) -> None:
        self.consumer = consumer
        self.batch = batch
        self.waiting: list[str] = []
        self.timer: asyncio.TimerHandle | None = None
        self.flushing: asyncio.Task[None] | None = None

    def add(self, entry_id: str) -> None:
        self.waiting.append(entry_id)
        if self.flushing is not None:
            return  # the running flush takes these too
        if len(self.waiting) >= self.batch:
            self._start()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(ACK_LINGER, self._start)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self.waiting

    def _start(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.flushing is None:
            self.flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self.waiting:
                ids = self.waiting
                self.waiting = []
                try:
                    async with asyncio.timeout(COPY_TIMEOUT):
                        await self.consumer._ack(ids)
                except Exception as exc:
                    self.waiting[:0] = ids
                    logger.warning(
                        "XACK of %d entries failed, trying again: %s",
                        len(ids),
                        exc,
                        extra={"queue": self.consumer.queue.name},
                    )
                    await asyncio.sleep(FIRST_BACKOFF * 10)
        finally:
            self.flushing = None

    async def close(self, timeout: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                if self.flushing is not None:
                    await asyncio.wait([self.flushing])
                if self.waiting:
                    self._start()
                    assert self.flushing is not None
                    await asyncio.wait([self.flushing])
        if self.flushing is not None:
            self.flushing.cancel()
        if self.waiting:
            logger.warning(
                "%d settled entries not acknowledged at close; they will be redelivered",
                len(self.waiting),
                extra={"queue": self.consumer.queue.name},
            )
