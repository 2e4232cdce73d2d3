"""What NATS producers and consumers share: settings, the connection, trace names."""

from __future__ import annotations

import ssl as _ssl
from typing import ClassVar, Final
from urllib.parse import urlsplit

from streamtools._settings import integer, seconds
from streamtools.transports.nats._client import Client
from streamtools.transports.nats._settings import Settings, read_settings
from streamtools.transports.nats._streams import check_subject

TRANSPORT: Final = "NATSHandler"


class NATSEndpoint:
    """What NATS producers and consumers share: the connection settings, the client (a
    consumer's retry and dead-letter copies go through it too), the trace attributes."""

    transport: ClassVar[str] = TRANSPORT
    messaging_system: ClassVar[str] = "nats"
    _settings: Settings
    _client: Client
    connect_timeout: float
    replicas: int

    @property
    def server_address(self) -> tuple[str, int] | None:
        """The first server."""
        parts = urlsplit(self._settings.servers[0])
        return parts.hostname or "localhost", parts.port or 4222

    def _connect(
        self,
        role: str,
        queue: str,
        *,
        servers: str | None,
        user: str | None,
        password: str | None,
        token: str | None,
        creds: str | None,
        ssl: _ssl.SSLContext | None,
        connect_timeout: float,
        replicas: int,
    ) -> None:
        owner = type(self).__name__
        check_subject(owner, queue)
        self._settings = read_settings(owner, servers, user, password, token, creds, ssl)
        self.connect_timeout = seconds(owner, "connect_timeout", connect_timeout, positive=True)
        self.replicas = integer(owner, "replicas", replicas, minimum=1)
        self._client = Client(self._settings, role)
