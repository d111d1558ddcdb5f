"""The Redis client of a connection pool, made once. Django's cache builds a new client object on every
`get_client()` call, which costs more than the command it then sends; the hot paths (the router's circuit read,
the /metrics counters) reuse one per pool instead (same server, timeouts, key prefix as the default cache)."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache

_ATTRIBUTE = "_chipfarm_client"


def redis_client() -> Any:
    """A client on the default cache's write pool (thread-safe: the pool hands each command a connection). Kept
    on the pool itself, so it goes when the pool does (the cache's pools are per thread)."""
    backend = cache._cache
    pool = backend._get_connection_pool(write=True)
    client = getattr(pool, _ATTRIBUTE, None)
    if client is None:
        client = backend._client(connection_pool=pool)
        setattr(pool, _ATTRIBUTE, client)
    return client
