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
from typing import Final

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


class Client:
    """One started AIOKafkaProducer (acks=all) and the send-until-acknowledged rule."""

    def __init__(self, settings: Settings, idempotence: bool | None, role: str) -> None:
        self.settings = settings
        self.idempotence = idempotence
        self.role = role
        self.producer: aiokafka.AIOKafkaProducer | None = None
        self._deadlines = Deadlines()

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

    async def publish(
        self,
        topic: str,
        body: bytes,
        headers: list[tuple[str, bytes]],
        key: bytes | None,
        *,
        timeout: float,
        what: str,
    ) -> None:
        """Produce and wait for the broker's acknowledgement, up to `timeout` seconds."""
        producer = self.producer
        if producer is None:
            raise PublishError(f"{what}: not sent, the {self.role} is closed")

        def again(exc: BaseException) -> None:
            # aiokafka gave up on this batch; the connection may come back.
            logger.info("produce interrupted, producing again: %s", exc, extra={"queue": topic})

        def expired() -> PublishError:
            return PublishError(
                f"{what}: not acknowledged by {self.settings.where} within {timeout} s; it "
                "may or may not have been stored"
            )

        try:
            await again_until_accepted(
                self._deadlines,
                timeout,
                lambda: producer.send_and_wait(topic, body, key=key, headers=headers),
                RETRIABLE,
                again,
                expired,
            )
        except aiokafka.errors.KafkaError as exc:
            raise PublishError(f"{what}: {self.settings.where} refused it: {exc}") from exc

    async def close(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
