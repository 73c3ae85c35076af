"""A real local Redis Cluster for tests: three masters and three replicas, six redis-server
children on 127.0.0.1 (vigil.embedded.RedisServer, cluster mode, no persistence), joined by
`redis-cli --cluster create`. Helpers kill a master (SIGKILL) and wait for its replica's
promotion, bring the dead node back as a replica, and say which shard tag lives on which
master. No conftest: a test module imports `cluster` (the fixture) or `local_cluster`.

The cluster's node timeout is 1 s, so a failover takes about two seconds; replicas may
always be promoted (validity factor 0), as a test kills a master whatever the replica's lag.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

from engine.connections import redis_client
from engine.keys import Keys
from tests.support.helpers import free_port
from vigil.embedded import RedisServer

MASTERS = 3
NODE_TIMEOUT_MS = 1000
START_TIMEOUT_S = 30.0
FAILOVER_TIMEOUT_S = 30.0


@dataclass
class Node:
    port: int
    server: RedisServer

    @property
    def pid(self) -> int:
        assert self.server.proc is not None
        return self.server.proc.pid

    @property
    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def ask(self, *command: str) -> str:
        """One command on this node alone, its reply as text."""
        with self.client() as c:
            reply = c.execute_command(*command)
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    def replication(self) -> dict[str, object]:
        """INFO replication, as redis-py parses it (role, master_link_status, offsets)."""
        with self.client() as c:
            return dict(c.info("replication"))


@dataclass
class LocalCluster:
    workdir: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A seed node, as VIGIL_REDIS_URL names a cluster."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def start(self) -> None:
        for i in range(2 * MASTERS):
            port, bus = free_port(), free_port()
            # The bus port is set, not left at port + 10000: that could pass 65535.
            server = RedisServer(self.workdir / f"node{i}", port=port, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-port", str(bus),
                "--cluster-replica-validity-factor", "0",
                # A replica's first full sync starts at once, not 5 s later (7.0's default).
                "--repl-diskless-sync-delay", "0"])
            server.start()
            self.nodes.append(Node(port, server))
        subprocess.run(["redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, capture_output=True, timeout=START_TIMEOUT_S)
        wait_until(self.healthy, START_TIMEOUT_S, "the cluster did not come up")

    def configure(self, name: str, value: str) -> None:
        """CONFIG SET on every live node (a node started again reads its start arguments)."""
        for n in self.nodes:
            if n.alive:
                n.ask("CONFIG", "SET", name, value)

    def stop(self) -> None:
        for n in self.nodes:
            n.server.stop()

    def _topology(self) -> list[tuple[int, str, str, str]]:
        """(port, role, node id, master id) of every live node, as a live node sees it."""
        seen = next(n for n in self.nodes if n.alive).ask("CLUSTER", "NODES")
        rows = []
        for line in seen.splitlines():
            node_id, address, flags, master = line.split()[:4]
            if "fail" in flags.split(","):
                continue
            port = int(address.split("@")[0].rsplit(":", 1)[1])
            role = "master" if "master" in flags.split(",") else "replica"
            rows.append((port, role, node_id, master))
        return rows

    def healthy(self) -> bool:
        """Every live node says cluster_state:ok, sees three masters, and each replica's link
        to its master is up (so a failover has a synced replica to promote)."""
        try:
            for n in self.nodes:
                if not n.alive:
                    continue
                if "cluster_state:ok" not in n.ask("CLUSTER", "INFO"):
                    return False
                replication = n.replication()
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            return len(self.masters()) == MASTERS
        except redis.RedisError:
            return False

    def masters(self) -> list[int]:
        return sorted(port for port, role, _, _ in self._topology() if role == "master")

    def replica_of(self, master_port: int) -> int:
        rows = self._topology()
        master_id = next(node_id for port, _, node_id, _ in rows if port == master_port)
        return next(port for port, role, _, master in rows
                    if role == "replica" and master == master_id)

    def master_of_slot(self, slot: int) -> int:
        live = next(n for n in self.nodes if n.alive)
        with live.client() as c:
            ranges = c.execute_command("CLUSTER", "SLOTS")
        for start, end, (_, port, *_), *_ in ranges:
            if start <= slot <= end:
                return int(port)
        raise LookupError(slot)

    def master_of(self, shard: str) -> int:
        """The port of the master that holds shard `shard`'s keys (its hash tag's slot)."""
        return self.master_of_slot(key_slot(Keys(shard).base.encode()))

    def shards_by_master(self, shards: Iterable[str]) -> dict[int, list[str]]:
        spread: dict[int, list[str]] = {port: [] for port in self.masters()}
        for shard in shards:
            spread[self.master_of(shard)].append(shard)
        return spread

    def kill_master(self, port: int) -> int:
        """SIGKILL the master on `port`, wait until its replica is promoted and every live
        node says cluster_state:ok; the new master's port."""
        replica = self.replica_of(port)
        node = self.node(port)
        assert node.server.proc is not None
        node.server.proc.send_signal(signal.SIGKILL)
        node.server.proc.wait()
        wait_until(lambda: self._promoted(replica), FAILOVER_TIMEOUT_S,
                   f"the replica on {replica} was not promoted")
        return replica

    def _promoted(self, replica: int) -> bool:
        try:
            return (self.node(replica).replication()["role"] == "master"
                    and all("cluster_state:ok" in n.ask("CLUSTER", "INFO")
                            for n in self.nodes if n.alive)
                    and replica in self.masters())
        except redis.RedisError:
            return False

    def revive(self, port: int) -> None:
        """Start a killed node again: it rejoins from its nodes.conf as a replica of the node
        promoted in its place; back when the cluster is healthy again."""
        self.node(port).server.start()
        wait_until(self.healthy, START_TIMEOUT_S, f"the node on {port} did not rejoin")


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout_s} s")
        time.sleep(0.05)


@contextlib.contextmanager
def local_cluster(workdir: Path) -> Iterator[LocalCluster]:
    """Six nodes started and joined; every one stopped (by its pid) on the way out."""
    c = LocalCluster(workdir)
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A cluster for a test module: a test that kills a master revives it before it ends."""
    with local_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


@pytest.fixture
async def cr(cluster: LocalCluster) -> AsyncIterator[aioredis.Redis]:
    """The cluster client Vigil's roles get, on empty masters."""
    client = redis_client(cluster.url)
    await client.flushall()
    yield client
    await client.aclose()
