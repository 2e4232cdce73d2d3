"""The producing client, shared by producers and by consumers' retry and dead-letter copies.

One started AIOKafkaProducer with `acks=all`; `idempotence=None` turns the idempotent producer
on where the broker supports it and off, with one log line, where it refuses it. A send
waits for the broker's acknowledgement, producing again through a lost connection, up to its
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, Final

import aiokafka  # type: ignore[import-untyped]
import aiokafka.errors  # type: ignore[import-untyped]

from streamtools._deadlines import Deadlines, again_until_accepted
from streamtools.errors import PublishError
from streamtools.transports.kafka._errors import translate
from streamtools.transports.kafka._settings import Settings

logger = logging.getLogger("streamtools.kafka")

# Brokers of this process that refused the idempotent producer: asked once, not per client.
NO_IDEMPOTENCE: set[str] = set()
# Kafka errors after which a send may succeed once the connection is back.
RETRIABLE: Final = (aiokafka.errors.KafkaConnectionError, aiokafka.errors.KafkaTimeoutError)
# Any other Kafka error: the broker refused the record.
REFUSED: Final = (aiokafka.errors.KafkaError,)


class Client:
    """One started AIOKafkaProducer (acks=all) and the send-until-acknowledged rule."""

    def __init__(self, settings: Settings, idempotence: bool | None, role: str) -> None:
        self.settings = settings
        self.idempotence = idempotence
        self.role = role
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self._deadlines = Deadlines()
        # Bound once, not per send (see publish)
        self._on_retry = self._again
        self._on_expiry = self._expired
        self._on_refusal = self._refused

    async def start(self, timeout: float) -> None:
        wanted = [True, False] if self.idempotence is None else [self.idempotence]
        if self.idempotence is None and self.settings.bootstrap_servers in NO_IDEMPOTENCE:
            wanted = [False]
        for idempotent in wanted:
            producer = aiokafka.AIOKafkaProducer(
                **self.settings.client(),
                acks="all",
                enable_idempotence=idempotent,
                request_timeout_ms=int(timeout * 1000),
            )
            try:
                async with asyncio.timeout(timeout):
                    # An idempotent producer gets its producer id here: a broker that
                    # refuses idempotence says so now, not at the first send.
                    await producer.start()
            except (aiokafka.errors.KafkaError, OSError, TimeoutError) as exc:
                with contextlib.suppress(Exception):
                    await producer.stop()
                if (
                    idempotent
                    and self.idempotence is None
                    and not isinstance(
                        exc, aiokafka.errors.KafkaConnectionError | OSError | TimeoutError
                    )
                ):
                    NO_IDEMPOTENCE.add(self.settings.bootstrap_servers)
                    logger.info(
                        "%s refuses the idempotent producer (%s); producing without it",
                        self.settings.where,
                        type(exc).__name__,
                        extra={"role": self.role},
                    )
                    continue
                raise translate(exc, self.settings, f"{self.role}: connecting") from exc
            self.producer = producer
            return

    def publish(
        self,
        topic: str,
        body: bytes,
        headers: list[tuple[str, bytes]],
        key: bytes | None,
        *,
        timeout: float,
        what: str,
    ) -> Coroutine[Any, Any, None]:
        """Produce and wait for the broker's acknowledgement, up to `timeout` seconds.

        Returns the waiting coroutine itself (no frame of its own: a send in flight holds
        fewer objects for the garbage collector to walk).
        """
        producer = self.producer
        if producer is None:
            raise PublishError(f"{what}: not sent, the {self.role} is closed")
        return again_until_accepted(
            self._deadlines,
            timeout,
            self._produce,
            (producer, topic, body, key, headers),
            RETRIABLE,
            self._on_retry,
            self._on_expiry,
            what,
            REFUSED,
            self._on_refusal,
        )

    @staticmethod
    async def _produce(
        producer: aiokafka.AIOKafkaProducer,
        topic: str,
        body: bytes,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        # send_and_wait's two steps: queued in a batch, then the batch acknowledged.
        acknowledged = await producer.send(topic, body, key=key, headers=headers)
        await acknowledged

    def _again(self, exc: BaseException, what: str) -> None:
        # aiokafka gave up on this batch; the connection may come back.
        logger.info(
            "produce interrupted, producing again: %s", exc, extra={"role": self.role, "what": what}
        )

    def _refused(self, exc: BaseException, what: str) -> PublishError:
        return PublishError(f"{what}: {self.settings.where} refused it: {exc}")

    def _expired(self, what: str, timeout: float) -> PublishError:
        return PublishError(
            f"{what}: not acknowledged by {self.settings.where} within {timeout} s; it "
            "may or may not have been stored"
        )

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
