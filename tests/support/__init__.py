"""Test infrastructure: a cuttable TCP proxy and a private RabbitMQ node."""

from tests.support.rabbit_node import RabbitNode, RabbitNodeError, amqp_answers
from tests.support.tcp_proxy import TcpProxy

__all__ = ["RabbitNode", "RabbitNodeError", "TcpProxy", "amqp_answers"]
