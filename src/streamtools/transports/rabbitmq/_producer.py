"""The RabbitMQ producer: confirmed, persistent sends, and requests answered by direct
reply-to.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections.abc import Mapping, Sequence
from typing import Final

from streamtools._base import Producer
from streamtools._binding import CE
from streamtools._codec import Metadata
from streamtools._middleware import Middleware
from streamtools._settings import seconds
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError, ReplyTimeoutError
from streamtools.transports.rabbitmq._link import REPLY_TO, _Link, _RabbitEndpoint
from streamtools.transports.rabbitmq._settings import Failover, QueueType, _settings
from streamtools.transports.rabbitmq._topology import _topology
from streamtools.transports.rabbitmq._wire import _properties, _Stamp

_SEND_OPTIONS: Final = frozenset({"expiration", "headers"})


class RabbitMQProducer(_RabbitEndpoint, Producer[T]):
    """Publishes to a RabbitMQ queue with publisher confirms; `send` returns once confirmed.

    Settings: `url=` (else `RMQ_URL`, else `RMQ_HOST`/`RMQ_PORT`/`RMQ_USER`/`RMQ_PASS`/
    `RMQ_VHOST`), one address or several (a sequence, or a comma-separated list) tried in
    order or shuffled (`failover=`, else `RMQ_FAILOVER`) when connecting and after a lost
    connection; `ssl=` an SSLContext for amqps, `connect_timeout` for the first connection
    (per address), `send_timeout` for how long `send` waits (also through a reconnect or a
    failover) for the confirm, `queue_type` matching the consumers'. Send options: `headers`
    (extra AMQP headers) and `expiration` (seconds; an expired message goes to `<queue>.dlq`).
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        url: str | Sequence[str] | None = None,
        ssl: _ssl.SSLContext | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        queue_type: QueueType = "quorum",
        failover: Failover | None = None,
    ) -> None:
        super().__init__(
            queue,
            message_type=message_type,
            source=source,
            validate=validate,
            middlewares=middlewares,
        )
        self._settings = _settings(
            type(self).__name__, url, ssl, connect_timeout, queue_type, failover
        )
        self.send_timeout = seconds(
            type(self).__name__, "send_timeout", send_timeout, positive=True
        )
        self._link = _Link(self._settings, f"producer {self.queue.name}")
        self._stamp = _Stamp(self._codec.type_name, self.source, self._codec.content_type)

    def __repr__(self) -> str:
        return f"RabbitMQProducer({self.queue.name!r}, url={self._settings.redacted!r})"

    async def _open(self) -> None:
        await self._link.open()
        try:
            await self._link.declare(_topology(self.queue.name, self._settings.queue_type, 0))
        except BaseException:
            await self._link.close()
            raise

    async def _close(self) -> None:
        await self._link.close()

    def _options(self, options: Mapping[str, object]) -> tuple[dict[str, object], float | None]:
        unknown = set(options) - _SEND_OPTIONS
        if unknown:
            raise ConfigurationError(
                f"RabbitMQProducer.send has no option {', '.join(sorted(unknown))}; "
                f"accepted: {', '.join(sorted(_SEND_OPTIONS))}"
            )
        headers = options.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(isinstance(k, str) for k in headers):
            raise ConfigurationError("send option headers must be a mapping of str to values")
        reserved = [k for k in headers if k in CE.owned]
        if reserved:
            raise ConfigurationError(
                f"send option headers may not set {', '.join(sorted(reserved))}; "
                "streamtools sets them"
            )
        expiration = options.get("expiration")
        if expiration is not None and (
            isinstance(expiration, bool)
            or not isinstance(expiration, int | float)
            or expiration < 0
        ):
            raise ConfigurationError(
                f"send option expiration must be seconds >= 0, got {expiration!r}"
            )
        return dict(headers), (float(expiration) if expiration is not None else None)

    async def _send(self, body: bytes, meta: Metadata, options: Mapping[str, object]) -> None:
        if options:
            headers, expiration = self._options(options)
            properties = _properties(meta, headers=headers, expiration=expiration)
        else:  # the common case: no option to parse, the constant headers prebuilt
            properties = self._stamp.properties(meta)
        await self._link.publish(
            body,
            properties,
            self.queue.name,
            timeout=self.send_timeout,
            what=f"message {meta.id} to queue {self.queue.name!r}",
        )

    async def _request(
        self, body: bytes, meta: Metadata, timeout: float, options: Mapping[str, object]
    ) -> tuple[bytes, str]:
        headers, expiration = self._options(options) if options else ({}, None)
        future: asyncio.Future[tuple[bytes, str]] = asyncio.get_running_loop().create_future()
        self._link.replies[meta.id] = future
        try:
            async with asyncio.timeout(timeout):
                await self._link.publish(
                    body,
                    _properties(
                        meta,
                        headers=headers,
                        expiration=expiration,
                        reply_to=REPLY_TO,
                        # A reply goes to this connection only: the request is not worth
                        # keeping on disk once nobody can receive its answer.
                        persistent=False,
                    ),
                    self.queue.name,
                    timeout=min(self.send_timeout, timeout),
                    what=f"request {meta.id} to queue {self.queue.name!r}",
                    reply=True,
                )
                return await future
        except TimeoutError:
            raise ReplyTimeoutError(
                f"no reply to request {meta.id} on {self.queue.name!r} within {timeout} s; "
                "is a consumer running?"
            ) from None
        finally:
            self._link.replies.pop(meta.id, None)
