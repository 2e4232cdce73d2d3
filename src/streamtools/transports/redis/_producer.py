"""`RedisProducer`: XADDs to the queue's stream; `send` returns once the server added it.

`max_length=None` (the default) leaves the stream unbounded. With `max_length=n` each XADD
trims with `MAXLEN ~ n`: the stream keeps at least about n entries and Redis drops the
oldest ones beyond, acknowledged or not. Entries a consumer group has not read yet are lost
that way (and pending ones are gone when reclaimed): a bounded stream trades loss for memory.
Send option: `headers=` (str to str, not the CloudEvents ones streamtools sets, nor `body`).
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Mapping, Sequence
from typing import Final

from streamtools._base import Producer
from streamtools._codec import Metadata
from streamtools._middleware import Middleware
from streamtools._settings import extra_headers, integer, seconds, send_options
from streamtools._types import Queue, T
from streamtools.errors import PublishError
from streamtools.transports.redis._endpoint import RedisEndpoint
from streamtools.transports.redis._errors import translate
from streamtools.transports.redis._wire import BINDING, BODY, FieldEncoder

SEND_OPTIONS: Final = frozenset({"headers"})


class RedisProducer(RedisEndpoint, Producer[T]):
    """Adds to a Redis stream; `send` returns once the server added the entry.

    Settings: `url=` (else `REDIS_URL`, else redis://localhost:6379/0; rediss:// is TLS),
    `username=`/`password=` (else the URL's, else `REDIS_USERNAME`/`REDIS_PASSWORD`), `ssl=`
    an SSLContext, `connect_timeout=`, `send_timeout=` (how long `send` waits, also through a
    lost connection), `max_length=` (None: unbounded; n: `MAXLEN ~ n`, dropping the oldest
    entries, read or not: loss). Send option: `headers=`.
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        url: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        max_length: int | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            source=source,
            validate=validate,
            middlewares=middlewares,
        )
        self._connect(
            f"producer {self.queue.name}",
            url=url,
            username=username,
            password=password,
            ssl=ssl,
            connect_timeout=connect_timeout,
        )
        owner = type(self).__name__
        self.send_timeout = seconds(owner, "send_timeout", send_timeout, positive=True)
        self.max_length = (
            None if max_length is None else integer(owner, "max_length", max_length, minimum=1)
        )
        self._fields = FieldEncoder()

    def __repr__(self) -> str:
        return f"RedisProducer({self.queue.name!r}, {self._settings.where})"

    async def _open(self) -> None:
        await self._client.start(self.connect_timeout)

    async def _close(self) -> None:
        await self._client.close()

    def _options(self, options: Mapping[str, object]) -> dict[str, str]:
        if not options:
            return {}
        send_options("RedisProducer", options, SEND_OPTIONS)
        return extra_headers(options, {*BINDING.owned, BODY})

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        fields = self._fields.encode(body, meta, self._options(options))
        stream, length = self.queue.name, self.max_length
        what = f"message {meta.id} to stream {stream!r}"
        try:
            async with asyncio.timeout(self.send_timeout):
                await self._client.call(
                    lambda r: r.xadd(stream, fields, maxlen=length, approximate=True), what=what
                )
        except TimeoutError:
            raise PublishError(
                f"{what}: not added by {self._settings.where} within {self.send_timeout} s; "
                "it may or may not have been stored"
            ) from None
        except PublishError:
            raise
        except Exception as exc:
            raise PublishError(str(translate(exc, self._settings, what))) from exc
