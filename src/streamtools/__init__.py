"""streamtools: typed, async messaging between microservices over HTTP, RabbitMQ or in memory."""

from streamtools._base import Capabilities, Consumer, Producer, Route
from streamtools._batching import Batch, BatchHandler
from streamtools._codec import Metadata, current_metadata
from streamtools._contracts import register_contracts, registered_contracts
from streamtools._factory import HandleMsgs, HandlerFactory
from streamtools._middleware import ConsumeNext, Middleware, PublishNext
from streamtools._public import report_as as _report_as
from streamtools._registry import (
    CONSUMER_LOOPS,
    CONSUMERS,
    HTTP,
    KAFKA,
    MEMORY,
    NATS,
    PRODUCERS,
    REDIS,
    RMQ,
    ConsumerClass,
    ProducerClass,
    Registry,
)
from streamtools._routing import ConsumerFactory
from streamtools._runner import ConsumerRunner
from streamtools._schema import enforce_schema, field_check, schema_registry
from streamtools._settings import Limits, RetryPolicy
from streamtools._telemetry import configure_tracing, enable_metrics
from streamtools._types import Handler, Queue
from streamtools.errors import (
    BatchError,
    CodecError,
    CodegenError,
    ConfigurationError,
    ConnectError,
    DecodeError,
    DeliveryError,
    EncodeError,
    HandlerError,
    OutsideHandlerError,
    PublishError,
    QueueNameError,
    ReplyTimeoutError,
    StreamtoolsError,
    UnknownQueueError,
    UnknownTransportError,
    UnsupportedError,
    ValidationError,
)

__all__ = [
    "CONSUMERS",
    "CONSUMER_LOOPS",
    "HTTP",
    "KAFKA",
    "MEMORY",
    "NATS",
    "PRODUCERS",
    "REDIS",
    "RMQ",
    "Batch",
    "BatchError",
    "BatchHandler",
    "Capabilities",
    "CodecError",
    "CodegenError",
    "ConfigurationError",
    "ConnectError",
    "ConsumeNext",
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
    "Limits",
    "Metadata",
    "Middleware",
    "OutsideHandlerError",
    "Producer",
    "ProducerClass",
    "PublishError",
    "PublishNext",
    "Queue",
    "QueueNameError",
    "Registry",
    "ReplyTimeoutError",
    "RetryPolicy",
    "Route",
    "StreamtoolsError",
    "UnknownQueueError",
    "UnknownTransportError",
    "UnsupportedError",
    "ValidationError",
    "configure_tracing",
    "current_metadata",
    "enable_metrics",
    "enforce_schema",
    "field_check",
    "register_contracts",
    "registered_contracts",
    "schema_registry",
]


_report_as(__name__, (globals()[name] for name in __all__))
