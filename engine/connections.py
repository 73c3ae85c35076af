"""Redis and Postgres clients, chosen by URL in one place.

`redis+cluster://host:port` (or `rediss+cluster://`) names one seed node of a Redis Cluster and
gives redis-py's RedisCluster; any other Redis URL a plain client. Vigil's code is typed
against `redis.asyncio.Redis` and the cluster client is handed out as one (a documented
cast, see redis_client): both mix in the same command classes, and every key one Lua call or
MULTI touches carries its shard's hash tag (engine.keys), so the commands Vigil sends route by
their first key to the one master that holds the shard.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

# The URL scheme naming a cluster -> the scheme of its seed node.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# A command whose node is gone (connection refused or reset, CLUSTERDOWN while the cluster
# votes) rereads the slot map and is tried again, this many times; redis-py retries a plain
# command at once and a MULTI pipeline after a jittered backoff up to 0.5 s. A failover
# outlasts that (at least the cluster's node timeout): its errors reach the roles, whose loops
# log them and go on, and the first command after the promotion finds the new master.
CLUSTER_RETRY_ATTEMPTS = 10
CLUSTER_RETRY_BASE_S = 0.05
CLUSTER_RETRY_CAP_S = 0.5
# A node whose host is gone answers nothing: its commands time out after this. Longer than
# any blocking read Vigil makes (XREADGROUP BLOCK is at most 2 s).
CLUSTER_SOCKET_TIMEOUT_S = 5.0


class ClusterConnection(Connection):
    """A cluster node's connection whose write to a connection closed under it is the
    ConnectionError it is. redis-py's RedisCluster (8.1), after a node fails, disconnects the
    node's idle connections while other commands take them from the pool: such a command's
    write meets no writer (AttributeError) or a closed transport (RuntimeError), which the
    client does not retry and a role's loop does not take for an outage, so the role died in
    a failover. As a ConnectionError it is retried on a fresh connection."""

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        try:
            await super()._send_packed_command(command)
        except (AttributeError, RuntimeError) as exc:
            raise RedisConnectionError(f"connection closed under a command: {exc!r}") from exc


class ClusterSSLConnection(ClusterConnection, SSLConnection):
    """ClusterConnection over TLS (rediss+cluster://)."""


def cluster_seed(url: str) -> str | None:
    """The plain URL of the seed node when `url` names a cluster, else None."""
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme)
    return None if scheme is None else urlunsplit(parts._replace(scheme=scheme))


def redis_client(url: str) -> aioredis.Redis:
    # Bytes in and out: the hot paths hand payloads to orjson without decoding twice.
    seed = cluster_seed(url)
    if seed is None:
        return aioredis.Redis.from_url(url, decode_responses=False, health_check_interval=30)
    cluster = RedisCluster.from_url(
        seed, decode_responses=False, health_check_interval=30,
        socket_timeout=CLUSTER_SOCKET_TIMEOUT_S, socket_connect_timeout=CLUSTER_SOCKET_TIMEOUT_S,
        retry=Retry(ExponentialWithJitterBackoff(cap=CLUSTER_RETRY_CAP_S,
                                                 base=CLUSTER_RETRY_BASE_S),
                    CLUSTER_RETRY_ATTEMPTS),
        # MOVED patches the one slot and retries; every fifth rereads the whole map (a
        # failover moves all of a master's slots at once). ASK is followed as it comes.
        reinitialize_steps=5)
    # Every node's connections, the seed's and those of the nodes the slot map names, are
    # built from these (redis-py sets its own class and offers no parameter for it).
    manager = cluster.nodes_manager
    tls = issubclass(manager.connection_kwargs["connection_class"], SSLConnection)
    guarded = ClusterSSLConnection if tls else ClusterConnection
    manager.connection_kwargs["connection_class"] = guarded
    for node in manager.startup_nodes.values():
        node.connection_class = guarded
    # Not a subclass of Redis, but the same command methods, register_script and pipeline (a
    # MULTI whose keys share one slot works on it too): a cast, not a Protocol re-declaring
    # every command. What it refuses (keys of several slots in one command; TIME, MGET or
    # EVALSHA queued in a pipeline) tests/integration/test_cluster.py runs into.
    return cast(aioredis.Redis, cluster)


async def ready(r: aioredis.Redis) -> None:
    """A cluster client reads its slot map before its first commands run side by side: in
    redis-py's RedisCluster each concurrent first command starts the initialization, which
    recycles connections another one is opening (AttributeError on a closed writer, a role's
    service dead at start). Nothing to do for a plain client."""
    if isinstance(r, RedisCluster):
        # No node answers yet: the roles' loops wait for the cluster as for a plain Redis.
        with contextlib.suppress(RedisError, RedisClusterException):
            await r.initialize()


async def cluster_nodes(r: aioredis.Redis) -> list[tuple[str, int]]:
    """(host, port) of every node of the cluster, masters and replicas (CLUSTER NODES: the
    client's slot map holds the masters only); none for a plain client, or while no node
    answers."""
    if not isinstance(r, RedisCluster):
        return []
    try:
        listed = await r.cluster_nodes()
    except (RedisError, RedisClusterException):
        return []
    nodes = []
    for address in listed:  # `ip:port`, the IPv6 ones unbracketed
        host, _, port = str(address).rpartition(":")
        if host and port.isdigit() and int(port):
            nodes.append((host, int(port)))
    return nodes


async def postgres_pool(dsn: str, min_size: int = 1, max_size: int = 4) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    assert pool is not None
    return pool
