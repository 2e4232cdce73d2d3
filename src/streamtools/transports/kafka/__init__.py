"""The Kafka transport, moved into a package (split by job in the next commit)."""

from streamtools.transports.kafka._consumer import (
    _NO_IDEMPOTENCE as _NO_IDEMPOTENCE,
)
from streamtools.transports.kafka._consumer import (
    KafkaConsumer,
    KafkaProducer,
)
from streamtools.transports.kafka._consumer import (
    _headers as _headers,
)

__all__ = ["KafkaConsumer", "KafkaProducer"]
