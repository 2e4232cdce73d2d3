"""`KafkaProducer`: produces to the queue's topic; `send` returns once acknowledged (acks=all).

Send options: `key=` (records with one key go to one partition and keep their order) and
`headers=` (str to str, not the CloudEvents ones streamtools sets).
"""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, Final

from streamtools._base import Producer
from streamtools._codec import Metadata
from streamtools._delivery import dead_letter_queue
from streamtools._middleware import Middleware
from streamtools._settings import extra_headers, seconds, send_options
from streamtools._types import Queue, T
from streamtools.errors import ConfigurationError
from streamtools.transports.kafka._endpoint import KafkaEndpoint
from streamtools.transports.kafka._topics import ensure_topics
from streamtools.transports.kafka._wire import BINDING, HeaderEncoder

SEND_OPTIONS: Final = frozenset({"key", "headers"})


class KafkaProducer(KafkaEndpoint, Producer[T]):
    """Produces to a Kafka topic; `send` returns once the broker acknowledged (acks=all).

    Settings: `bootstrap_servers=` (else `KAFKA_BOOTSTRAP_SERVERS`, else localhost:9092),
    `client_id=`, `ssl=` an SSLContext, `sasl_mechanism=` (PLAIN, SCRAM-SHA-256/512) with
    `sasl_username=`/`sasl_password=` (else `KAFKA_SASL_*`), `send_timeout=` (how long `send`
    waits, also through a lost connection), `idempotence=` (None: where supported),
    `partitions=`/`replication_factor=` for the topics it creates. Send options: `key=` and
    `headers=`.
    """

    def __init__(
        self,
        queue: Queue[T] | str,
        *,
        message_type: type[T] | None = None,
        source: str | None = None,
        validate: bool = True,
        middlewares: Sequence[Middleware] = (),
        bootstrap_servers: str | None = None,
        client_id: str | None = None,
        ssl: _ssl.SSLContext | None = None,
        sasl_mechanism: str | None = None,
        sasl_username: str | None = None,
        sasl_password: str | None = None,
        connect_timeout: float = 10.0,
        send_timeout: float = 30.0,
        idempotence: bool | None = None,
        partitions: int = 3,
        replication_factor: int | None = None,
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
            bootstrap_servers=bootstrap_servers,
            client_id=client_id,
            ssl=ssl,
            sasl_mechanism=sasl_mechanism,
            sasl_username=sasl_username,
            sasl_password=sasl_password,
            connect_timeout=connect_timeout,
            idempotence=idempotence,
            partitions=partitions,
            replication_factor=replication_factor,
        )
        owner = type(self).__name__
        self.send_timeout = seconds(owner, "send_timeout", send_timeout, positive=True)
        self._headers = HeaderEncoder()

    def __repr__(self) -> str:
        return f"KafkaProducer({self.queue.name!r}, {self._settings.where})"

    async def _open(self) -> None:
        name = self.queue.name
        topics = (name, dead_letter_queue(name))
        await ensure_topics(self._settings, topics, self.connect_timeout)
        await self._client.start(self.connect_timeout)

    async def _close(self) -> None:
        await self._client.close()

    def _options(self, options: Mapping[str, object]) -> tuple[bytes | None, dict[str, str]]:
        if not options:
            return None, {}
        send_options("KafkaProducer", options, SEND_OPTIONS)
        key = options.get("key")
        if key is not None and not isinstance(key, str | bytes):
            raise ConfigurationError(f"send option key must be str or bytes, got {key!r}")
        headers = extra_headers(options, BINDING.owned)
        return (key.encode() if isinstance(key, str) else key), headers

    def _send(  # returns the client's coroutine: one frame less
        self, body: bytes, meta: Metadata, options: Mapping[str, object]
    ) -> Coroutine[Any, Any, None]:
        key, extra = self._options(options)
        return self._client.publish(
            self.queue.name,
            body,
            self._headers.encode(meta, extra),
            key,
            timeout=self.send_timeout,
            what=f"message {meta.id} to topic {self.queue.name!r}",
        )
