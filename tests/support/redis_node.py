"""A private redis-server for tests that restart it, or need ACL users or TLS.

The shared server on 6379 must never be restarted, so these tests run their own: a spare
port, its data in a temporary directory, `appendonly yes` with `appendfsync always` (an entry
XADD returned for survives a restart), and optionally an ACL user or a TLS port.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.conftest import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT = 20.0


class RedisNodeError(RuntimeError):
    """The private server did not start; the message carries the end of its log."""


class RedisNode:
    """`start()`, `stop()` (SIGTERM, waits), `kill()` (SIGKILL), `restart()`, `cleanup()`."""

    def __init__(self, *, extra: list[str] | None = None, tls: Path | None = None) -> None:
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="st-redis-", dir="/tmp"))
        self.extra = list(extra or [])
        self.tls = tls  # a directory holding server.pem, server.key and ca.pem
        self._proc: subprocess.Popen[bytes] | None = None
        self.log = self.base / "redis.log"

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def _argv(self) -> list[str]:
        argv = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.base),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--logfile",
            str(self.log),
        ]
        if self.tls is not None:
            argv += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls / "server.pem"),
                "--tls-key-file",
                str(self.tls / "server.key"),
                "--tls-ca-cert-file",
                str(self.tls / "ca.pem"),
                "--tls-auth-clients",
                "no",
            ]
        else:
            argv += ["--port", str(self.port)]
        return argv + self.extra

    def start(self) -> None:
        self._proc = subprocess.Popen(
            self._argv(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.5),
            ):
                return
            time.sleep(0.05)
        tail = self.log.read_text()[-2000:] if self.log.exists() else ""
        self.cleanup()  # the tests start a node before their try: leave nothing behind
        raise RedisNodeError(f"redis-server on {self.port} did not start:\n{tail}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

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
