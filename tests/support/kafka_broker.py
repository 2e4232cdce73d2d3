"""The bundled Kafka-protocol broker for the tests (it lives in examples/, the demo uses it too)."""

from examples.tansu import KafkaBrokerError, TansuBroker, provided_bootstrap_servers

__all__ = ["KafkaBrokerError", "TansuBroker", "provided_bootstrap_servers"]
