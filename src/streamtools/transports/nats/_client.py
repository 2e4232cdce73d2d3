"""One NATS connection, shared by a producer or consumer and its JetStream publishes.

nats-py reconnects by itself (`max_reconnect_attempts=-1`, every server of the list in
turn) and re-subscribes every subscription on the new connection, a pull subscription's
inbox too; a fetch pending during the cut just times out and the next one goes out on the
new connection. A publish waits for the JetStream PubAck and is sent again through a lost
connection or an unavailable JetStream until its timeout: the `Nats-Msg-Id` header makes
the server drop a second copy within the stream's duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from streamtools._deadlines import Deadlines, again_until_accepted
from streamtools.errors import ConfigurationError, PublishError
from streamtools.transports.nats._errors import is_auth, translate
from streamtools.transports.nats._settings import Settings

logger = logging.getLogger("streamtools.nats")

MSG_ID: Final = "Nats-Msg-Id"
# Errors after which a publish may succeed once the connection (or JetStream) is back.
RETRIABLE: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
)
_RECONNECT_WAIT: Final = 1  # seconds (nats-py takes whole ones)
_ATTEMPT_TIMEOUT: Final = 5.0  # one PubAck wait; the publish goes again until its timeout


class Client:
    """A connected nats-py client and its JetStream context."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.nc: NATS | None = None
        self.js: JetStreamContext | None = None
        self.last_error: BaseException | None = None
        self.reconnects = 0
        self._deadlines = Deadlines()
        self._refused: asyncio.Event | None = None
        self.refusal: BaseException | None = None  # the server refused the first login

    async def _error(self, exc: Exception) -> None:
        self.last_error = exc
        if self._refused is not None and is_auth(exc):
            self.refusal = exc
            self._refused.set()  # the first connect gives up at once: retrying cannot help
        logger.warning("%s: %s", self.settings.where, exc, extra={"role": self.role})

    async def _disconnected(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            logger.warning("disconnected from %s; reconnecting", self.settings.where)

    async def _reconnected(self) -> None:
        self.reconnects += 1
        logger.info("reconnected to %s", self.settings.where, extra={"role": self.role})

    async def connect(self, timeout: float) -> None:
        nc = NATS()
        refused = self._refused = asyncio.Event()
        loop = asyncio.get_running_loop()
        connecting = loop.create_task(
            nc.connect(
                **self.settings.client(),
                name=f"streamtools {self.role}",
                connect_timeout=max(1, min(int(timeout), 5)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=_RECONNECT_WAIT,
                error_cb=self._error,
                disconnected_cb=self._disconnected,
                reconnected_cb=self._reconnected,
            )
        )
        waiting = loop.create_task(refused.wait())
        try:
            try:
                done, _ = await asyncio.wait(
                    {connecting, waiting}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waiting.cancel()
                if not connecting.done():
                    connecting.cancel()
                await asyncio.gather(connecting, waiting, return_exceptions=True)
                self._refused = None
            if self.refusal is not None:
                raise self.refusal
            if connecting not in done or connecting.cancelled():
                raise TimeoutError(f"not connected within {timeout} s")
            connecting.result()  # its error, if any
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            if isinstance(exc, Exception):
                raise translate(
                    exc, self.settings, f"{self.role}: connecting", self.last_error
                ) from None
            raise
        self.nc = nc
        self.js = nc.jetstream(timeout=timeout)

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def publish(
        self,
        subject: str,
        body: bytes,
        headers: dict[str, str],
        *,
        timeout: float,
        what: str,
    ) -> None:
        """Publish to JetStream and wait for its PubAck, up to `timeout` seconds.

        `headers` carries `Nats-Msg-Id`: a publish sent again after a lost PubAck is
        dropped by the server as a duplicate, not stored twice.
        """
        js = self.js
        if js is None:
            raise PublishError(f"{what}: not sent, the {self.role} is closed")

        try:
            await again_until_accepted(
                self._deadlines,
                timeout,
                self._publish_once,
                (js, subject, body, min(timeout, _ATTEMPT_TIMEOUT), headers),
                RETRIABLE,
                self._again,
                self._expired,
                what,
            )
        except nats.js.errors.APIError as exc:
            raise PublishError(
                f"{what}: {self.settings.where} refused it: {exc.description} (code {exc.err_code})"
            ) from exc
        except nats.errors.Error as exc:
            raise PublishError(f"{what}: {self.settings.where} failed: {exc}") from exc

    @staticmethod
    async def _publish_once(
        js: JetStreamContext, subject: str, body: bytes, timeout: float, headers: dict[str, str]
    ) -> None:
        await js.publish(subject, body, timeout=timeout, headers=headers)

    def _again(self, exc: BaseException, what: str) -> None:
        if is_auth(self.last_error):
            raise PublishError(
                f"{what}: {self.settings.where} refused the login; {self.settings.login_hint}"
            ) from exc
        logger.info(
            "publish not acknowledged (%s), publishing again",
            type(exc).__name__,
            extra={"role": self.role, "what": what},
        )

    def _expired(self, what: str, timeout: float) -> PublishError:
        return PublishError(
            f"{what}: not acknowledged by {self.settings.where} within {timeout} s; it "
            "may or may not have been stored (sent again with the same id it is stored once "
            "within the stream's duplicate window)"
        )

    def require(self) -> tuple[NATS, JetStreamContext]:
        if self.nc is None or self.js is None:
            raise ConfigurationError(f"the {self.role} is not connected")
        return self.nc, self.js

    async def close(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
