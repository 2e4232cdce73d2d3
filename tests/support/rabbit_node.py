"""A private RabbitMQ node for tests that stop, restart or kill the broker.

The shared broker on 5672 must never be touched, so these tests run their own node: its own
node name, AMQP and distribution ports, data and log directories and Erlang cookie, all under a
temporary directory owned by the `rabbitmq` user (the server refuses to run as root). Restarts
reuse the data directory, so durable queues and persistent messages come back.

The node runs in the foreground as our child process, in its own session, instead of with
`-detached`: we then know its pid, reap it, and can kill its whole process group as a last
resort. It is stopped with `rabbitmqctl stop`, the way an operator stops a node. The private
cookie also means our `rabbitmqctl` calls cannot reach the shared node even by mistake.

Needs root (or the `rabbitmq` user) and the Debian/Ubuntu `rabbitmq-server` package.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

RABBITMQ_BIN = Path(os.environ.get("ST_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
_USER = "rabbitmq"


class RabbitNodeError(RuntimeError):
    """The private node did not start or stop; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def amqp_answers(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True if an AMQP broker answers the protocol header on host:port."""
    try:
        with socket.create_connection((host, port), timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            # A live broker answers with a connection.start method frame (frame type 1).
            return s.recv(1)[:1] == b"\x01"
    except OSError:
        return False


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), 0.5):
            return True
    except OSError:
        return False


class RabbitNode:
    """A private single RabbitMQ node: `start()`, `stop()`, `restart()`, `kill()`, `cleanup()`.

    Blocking methods (they wait for the node, bounded); the `a*` twins run them in a thread so
    an event loop with live clients keeps turning while the broker goes down and comes back.
    Use as a context manager, which starts the node and always cleans up.
    """

    def __init__(self, *, name: str | None = None) -> None:
        self.nodename = name or f"st-test-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="st-rmq-", dir="/tmp"))
        self.log_file = self.base / "log" / f"{self.nodename}.log"
        self._stdout = self.base / "log" / "stdout.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        try:
            self._user = pwd.getpwnam(_USER)
            self._prepare()
        except BaseException:
            shutil.rmtree(self.base, ignore_errors=True)
            raise

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _prepare(self) -> None:
        if os.geteuid() not in (0, self._user.pw_uid):
            raise RabbitNodeError(f"a private RabbitMQ node needs root or the {_USER!r} user")
        (self.base / "log").mkdir()
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            # the default 50MB limit blocks publishers on a nearly full CI disk
            "disk_free_limit.absolute = 1MB\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        # An empty env file: the system one names the shared node (NODENAME=rabbit@localhost).
        (self.base / "rabbitmq-env.conf").write_text("")
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        for path in [self.base, *self.base.rglob("*")]:
            os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _env(self) -> dict[str, str]:
        # Built from os.environ with every RABBITMQ_*/ERL_* of the caller dropped, so nothing
        # of a shared node's setup leaks into the private one.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_")) and k not in ("HOME", "NOTIFY_SOCKET")
        }
        env.update(
            HOME=str(self.base),  # the private .erlang.cookie, for the node and the CLI
            USER=_USER,
            LOGNAME=_USER,
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "pid"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        return env

    @property
    def _switch_user(self) -> bool:
        # The server and CLI run as the rabbitmq user; the server would refuse to run as root.
        return os.geteuid() != self._user.pw_uid

    def ctl(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run `rabbitmqctl -n <this node> ARGS` (bounded); the result, whatever its status."""
        return subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self._env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            user=self._user.pw_uid if self._switch_user else None,
            group=self._user.pw_gid if self._switch_user else None,
            extra_groups=[] if self._switch_user else None,
        )

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in (self._stdout, self.log_file):
            with contextlib.suppress(OSError):
                out.append(f"--- {path}\n" + "\n".join(path.read_text().splitlines()[-lines:]))
        return "\n".join(out)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the node and wait until it accepts AMQP connections and finished booting."""
        if self.running:
            raise RabbitNodeError(f"{self.nodename} is already running")
        if _port_open(self.port):
            raise RabbitNodeError(
                f"port {self.port} of {self.nodename} is taken by another process"
            )
        deadline = time.monotonic() + timeout
        with open(self._stdout, "ab") as out:
            self._proc = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self._env(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=self._user.pw_uid if self._switch_user else None,
                group=self._user.pw_gid if self._switch_user else None,
                extra_groups=[] if self._switch_user else None,
            )
        self.starts += 1
        while not amqp_answers(self.port):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RabbitNodeError(f"{self.nodename} exited ({code}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RabbitNodeError(f"{self.nodename} did not start:\n{self.log_tail()}")
            time.sleep(0.2)
        left = max(1.0, deadline - time.monotonic())
        done = self.ctl("await_startup", "--timeout", str(int(left)), timeout=left + 10)
        if done.returncode != 0:
            self.kill()
            raise RabbitNodeError(
                f"await_startup on {self.nodename} failed: {done.stderr}\n{self.log_tail()}"
            )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the node gracefully and wait until its process is gone and its port closed."""
        if self._proc is None:
            return
        proc = self._proc
        if proc.poll() is None:
            try:
                if self.ctl("stop", timeout=timeout).returncode != 0:
                    # The CLI could not reach it (still booting?): TERM is a graceful stop too.
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise RabbitNodeError(
                    f"{self.nodename} did not stop in {timeout}s; killed\n{self.log_tail()}"
                ) from None
        self._proc = None
        self._wait_port_closed(timeout)

    def kill(self) -> None:
        """SIGKILL the node's whole process group at once, as a crash or power cut would."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._kill_strays()
        self._wait_port_closed(10)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or, with `crash`, kill) the node and start it on the same data and ports."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def node_pids(self) -> list[int]:
        """Live processes of this node (server, beam, helpers), matched by its data directory."""
        marker = f"RABBITMQ_MNESIA_BASE={self.base / 'mnesia'}".encode()
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
        return pids

    def _kill_strays(self) -> None:
        for pid in self.node_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _wait_port_closed(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while _port_open(self.port):
            if time.monotonic() > deadline:
                raise RabbitNodeError(f"port {self.port} still open after {self.nodename} stopped")
            time.sleep(0.1)

    def cleanup(self) -> None:
        """Stop the node (kill it if it will not stop), kill strays and delete its files."""
        try:
            with contextlib.suppress(RabbitNodeError):  # stop() killed it then
                self.stop()
            self._kill_strays()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    async def akill(self) -> None:
        await asyncio.to_thread(self.kill)

    async def arestart(self, *, crash: bool = False) -> None:
        await asyncio.to_thread(self.restart, crash=crash)

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
