"""The one place a Redis client is built: a single node, or a Redis Cluster (issue #19).

``REDIS_CLUSTER=1`` with ``REDIS_URL`` naming any node of the cluster makes every process
(API, projector, ingest, CLI, bench) use redis-py's cluster client, which learns the slot
map from that node and routes each command to the primary owning its keys' slot.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ClusterDownError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient = aioredis.Redis | RedisCluster
"""What the store and the workers talk to; both offer the commands they use."""

OUTAGE: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ClusterDownError,
    TryAgainError,
)
"""Redis errors that are an outage, not a bug: unreachable, timed out, restarting
(``LOADING`` is a ``ConnectionError``), or on a cluster down (``CLUSTERDOWN``: a primary down
longer than ``cluster-node-timeout`` with no replica, and every node refuses commands until
it is back) or moving slots (``TRYAGAIN``). The workers wait them out with backoff; the API
answers them with 503."""


def cluster_from_env(env: Mapping[str, str] | None = None) -> bool:
    """``REDIS_CLUSTER`` set to ``1``/``true``/``yes``: talk to a Redis Cluster."""
    env = os.environ if env is None else env
    return env.get("REDIS_CLUSTER", "0").strip().lower() in ("1", "true", "yes")


def connect(url: str, *, cluster: bool | None = None, **options: Any) -> Any:
    """A client for ``url``: :class:`RedisCluster` when ``cluster`` (default: from
    ``REDIS_CLUSTER``), else :class:`redis.asyncio.Redis`. ``options`` go to either.

    Typed ``Any`` so call sites annotated ``aioredis.Redis`` accept the cluster client too:
    the two share the command methods, not a base class.
    """
    if cluster is None:
        cluster = cluster_from_env()
    if cluster:
        return RedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)
