"""streamtools: typed, async messaging between microservices over HTTP, RabbitMQ or in memory."""

from streamtools._base import Capabilities, Consumer, Producer, Route
from streamtools._codec import Metadata, current_metadata
from streamtools._contracts import register_contracts, registered_contracts
from streamtools._helpers import ConsumerFactory, ConsumerRunner, HandleMsgs, HandlerFactory
from streamtools._registry import (
    CONSUMER_LOOPS,
    CONSUMERS,
    HTTP,
    MEMORY,
    PRODUCERS,
    RMQ,
    ConsumerClass,
    ProducerClass,
    Registry,
    UnknownTransportError,
)
from streamtools._types import Handler, Queue
from streamtools.errors import (
    CodecError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    DeliveryError,
    EncodeError,
    HandlerError,
    PublishError,
    ReplyTimeoutError,
    StreamtoolsError,
    UnsupportedError,
    ValidationError,
)

__all__ = [
    "CONSUMERS",
    "CONSUMER_LOOPS",
    "HTTP",
    "MEMORY",
    "PRODUCERS",
    "RMQ",
    "Capabilities",
    "CodecError",
    "ConfigurationError",
    "ConnectError",
    "Consumer",
    "ConsumerClass",
    "ConsumerFactory",
    "ConsumerRunner",
    "DecodeError",
    "DeliveryError",
    "EncodeError",
    "HandleMsgs",
    "Handler",
    "HandlerError",
    "HandlerFactory",
    "Metadata",
    "Producer",
    "ProducerClass",
    "PublishError",
    "Queue",
    "Registry",
    "ReplyTimeoutError",
    "Route",
    "StreamtoolsError",
    "UnknownTransportError",
    "UnsupportedError",
    "ValidationError",
    "current_metadata",
    "register_contracts",
    "registered_contracts",
]
