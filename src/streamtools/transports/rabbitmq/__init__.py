"""The RabbitMQ transport on aio-pika (being split into modules by job; see `_consumer`)."""

from streamtools.transports.rabbitmq._consumer import (
    RabbitMQConsumer,
    RabbitMQProducer,
)
from streamtools.transports.rabbitmq._consumer import (
    _properties as _properties,  # benchmarks/common.py builds properties with it
)
from streamtools.transports.rabbitmq._consumer import (
    _Stamp as _Stamp,
)
from streamtools.transports.rabbitmq._consumer import (
    _WiredProperties as _WiredProperties,
)

__all__ = ["RabbitMQConsumer", "RabbitMQProducer"]
