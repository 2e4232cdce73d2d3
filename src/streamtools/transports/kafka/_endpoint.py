"""What Kafka producers and consumers share: settings, the producing client, trace names."""

from __future__ import annotations

import ssl as _ssl
from typing import ClassVar, Final

from streamtools._settings import seconds
from streamtools.errors import ConfigurationError
from streamtools.transports.kafka._client import Client
from streamtools.transports.kafka._settings import Settings, read_settings

TRANSPORT: Final = "KafkaHandler"


class KafkaEndpoint:
    """What Kafka producers and consumers share: the connection settings, the producing
    client (a consumer's retry and dead-letter copies), and the trace attributes."""

    transport: ClassVar[str] = TRANSPORT
    messaging_system: ClassVar[str] = "kafka"
    _settings: Settings
    _client: Client
    connect_timeout: float

    @property
    def server_address(self) -> tuple[str, int] | None:
        """The first bootstrap server."""
        host, _, port = self._settings.bootstrap_servers.split(",")[0].rpartition(":")
        return host, int(port) if port.isdigit() else 9092

    def _connect(
        self,
        role: str,
        *,
        bootstrap_servers: str | None,
        client_id: str | None,
        ssl: _ssl.SSLContext | None,
        sasl_mechanism: str | None,
        sasl_username: str | None,
        sasl_password: str | None,
        connect_timeout: float,
        idempotence: bool | None,
        partitions: int,
        replication_factor: int | None,
    ) -> None:
        owner = type(self).__name__
        self._settings = read_settings(
            owner,
            bootstrap_servers,
            client_id,
            ssl,
            sasl_mechanism,
            sasl_username,
            sasl_password,
            partitions,
            replication_factor,
        )
        self.connect_timeout = seconds(owner, "connect_timeout", connect_timeout, positive=True)
        if idempotence is not None and not isinstance(idempotence, bool):
            raise ConfigurationError(f"{owner}: idempotence must be True, False or None")
        self._client = Client(self._settings, idempotence, role)
