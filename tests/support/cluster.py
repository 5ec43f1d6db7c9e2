"""A real three-primary Redis Cluster on loopback ports, for tests (issue #19).

Each node is ``redis-server --cluster-enabled yes --appendonly yes`` in its own temporary
directory; ``redis-cli --cluster create`` assigns the 16384 slots; the cluster is ready
when every node reports ``cluster_state:ok``. No replicas: the tests need the slot
routing, not failover.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

single_and_cluster = pytest.mark.parametrize("redis_client", ["single", "cluster"], indirect=True)
"""Run a test once on one Redis node and once on the three-primary cluster."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports whose cluster-bus ports (+10000) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


def node_argv(port: int, workdir: Path, *extra: str) -> list[str]:
    """The ``redis-server`` command of one cluster node in ``workdir`` (created): AOF on,
    ``nodes.conf`` there, so a restart with the same command rejoins with its slots and
    data. ``extra`` options are appended (``--appendfsync always`` for the fault run)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(workdir),
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        "--appendonly",
        "yes",
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--logfile",
        str(workdir / "redis.log"),
        *extra,
    ]


def cluster_ok(ports: list[int]) -> bool:
    """Whether every node at ``ports`` reports ``cluster_state:ok``."""
    for port in ports:
        with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
            info = client.cluster("info")
            state = info.get("cluster_state") if isinstance(info, dict) else None
            if state is None:
                text = info.decode() if isinstance(info, bytes) else str(info)
                state = "ok" if "cluster_state:ok" in text else "fail"
            if state != "ok":
                return False
    return True


def create_cluster(ports: list[int], timeout: float = 30) -> None:
    """Join the running nodes at ``ports`` into one cluster of primaries (the 16384 slots
    split among them) and wait for ``cluster_state:ok`` on each."""
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *(f"127.0.0.1:{port}" for port in ports),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
    )
    _wait(lambda: cluster_ok(ports), "the cluster is not in cluster_state:ok", timeout)


def _wait(predicate: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except (redis.ConnectionError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} after {timeout}s")


@dataclass
class RedisClusterNodes:
    """A running cluster: its node ports, the processes and their directories."""

    ports: list[int]
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A URL naming one node; the cluster client discovers the others from it."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, index: int) -> subprocess.Popen[bytes]:
        """Start (or restart, from its AOF and nodes.conf) the node at ``index``."""
        port = self.ports[index]
        proc = subprocess.Popen(
            node_argv(port, self.root / str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if index < len(self.procs):
            self.procs[index] = proc
        else:
            self.procs.append(proc)
        with redis.Redis(port=port, socket_connect_timeout=0.5) as client:
            _wait(client.ping, f"redis-server on {port} does not answer", 20)
        return proc

    def cluster_ok(self) -> bool:
        return cluster_ok(self.ports)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_cluster(primaries: int = 3, root: Path | None = None) -> RedisClusterNodes:
    """Start ``primaries`` nodes, join them into one cluster and wait for ``cluster_state:ok``.

    The caller must call :meth:`RedisClusterNodes.stop` (and may remove ``root``).
    """
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        raise RuntimeError("redis-server and redis-cli are needed to start a Redis Cluster")
    nodes = RedisClusterNodes(
        ports=free_ports(primaries),
        root=root or Path(tempfile.mkdtemp(prefix="sstest-cluster-")),
    )
    try:
        for index in range(primaries):
            nodes.start_node(index)
        create_cluster(nodes.ports)
    except BaseException:
        nodes.stop()
        raise
    return nodes
