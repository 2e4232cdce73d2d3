"""`RedisConsumer`: a member of the queue's consumer group; XACKs settled entries only.

One consumer group per queue (`group=`, else the queue name), created at id 0 with the stream
when missing; each consumer is a uniquely named member (`<host>-<pid>-<random>`). It reads
new entries with XREADGROUP (BLOCK 1 s, COUNT = its free handler slots, at most
`limits.max_in_flight`) and hands each to the core's delivery policy. Settled entries are
XACKed in batches (one XACK for up to a quarter of `max_in_flight` ids, or 5 ms after the
first): a killed consumer redelivers at most those.

Nothing stays stuck: an entry read and never acknowledged (its consumer died, or gave it
back) is reclaimed with XAUTOCLAIM by a member of the group once it has been idle
`claim_idle` seconds (30 by default); every member looks about once a second. While a handler
runs (or its retry copy waits for its backoff delay) the member renews its claim every
`claim_idle / 3` seconds (XCLAIM JUSTID), so a slow handler is not taken over; only a member
that stops renewing (dead, frozen, cut off for longer than `claim_idle`) loses its entries.
`requeue` and `abandon` (shutdown) give an entry back by marking it idle for `claim_idle`
already, so the next XAUTOCLAIM of any member takes it at once.

Retry and dead-letter copies are XADDed (to the queue's stream after the backoff delay, or to
`<queue>.dlq`) while the original stays pending, and the original is acknowledged only
after the copy was added: a crash in between duplicates, never loses. After a lost
connection the member reads again with backoff (0.05 s doubling to 2 s); a group that is gone
(the stream deleted, a server restarted without its data) is created again at id 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl as _ssl
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from redis.typing import StreamIdT

from streamtools._base import Capabilities
from streamtools._codec import type_name
from streamtools._delivery import QueuedConsumer
from streamtools._middleware import Middleware
from streamtools._settings import DEFAULT_LIMITS, DEFAULT_RETRY, Limits, RetryPolicy, seconds
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError
from streamtools.transports.redis._client import FIRST_BACKOFF, MAX_BACKOFF
from streamtools.transports.redis._endpoint import RedisEndpoint
from streamtools.transports.redis._errors import refused, transient, translate
from streamtools.transports.redis._incoming import COPY_TIMEOUT, Acks, RedisIncoming
from streamtools.transports.redis._streams import ensure_group, missing_group
from streamtools.transports.redis._wire import entry_message

logger = logging.getLogger("streamtools.redis")

BLOCK_MS: Final = 1000  # XREADGROUP's BLOCK: how long one read waits for new entries
RECLAIM_EVERY: Final = 1.0  # seconds between XAUTOCLAIM rounds (less for a short claim_idle)


def consumer_name() -> str:
    """A name no other member of the group has: host, process, and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisConsumer(RedisEndpoint, QueuedConsumer[T]):
    """A member of the queue's consumer group on a Redis stream; XACKs settled entries only.

    Connection settings as on `RedisProducer`; `group=` (else the queue name), `claim_idle=`
    (seconds an entry of a silent member stays pending before another member takes it, 30),
    `retry=` (a RetryPolicy), `limits=` (Limits: `max_in_flight` handlers at once, also the
    entries per read), `shutdown_timeout=`.
    """

    capabilities = Capabilities(
        queued=True,
        persistent=True,
        redelivery=True,
        dead_letter=True,
        request_reply=False,
        ordered=True,  # one stream, one member with max_in_flight=1: in the order added
        consumer_groups=True,
    )

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        group: str | None = None,
        claim_idle: float = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        limits: Limits = DEFAULT_LIMITS,
        shutdown_timeout: float = 30.0,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            retry=retry,
            limits=limits,
            shutdown_timeout=shutdown_timeout,
            middlewares=middlewares,
        )
        self._connect(
            f"consumer {self.queue.name}",
            url=url,
            username=username,
            password=password,
            ssl=ssl,
            connect_timeout=connect_timeout,
        )
        owner = type(self).__name__
        self.claim_idle = seconds(owner, "claim_idle", claim_idle, positive=True)
        if group is not None and not group:
            raise ConfigurationError(f"{owner}: group must be a non-empty str, got {group!r}")
        self.group = group or self.queue.name
        self.name = consumer_name()
        self._stream = self.queue.name
        self._default_type = type_name(self.queue.message_type)
        self._slots = asyncio.Semaphore(self.max_in_flight)
        self._held: set[str] = set()  # entries read here whose delivery is not settled
        self._acks = Acks(self, max(1, self.max_in_flight // 4))
        self._releases: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._keeper: asyncio.Task[None] | None = None
        self._up = False
        self._stopping = False
        self._in_command: set[asyncio.Task[Any]] = set()  # loops inside a redis command

    def __repr__(self) -> str:
        return f"RedisConsumer({self.queue.name!r}, group={self.group!r}, {self._settings.where})"

    @property
    def connected(self) -> bool:
        """True while the last read from the server succeeded."""
        return super().connected and self._up

    @property
    def _claim_idle_ms(self) -> int:
        return max(1, int(self.claim_idle * 1000))

    # --- lifecycle ---------------------------------------------------------------------------

    async def _open(self) -> None:
        await self._client.start(self.connect_timeout)
        what = f"consumer {self.queue.name}: creating group {self.group!r}"
        try:
            async with asyncio.timeout(self.connect_timeout):
                await ensure_group(self._client.connection(), self._stream, self.group)
        except BaseException as exc:
            await self._client.close()
            if isinstance(exc, Exception):
                raise translate(exc, self._settings, what) from None
            raise
        self._up = True

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._consume()), loop.create_task(self._reclaim())]
        self._keeper = loop.create_task(self._keep_claims())
        logger.debug(
            "consuming",
            extra={"queue": self.queue.name, "group": self.group, "consumer": self.name},
        )

    async def _stop_intake(self) -> None:
        # The loops stop by themselves after their current command (a read blocks for at
        # most BLOCK_MS): cancelling redis-py mid-read can leave the task hanging. What the
        # last read took is handled, and close() waits for it like for the rest.
        self._stopping = True
        for task in self._loops:
            if task not in self._in_command:
                task.cancel()  # waiting for a slot or sleeping: safe to cancel
        loops = [task for task in self._loops if not task.done()]
        if loops:
            _, late = await asyncio.wait(loops, timeout=BLOCK_MS / 1000 + self.connect_timeout)
            for task in late:
                task.cancel()

    async def _close(self) -> None:
        # Acknowledge what was settled, give back what was abandoned, then stop renewing.
        await self._acks.close(self.connect_timeout)
        if self._releases:
            await asyncio.wait(set(self._releases), timeout=self.connect_timeout)
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.connect_timeout):
                await self._leave()
        await self._client.close()

    async def _leave(self) -> None:
        """Leave the group's member list when nothing is pending here (else the entries
        stay, for another member to reclaim)."""
        client = self._client.connection()
        pending = await client.xpending_range(
            self._stream, self.group, min="-", max="+", count=1, consumername=self.name
        )
        if not pending:
            await client.xgroup_delconsumer(self._stream, self.group, self.name)

    # --- reading -----------------------------------------------------------------------------

    def _is_stopping(self) -> bool:
        return self._stopping

    async def _take_slots(self) -> int:
        """Wait for a free handler slot, then take every free one: the entries to read."""
        slots = self._slots
        await slots.acquire()
        taken = 1
        while taken < self.max_in_flight and not slots.locked():
            await slots.acquire()
            taken += 1
        return taken

    def _hand_over(self, entries: Iterable[Any], slots: int) -> int:
        """Deliver the entries read or claimed; return the slots left unused."""
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if fields is None or entry_id in self._held or entry_id in self._acks:
                continue  # deleted meanwhile, or already ours
            if slots == 0:  # more than asked for: leave it pending, reclaimed later
                break
            body, meta = entry_message(self._stream, entry_id, fields, self._default_type)
            self._held.add(entry_id)
            slots -= 1
            self._accept(RedisIncoming(self, entry_id, body, meta))
        return slots

    async def _consume(self) -> None:
        delay = FIRST_BACKOFF
        while not self._is_stopping():
            slots = await self._take_slots()
            unused = slots
            task = asyncio.current_task()
            assert task is not None
            if self._is_stopping():
                for _ in range(slots):
                    self._slots.release()
                return
            self._in_command.add(task)
            try:
                async with asyncio.timeout(BLOCK_MS / 1000 + self.connect_timeout + 5):
                    response = await self._client.connection().xreadgroup(
                        self.group, self.name, {self._stream: ">"}, count=slots, block=BLOCK_MS
                    )
                self._up = True
                delay = FIRST_BACKOFF
                streams = response.items() if isinstance(response, dict) else response or ()
                for _stream, entries in streams:
                    unused = self._hand_over(entries, unused)
            except Exception as exc:
                await self._read_failed(exc, "reading", delay)
                delay = min(MAX_BACKOFF, delay * 2)
            finally:
                self._in_command.discard(task)
                for _ in range(unused):
                    self._slots.release()

    async def _read_failed(self, exc: Exception, what: str, delay: float) -> None:
        """A failed read or claim: recreate a lost group, wait out an outage (with backoff)."""
        if missing_group(exc):
            logger.warning(
                "group %r on %r is gone; creating it again at id 0",
                self.group,
                self._stream,
                extra={"queue": self.queue.name},
            )
            with contextlib.suppress(Exception):
                await ensure_group(self._client.connection(), self._stream, self.group)
            return
        self._up = False
        if transient(exc):
            logger.info(
                "%s: %s unreachable, again in %.2f s: %s",
                what,
                self._settings.where,
                delay,
                str(exc) or type(exc).__name__,
                extra={"queue": self.queue.name},
            )
        else:
            level = logging.ERROR if refused(exc) else logging.WARNING
            logger.log(
                level,
                "%s failed, again in %.2f s: %s",
                what,
                delay,
                translate(exc, self._settings, f"consumer {self.queue.name}"),
                extra={"queue": self.queue.name},
            )
        await asyncio.sleep(delay)

    async def _reclaim(self) -> None:
        """Take over entries idle for `claim_idle` (a dead member's, given back ones)."""
        every = min(RECLAIM_EVERY, self.claim_idle / 2)
        cursor = "0-0"
        delay = FIRST_BACKOFF
        while not self._is_stopping():
            await asyncio.sleep(every)
            if self._is_stopping():
                return
            slots = await self._take_slots()
            unused = slots
            task = asyncio.current_task()
            assert task is not None
            if self._is_stopping():
                for _ in range(slots):
                    self._slots.release()
                return
            self._in_command.add(task)
            try:
                async with asyncio.timeout(self.connect_timeout + 5):
                    answer = await self._client.connection().xautoclaim(
                        self._stream,
                        self.group,
                        self.name,
                        min_idle_time=self._claim_idle_ms,
                        start_id=cursor,
                        count=slots,
                    )
                delay = FIRST_BACKOFF
                next_id = answer[0]
                cursor = next_id.decode() if isinstance(next_id, bytes) else str(next_id)
                claimed = answer[1] or []
                if claimed:
                    logger.info(
                        "reclaimed %d entries idle for %.1f s",
                        len(claimed),
                        self.claim_idle,
                        extra={"queue": self.queue.name},
                    )
                unused = self._hand_over(claimed, unused)
            except Exception as exc:
                await self._read_failed(exc, "reclaiming", delay)
                delay = min(MAX_BACKOFF, delay * 2)
            finally:
                self._in_command.discard(task)
                for _ in range(unused):
                    self._slots.release()

    async def _keep_claims(self) -> None:
        """Renew the claim on every entry held here, so no other member takes it over."""
        while True:
            await asyncio.sleep(self.claim_idle / 3)
            held: list[StreamIdT] = list(self._held)
            if not held:
                continue
            try:
                async with asyncio.timeout(self.claim_idle / 3 + self.connect_timeout):
                    await self._client.connection().xclaim(
                        self._stream, self.group, self.name, 0, held, justid=True
                    )
            except Exception as exc:
                logger.info(
                    "renewing %d claims failed: %s",
                    len(held),
                    exc,
                    extra={"queue": self.queue.name},
                )

    # --- the hooks' commands -----------------------------------------------------------------

    async def _add(self, stream: str, fields: Any, what: str) -> None:
        """XADD a copy (retry or dead letter), through connection errors, within a bound."""
        try:
            async with asyncio.timeout(COPY_TIMEOUT):
                await self._client.call(lambda r: r.xadd(stream, fields), what=what)
        except TimeoutError:
            raise translate(
                TimeoutError(f"not added within {COPY_TIMEOUT} s"), self._settings, what
            ) from None

    def _settled(self, entry_id: str) -> None:
        self._held.discard(entry_id)
        self._acks.add(entry_id)

    async def _ack(self, ids: list[str]) -> None:
        await self._client.call(
            lambda r: r.xack(self._stream, self.group, *ids), what=f"XACK of {len(ids)} entries"
        )

    async def _give_back(self, ids: list[str]) -> None:
        """Leave the entries pending, marked idle for `claim_idle`: the next XAUTOCLAIM of
        any member (this one too) takes them."""
        for entry_id in ids:
            self._held.discard(entry_id)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.connect_timeout):
                await self._client.connection().xclaim(
                    self._stream,
                    self.group,
                    self.name,
                    0,
                    list[StreamIdT](ids),
                    idle=self._claim_idle_ms,
                    justid=True,
                )

    def _give_back_later(self, entry_id: str) -> None:
        self._held.discard(entry_id)
        task = asyncio.get_running_loop().create_task(self._give_back([entry_id]))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _delivery_done(self) -> None:
        self._slots.release()
        super()._delivery_done()
