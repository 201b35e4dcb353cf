"""Connections to the hot store's Redis: one server (`REDIS_URL`) or a Redis Cluster
(`REDIS_CLUSTER_NODES`, its seed nodes), behind the same client interface.

redis-py's cluster client routes every command and script by the hash slot of its keys, follows
MOVED/ASK after a resharding and finds the new master after a failover; the hot store's keys are
laid out so that every script touches one slot (`layout.shard_tag`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException


@dataclass(frozen=True)
class Target:
    """Where the hot state lives: a Redis URL, or a cluster's seed nodes ("host:port")."""

    url: str = ""
    cluster_nodes: tuple[str, ...] = ()

    @property
    def is_cluster(self) -> bool:
        return bool(self.cluster_nodes)


def parse_nodes(value: str | Sequence[str]) -> tuple[str, ...]:
    """Seed nodes from "host:port,host:port" (or a list); a malformed one is a ValueError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    nodes = tuple(item.strip() for item in items if item.strip())
    for node in nodes:
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Redis Cluster node must read host:port, not {node!r}")
    return nodes


def startup_nodes(nodes: Sequence[str]) -> list[ClusterNode]:
    return [ClusterNode(host, int(port)) for host, _, port in (node.rpartition(":") for node in nodes)]


def sync_client(target: Target, **options: Any) -> redis.Redis | RedisCluster:
    """A client of the target; `options` go to redis-py's client (timeouts, say)."""
    if target.is_cluster:
        try:  # the cluster client reads the cluster's slots at once
            return RedisCluster(startup_nodes=startup_nodes(target.cluster_nodes), decode_responses=True, **options)
        except RedisClusterException as error:
            raise redis.exceptions.ConnectionError(f"no node of the Redis Cluster answers: {error}") from error
    return redis.Redis.from_url(target.url, decode_responses=True, **options)


def async_client(target: Target):
    """An asyncio client of the target, for the running event loop."""
    if target.is_cluster:
        from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
        from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

        seeds = [AsyncClusterNode(node.host, node.port) for node in startup_nodes(target.cluster_nodes)]
        return AsyncRedisCluster(startup_nodes=seeds, decode_responses=True)
    import redis.asyncio

    return redis.asyncio.Redis.from_url(target.url, decode_responses=True)
