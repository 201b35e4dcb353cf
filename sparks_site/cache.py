"""Django's Redis cache with one client, and one connection pool, per process.

Django keeps a cache backend per async context, and Django's Redis backend opens its own connection
pool. Under ASGI every websocket, SSE stream and request is a context of its own: each got a pool
and a Redis connection of its own, opened anew (a TCP connect, the handshake, and redis-py reading
its version from the package metadata: about a millisecond, most of a websocket's sign-in) and held
for as long as the context lived, so 10,000 sockets held 10,000 Redis connections, Redis's default
`maxclients`. redis-py's pools are thread-safe and notice a fork: one per process serves every
context and thread.
"""

from __future__ import annotations

import re
import threading
from functools import cached_property

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_clients: dict[tuple, RedisCacheClient] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    """`django.core.cache.backends.redis.RedisCache`, its client shared by every instance of the
    same servers and options in this process."""

    def __init__(self, server: str | list[str], params: dict) -> None:
        super().__init__(server, params)
        # From the backend's own arguments, read as RedisCache reads them (LOCATION may list
        # several servers, separated by ; or ,), not from its private attributes.
        self.servers = re.split("[;,]", server) if isinstance(server, str) else list(server)
        self.options = dict(params.get("OPTIONS") or {})

    @cached_property
    def _cache(self) -> RedisCacheClient:
        # The client every RedisCache method goes through: one per process and configuration.
        key = (tuple(self.servers), repr(sorted(self.options.items())))
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = RedisCacheClient(self.servers, **self.options)
            return client
