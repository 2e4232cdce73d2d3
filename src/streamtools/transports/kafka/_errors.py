"""The one place aiokafka errors become streamtools errors."""

from __future__ import annotations

import aiokafka.errors  # type: ignore[import-untyped]

from streamtools.errors import ConfigurationError, ConnectError, StreamtoolsError
from streamtools.transports.kafka._settings import Settings


def translate(exc: BaseException, settings: Settings, what: str) -> StreamtoolsError:
    """The streamtools error for `exc`, naming `what` was done and where (no password)."""
    if isinstance(exc, StreamtoolsError):
        return exc
    if isinstance(
        exc,
        aiokafka.errors.TopicAuthorizationFailedError
        | aiokafka.errors.GroupAuthorizationFailedError,
    ):
        return ConfigurationError(
            f"{what}: {settings.where} refused access ({type(exc).__name__}); check the "
            "user's ACLs on the topic and the consumer group"
        )
    if isinstance(
        exc, aiokafka.errors.IllegalSaslStateError | aiokafka.errors.UnsupportedSaslMechanismError
    ):
        return ConnectError(
            f"{what}: {settings.where} refused the SASL login ({type(exc).__name__}); check "
            "KAFKA_SASL_* or the sasl_ settings"
        )
    if isinstance(exc, aiokafka.errors.KafkaConnectionError | OSError | TimeoutError):
        return ConnectError(
            f"{what}: cannot reach {settings.where}: {exc or type(exc).__name__}; check "
            "KAFKA_BOOTSTRAP_SERVERS or bootstrap_servers=, and that the broker runs there"
        )
    return ConnectError(f"{what}: {settings.where} failed: {type(exc).__name__}: {exc}")
