"""A private nats-server with JetStream for tests that restart or kill the server, or that
need a login the shared one (127.0.0.1:4222) does not have.

The server runs as our child process in its own session, on a spare port, with its own
JetStream store directory under a temporary directory: restarts reuse the store, so streams,
durable consumers and stored messages come back. `user=`/`password=` or `token=` make the
server require that login. Needs `nats-server` (2.9 or later; `ST_NATS_SERVER` to point
elsewhere than /usr/sbin/nats-server).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

NATS_SERVER = (
    os.environ.get("ST_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 20.0


class NATSNodeError(RuntimeError):
    """The private server did not start or stop; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_answers(port: int, timeout: float = 1.0) -> bool:
    """True if a NATS server greets (INFO) on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as s:
            s.settimeout(timeout)
            return s.recv(4) == b"INFO"
    except OSError:
        return False


class NATSNode:
    """A private nats-server -js: `start()`, `stop()`, `restart()`, `kill()`, `cleanup()`.

    Blocking methods (bounded waits); the `a*` twins run them in a thread so an event loop
    with live clients keeps turning while the server goes down and comes back. Use as a
    context manager, which starts the server and always cleans up.
    """

    def __init__(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        port: int | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.tls = tls  # (certificate chain, private key): the server requires TLS
        self.user = user
        self.password = password
        self.token = token
        self.root = Path(tempfile.mkdtemp(prefix="st-nats-"))
        self.store = self.root / "store"
        self.log = self.root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _command(self) -> list[str]:
        command = [
            NATS_SERVER,
            "-a", "127.0.0.1",
            "-p", str(self.port),
            "-js",
            "-sd", str(self.store),
            "-l", str(self.log),
            "--server_name", f"st-test-{self.port}",
        ]  # fmt: skip
        if self.user is not None:
            command += ["--user", self.user, "--pass", self.password or ""]
        if self.token is not None:
            command += ["--auth", self.token]
        if self.tls is not None:
            command += ["--tls", "--tlscert", str(self.tls[0]), "--tlskey", str(self.tls[1])]
        return command

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            self._command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NATSNodeError(f"nats-server exited at start:\n{self._tail()}")
            # JetStream is ready once the server logs it (the port opens a little earlier).
            if nats_answers(self.port) and "Server is ready" in self._tail_full():
                return
            time.sleep(0.05)
        raise NATSNodeError(f"nats-server did not start in {START_TIMEOUT} s:\n{self._tail()}")

    def _tail_full(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server the way an operator does (SIGTERM), waiting for it to exit."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise NATSNodeError(f"nats-server ignored SIGTERM:\n{self._tail()}") from None
        with contextlib.suppress(OSError):
            self.log.write_text("")  # the next start waits for its own "Server is ready"

    def kill(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT)
        with contextlib.suppress(OSError):
            self.log.write_text("")

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def arestart(self) -> None:
        await asyncio.to_thread(self.restart)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
