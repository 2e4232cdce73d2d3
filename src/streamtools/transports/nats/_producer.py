"""`NATSProducer`: publishes to the queue's subject; `send` returns once JetStream stored it.

`send` waits for the PubAck (`send_timeout=`, 30 s, publishing again through a lost
connection; the `Nats-Msg-Id` header, the message id, makes JetStream store a message sent
twice within its duplicate window once). A PubAck error is a PublishError. Send option:
`headers=` (str to str, not the ones streamtools sets). `request()` waits for the handler's
reply on a core NATS inbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl as _ssl
from collections.abc import Mapping, Sequence
from typing import Final

import nats.errors

from streamtools._base import Producer
from streamtools._binding import content_type
from streamtools._codec import Metadata
from streamtools._delivery import dead_letter_queue
from streamtools._middleware import Middleware
from streamtools._settings import extra_headers, seconds, send_options
from streamtools._types import Queue, T
from streamtools.errors import PublishError, ReplyTimeoutError
from streamtools.transports.nats._endpoint import NATSEndpoint
from streamtools.transports.nats._errors import translate
from streamtools.transports.nats._streams import ensure_streams
from streamtools.transports.nats._wire import (
    BINDING,
    OWNED,
    REPLY_ERROR,
    REPLY_TO,
    message_headers,
)

SEND_OPTIONS: Final = frozenset({"headers"})


class NATSProducer(NATSEndpoint, Producer[T]):
    """Publishes to a JetStream stream; `send` returns once the server stored the message.

    Settings: `servers=` (else `NATS_URL`, else nats://localhost:4222; comma-separated for a
    cluster), `user=`/`password=`, `token=` or `creds=` (a credentials file; else
    `NATS_USER`/`NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS`), `ssl=` an SSLContext,
    `connect_timeout=`, `send_timeout=` (how long `send` waits for the PubAck, also through
    a lost connection), `replicas=` for the streams it creates. Send option: `headers=`.
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        servers: str | None = None,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        replicas: int = 1,
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
            self.queue.name,
            servers=servers,
            user=user,
            password=password,
            token=token,
            creds=creds,
            ssl=ssl,
            connect_timeout=connect_timeout,
            replicas=replicas,
        )
        owner = type(self).__name__
        self.send_timeout = seconds(owner, "send_timeout", send_timeout, positive=True)

    def __repr__(self) -> str:
        return f"NATSProducer({self.queue.name!r}, {self._settings.where})"

    async def _open(self) -> None:
        name = self.queue.name
        await self._client.connect(self.connect_timeout)
        try:
            _, js = self._client.require()
            await ensure_streams(js, self._settings, (name, dead_letter_queue(name)), self.replicas)
        except BaseException:
            await self._client.close()
            raise

    async def _close(self) -> None:
        await self._client.close()

    def _options(self, options: Mapping[str, object]) -> dict[str, str]:
        if not options:
            return {}
        send_options("NATSProducer", options, SEND_OPTIONS)
        return extra_headers(options, OWNED)

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        await self._client.publish(
            self.queue.name,
            body,
            message_headers(meta, self._options(options)),
            timeout=self.send_timeout,
            what=f"message {meta.id} to stream {self.queue.name!r}",
        )

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        extra = self._options(options)
        nc, _ = self._client.require()
        inbox = nc.new_inbox()
        try:
            subscription = await nc.subscribe(inbox, max_msgs=1)
        except nats.errors.Error as exc:
            raise translate(exc, self._settings, f"request {meta.id}: subscribing") from exc
        try:
            async with asyncio.timeout(timeout):
                await self._client.publish(
                    self.queue.name,
                    body,
                    message_headers(meta, {**extra, REPLY_TO: inbox}),
                    timeout=min(timeout, self.send_timeout),
                    what=f"request {meta.id} to stream {self.queue.name!r}",
                )
                reply = await subscription.next_msg(timeout=None)  # bounded by `timeout`
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply to message {meta.id} on {self.queue.name!r} within {timeout} s; "
                "is a consumer running?"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        headers = reply.headers or {}
        if REPLY_ERROR in headers:
            raise PublishError(headers[REPLY_ERROR])
        ct = content_type(headers.get(BINDING.content_type_header or "Content-Type"))
        return reply.data, ct
