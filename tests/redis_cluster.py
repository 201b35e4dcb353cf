"""A real Redis Cluster on loopback: three masters and a replica each, `redis-server` processes in
cluster mode joined by `redis-cli --cluster create`.

    python -m tests.redis_cluster -- pytest tests/...   # the command with REDIS_CLUSTER_NODES set

The cluster lives in a temporary directory and is gone when the command ends. Its node timeout is
short (one second) so that a failover drill sees a replica promoted within seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

NODE_TIMEOUT_MS = 1000
MASTERS = 3


def free_port() -> int:
    """A free loopback port whose cluster bus port (the port + 10,000) is free and valid too."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port + 10000 < 65536 and _free(port + 10000):
            return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Node:
    port: int
    process: subprocess.Popen

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def role(self) -> str:
        return self.client().info("replication")["role"]

    def synced(self) -> bool:
        """A replica whose link to its master is up (its first sync done)."""
        return self.client().info("replication").get("master_link_status") == "up"


@dataclass
class LocalCluster:
    workdir: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def seeds(self) -> str:
        return ",".join(node.address for node in self.nodes)

    def start(self, masters: int = MASTERS, replicas: int = 1) -> LocalCluster:
        ports: set[int] = set()
        while len(ports) < masters * (1 + replicas):
            ports.add(free_port())
        for port in sorted(ports):
            self.nodes.append(self._start_node(port))
        for node in self.nodes:
            wait_for(lambda node=node: node.client().ping(), f"redis-server on {node.port}")
        if masters < 3:
            return self._join_by_hand(masters, replicas)
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(node.address for node in self.nodes),
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.wait_until_ok()
        # A replica that never synced cannot take over (its data would be too old): wait for all.
        replicas = [node for node in self.nodes if node.role() != "master"]
        for node in replicas:
            wait_for(node.synced, "a replica's sync")
        return self

    def _join_by_hand(self, masters: int, replicas: int) -> LocalCluster:
        """`redis-cli --cluster create` wants three masters at least: fewer get their slots by
        hand, in even ranges as it would give them (no replicas)."""
        if replicas:
            raise ValueError("a cluster of fewer than three masters is started without replicas")
        bounds = [round(i * 16384 / masters) for i in range(masters + 1)]
        for node, low, high in zip(self.nodes, bounds, bounds[1:], strict=False):
            node.client().execute_command("CLUSTER ADDSLOTSRANGE", low, high - 1)
        for node in self.nodes[1:]:
            node.client().execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
        self.wait_until_ok()
        return self

    def _start_node(self, port: int) -> Node:
        directory = self.workdir / str(port)
        directory.mkdir(parents=True)
        command = [
            "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
            "--repl-diskless-sync-delay", "0",  # a replica's first sync at once, not after 5 s
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        return Node(port, subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def live_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.process.poll() is None]

    def wait_until_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and has every slot covered."""

        def ok() -> bool:
            for node in self.live_nodes():
                info = node.client().cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_ok", 0)) != 16384:
                    return False
            return True

        wait_for(ok, "the Redis Cluster's state ok", timeout)

    def wait_for_failover(self, killed: Node, timeout: float = 30.0) -> None:
        """Until a replica of the killed master took its slots over, and the cluster is ok again."""
        assert killed.process.poll() is not None, "the master is still running"
        wait_for(lambda: len(self.masters()) == MASTERS, "a replica's promotion", timeout)
        self.wait_until_ok(timeout)

    def masters(self) -> list[Node]:
        return [node for node in self.live_nodes() if node.role() == "master"]

    def master_of(self, key: str) -> Node:
        """The node that holds `key`'s slot as master now."""
        client = self.live_nodes()[0].client()
        slot = client.execute_command("CLUSTER KEYSLOT", key)
        for start, end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(primary[1]))
        raise LookupError(f"no master holds slot {slot}")

    def kill(self, node: Node) -> None:
        """A master's machine gone: killed at once, nothing written out."""
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()

    def flush(self) -> None:
        for node in self.masters():
            node.client().flushall()

    def stop(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.terminate()
        for node in self.nodes:
            try:
                node.process.wait(10)
            except subprocess.TimeoutExpired:
                node.process.kill()


def wait_for(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Until `check()` is true (a Redis error or a refused connection counts as not yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come within {timeout:.0f} s")
        time.sleep(0.1)


@contextmanager
def running(masters: int = MASTERS, replicas: int = 1) -> Iterator[LocalCluster]:
    """A cluster for as long as the block runs, in a temporary directory removed after."""
    workdir = Path(tempfile.mkdtemp(prefix="sparks-redis-cluster-"))
    cluster = LocalCluster(workdir)
    try:
        yield cluster.start(masters, replicas)
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if "--" not in argv:
        print(__doc__, file=sys.stderr)
        return 2
    command = argv[argv.index("--") + 1 :]
    with running() as cluster:
        env = {**os.environ, "REDIS_CLUSTER_NODES": cluster.seeds}
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
