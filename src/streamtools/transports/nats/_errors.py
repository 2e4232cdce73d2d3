"""The one place nats-py errors become streamtools errors."""

from __future__ import annotations

import ssl

import nats.errors
import nats.js.errors

from streamtools.errors import ConfigurationError, ConnectError, StreamtoolsError
from streamtools.transports.nats._settings import Settings

AUTH_WORDS = ("authorization", "authentication", "auth ")


def is_auth(exc: BaseException | None) -> bool:
    """Whether `exc` is the server refusing the login."""
    if exc is None:
        return False
    if isinstance(exc, nats.errors.AuthorizationError):
        return True
    return any(word in str(exc).lower() for word in AUTH_WORDS)


def translate(
    exc: BaseException, settings: Settings, what: str, last: BaseException | None = None
) -> StreamtoolsError:
    """The streamtools error for `exc` (and `last`, the client's last reported error),
    naming what was done and where (never a secret)."""
    if isinstance(exc, StreamtoolsError):
        return exc
    if is_auth(exc) or is_auth(last):
        return ConfigurationError(
            f"{what}: {settings.where} refused the login (authorization violation); "
            f"{settings.login_hint}"
        )
    if isinstance(exc, nats.errors.InvalidUserCredentialsError):
        return ConfigurationError(f"{what}: {settings.login_hint}: {exc}")
    if isinstance(exc, nats.js.errors.ServiceUnavailableError | nats.errors.NoRespondersError):
        return ConfigurationError(
            f"{what}: {settings.where} has no JetStream; start nats-server with -js "
            "(jetstream {} in its configuration)"
        )
    if isinstance(exc, nats.js.errors.APIError):
        return ConfigurationError(
            f"{what}: {settings.where} refused it: {exc.description} (code {exc.err_code})"
        )
    tls = exc if isinstance(exc, ssl.SSLError) else last
    if isinstance(tls, ssl.SSLError):
        return ConnectError(
            f"{what}: TLS with {settings.where} failed ({tls}); check the ssl= context (the CA "
            "it trusts) against the server's certificate and name"
        )
    if isinstance(
        exc,
        nats.errors.NoServersError | nats.errors.TimeoutError | OSError | TimeoutError,
    ):
        detail = f" (last error: {last})" if last is not None and not is_auth(last) else ""
        return ConnectError(
            f"{what}: cannot reach {settings.where}{detail}; check NATS_URL or servers=, and "
            "that nats-server runs there"
        )
    return ConnectError(f"{what}: {settings.where} failed: {type(exc).__name__}: {exc}")
