"""A private three-node RabbitMQ cluster for failover tests.

Three `RabbitNode`s (each in the foreground as our child, on its own AMQP and distribution
ports, data and log folders under its own temporary directory) that share one private
Erlang cookie, so they can cluster with each other and with nothing else. Nodes 2 and 3 join
node 1 with `rabbitmqctl stop_app`, `join_cluster`, `start_app`. The shared broker on 5672
is never touched: every `rabbitmqctl` call names a private node and carries the private
cookie.

Node names are unique per cluster (`st-c1-<hex>@localhost`), since epmd is shared by every
node on the host and another run may have a cluster of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
from types import TracebackType
from typing import Self

from tests.support.rabbit_node import RabbitNode, RabbitNodeError

__all__ = ["RabbitCluster"]

JOIN_TIMEOUT = 60.0


class RabbitCluster:
    """Three clustered private nodes: `start()`, `kill(i)`, `freeze(i)`, `start_node(i)`,
    `cleanup()`.

    Blocking methods, bounded; the `a*` twins run them in a thread. Use as a context
    manager, which starts and joins the cluster and always removes every node.
    """

    def __init__(self, size: int = 3) -> None:
        tag = secrets.token_hex(3)
        cookie = secrets.token_hex(16)
        self.nodes: list[RabbitNode] = []
        try:
            for n in range(1, size + 1):
                node = RabbitNode(name=f"st-c{n}-{tag}@localhost")
                self.nodes.append(node)
                _set_cookie(node, cookie)
        except BaseException:
            self.cleanup()
            raise

    @property
    def urls(self) -> list[str]:
        """One amqp:// URL per node, in node order."""
        return [node.url for node in self.nodes]

    def url_of(self, index: int) -> str:
        return self.nodes[index].url

    def order_from(self, first: int) -> list[str]:
        """Every node's URL, node `first` first and the others after it in node order."""
        return [self.urls[(first + k) % len(self.nodes)] for k in range(len(self.nodes))]

    def start(self) -> None:
        """Start every node and join nodes 2.. to node 1 (about 20 s for three)."""
        for node in self.nodes:
            node.start()
        seed = self.nodes[0].nodename
        for node in self.nodes[1:]:
            for args in (("stop_app",), ("join_cluster", seed), ("start_app",)):
                done = node.ctl(*args, timeout=JOIN_TIMEOUT)
                if done.returncode != 0:
                    raise RabbitNodeError(
                        f"{' '.join(args)} on {node.nodename} failed: {done.stderr}\n"
                        f"{node.log_tail()}"
                    )
        self.check_members(len(self.nodes))

    def running_members(self) -> list[str]:
        """The running cluster members as node 1 (or the first live node) sees them."""
        for node in self.nodes:
            if not node.running:
                continue
            done = node.ctl("eval", "rabbit_nodes:all_running().")
            if done.returncode == 0:
                return sorted(
                    name.strip(" '\n") for name in done.stdout.strip("[]\n").split(",") if name
                )
        return []

    def leader_of(self, queue: str) -> int | None:
        """The index of the node that leads quorum queue `queue`, from a live node's view."""
        names = [node.nodename for node in self.nodes]
        for node in self.nodes:
            if not node.running:
                continue
            done = node.ctl("list_queues", "-q", "--no-table-headers", "name", "leader")
            for line in done.stdout.splitlines():
                name, _, leader = line.partition("\t")
                if name == queue and leader.strip() in names:
                    return names.index(leader.strip())
            if done.returncode == 0:
                return None
        return None

    def node_of(self, url: object) -> int:
        """The index of the node whose AMQP port `url` (a yarl.URL or str) names."""
        port = int(str(url).rsplit(":", 1)[1].split("/", 1)[0])
        return [node.port for node in self.nodes].index(port)

    def check_members(self, expected: int) -> None:
        members = self.running_members()
        if len(members) != expected:
            raise RabbitNodeError(f"expected {expected} running members, see {members}")

    def beams(self, index: int) -> list[int]:
        """The pids of node `index`'s Erlang VM (beam.smp), found by its data folder."""
        node = self.nodes[index]
        found = [pid for pid in node.node_pids() if _is_beam(pid)]
        if not found:
            raise RabbitNodeError(f"no beam.smp of {node.nodename} found")
        return found

    @staticmethod
    def signal(pids: list[int]) -> None:
        """SIGKILL `pids` at once (from `beams`), as a crash would."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def freeze(self, index: int) -> list[int]:
        """SIGSTOP node `index`'s Erlang VM: its sockets stay open, nothing answers on them.

        A hung node (or a path that silently drops everything) as a client sees it; the
        other nodes notice only after the distribution tick (60 s), so thaw it before that.
        Returns the pids for `thaw`.
        """
        pids = self.beams(index)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        return pids

    @staticmethod
    def thaw(pids: list[int]) -> None:
        """SIGCONT what `freeze` stopped."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def kill(self, index: int) -> None:
        """SIGKILL node `index`'s beam.smp, then clear what is left of the node.

        The VM first, as a crash of the VM would; then the node's foreground process is
        reaped, strays killed and its port seen closed, so `start_node` can boot it again on
        the same data.
        """
        node = self.nodes[index]
        self.signal([pid for pid in node.node_pids() if _is_beam(pid)])  # none if gone already
        node.kill()

    def start_node(self, index: int) -> None:
        """Start node `index` again; it rejoins the cluster by itself (same data folder)."""
        node = self.nodes[index]
        node.start()
        self.check_members(sum(1 for n in self.nodes if n.running))

    def stop_node(self, index: int) -> None:
        """Stop node `index` gracefully (`rabbitmqctl stop`)."""
        self.nodes[index].stop()

    def cleanup(self) -> None:
        """Stop every node (killing what will not stop) and delete their files."""
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                node.cleanup()
            except Exception as exc:  # clean the others up regardless
                errors.append(exc)
        if errors:
            raise errors[0]

    async def astart_node(self, index: int) -> None:
        await asyncio.to_thread(self.start_node, index)

    async def akill(self, index: int) -> None:
        await asyncio.to_thread(self.kill, index)

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


def _set_cookie(node: RabbitNode, cookie: str) -> None:
    path = node.base / ".erlang.cookie"
    owner = path.stat()
    path.chmod(0o600)
    path.write_text(cookie)
    path.chmod(0o400)
    os.chown(path, owner.st_uid, owner.st_gid)


def _is_beam(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/comm") as comm:
            return comm.read().strip().startswith("beam")
    except OSError:
        return False
