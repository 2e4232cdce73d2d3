"""What Redis producers and consumers share: settings, the client, trace names."""

from __future__ import annotations

import ssl as _ssl
from typing import ClassVar, Final

from streamtools._settings import seconds
from streamtools.transports.redis._client import Client
from streamtools.transports.redis._settings import Settings, read_settings

TRANSPORT: Final = "RedisHandler"


class RedisEndpoint:
    """The connection settings, the client, and the trace attributes."""

    transport: ClassVar[str] = TRANSPORT
    messaging_system: ClassVar[str] = "redis"
    _settings: Settings
    _client: Client
    connect_timeout: float

    @property
    def server_address(self) -> tuple[str, int] | None:
        return self._settings.host, self._settings.port

    def _connect(
        self,
        role: str,
        *,
        url: str | None,
        username: str | None,
        password: str | None,
        ssl: _ssl.SSLContext | None,
        connect_timeout: float,
    ) -> None:
        owner = type(self).__name__
        self._settings = read_settings(owner, url, username, password, ssl)
        self.connect_timeout = seconds(owner, "connect_timeout", connect_timeout, positive=True)
        self._client = Client(self._settings, role)
