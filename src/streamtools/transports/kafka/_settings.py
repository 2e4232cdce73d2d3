"""The Kafka transport's connection settings: keywords, else the environment, read once.

The SASL password only ever goes into aiokafka's keywords (`Settings.client()`): it is out of
the settings' repr, and `where` (what errors and reprs name) shows the user, not it.
"""

from __future__ import annotations

import os
import ssl as _ssl
from dataclasses import dataclass, field
from typing import Any, Final

from streamtools._settings import choice, integer
from streamtools.errors import ConfigurationError

SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str
    client_id: str
    ssl: _ssl.SSLContext | None
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: str | None = field(repr=False)
    partitions: int
    replication_factor: int | None

    @property
    def security_protocol(self) -> str:
        if self.sasl_mechanism is not None:
            return "SASL_SSL" if self.ssl is not None else "SASL_PLAINTEXT"
        return "SSL" if self.ssl is not None else "PLAINTEXT"

    def client(self) -> dict[str, Any]:
        """aiokafka's connection keywords (the password only ever goes here)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
        }
        if self.ssl is not None:
            options["ssl_context"] = self.ssl
        if self.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password
        return options

    @property
    def where(self) -> str:
        user = f" as {self.sasl_username!r}" if self.sasl_username else ""
        return f"Kafka at {self.bootstrap_servers}{user}"


def read_settings(
    owner: str,
    bootstrap_servers: str | None,
    client_id: str | None,
    ssl: _ssl.SSLContext | None,
    sasl_mechanism: str | None,
    sasl_username: str | None,
    sasl_password: str | None,
    partitions: int,
    replication_factor: int | None,
) -> Settings:
    # Environment read once, here; explicit keywords win.
    env = os.environ.get
    servers = bootstrap_servers or env("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092"
    if not all(part.strip().rpartition(":")[0] for part in servers.split(",")):
        raise ConfigurationError(
            f"{owner}: bootstrap_servers must be 'host:port[,host:port...]', got {servers!r}"
        )
    mechanism = sasl_mechanism or env("KAFKA_SASL_MECHANISM") or None
    username = sasl_username or env("KAFKA_SASL_USERNAME") or None
    password = sasl_password or env("KAFKA_SASL_PASSWORD") or None
    if mechanism is not None:
        mechanism = choice(owner, "sasl_mechanism", mechanism.upper(), SASL_MECHANISMS)
        if not username or not password:
            raise ConfigurationError(
                f"{owner}: SASL {mechanism} needs a username and a password "
                "(sasl_username=/sasl_password= or KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD)"
            )
    elif username or password:
        raise ConfigurationError(
            f"{owner}: a SASL username or password is set but no mechanism; pass "
            f"sasl_mechanism= (or KAFKA_SASL_MECHANISM): one of {', '.join(SASL_MECHANISMS)}"
        )
    if ssl is not None and not isinstance(ssl, _ssl.SSLContext):
        raise ConfigurationError(f"{owner}: ssl must be an ssl.SSLContext, got {ssl!r}")
    factor = (
        None
        if replication_factor is None
        else integer(owner, "replication_factor", replication_factor, minimum=1)
    )
    return Settings(
        servers.replace(" ", ""),
        client_id or env("KAFKA_CLIENT_ID") or "streamtools",
        ssl,
        mechanism,
        username,
        password,
        integer(owner, "partitions", partitions, minimum=1),
        factor,
    )
