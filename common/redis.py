"""The Redis client of a connection pool, made once. Django's cache builds a new client object on every
`get_client()` call, which costs more than the command it then sends; the hot paths (the router's circuit read,
the /metrics counters) reuse one per pool instead (same server, timeouts, key prefix as the default cache)."""

from __future__ import annotations

import threading
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


#: The timeouts of `quick_client`: a call a request makes on its way out, that may be skipped when Redis is away.
QUICK_TIMEOUT_SECONDS = 0.25
_quick: dict[str, Any] = {}
_quick_lock = threading.Lock()


def quick_client(url: str | None = None) -> Any:
    """A client on the default cache's (write) server with short timeouts and no retries, for the calls a request
    may give up (the drain's kick): a Redis that is hung or black-holed costs the request a quarter of a second,
    not the cache's 2 s socket timeout per call. Thread-safe; one per server URL (its own small pool): `url`, or the
    default cache's server."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    url = url or cache._cache._servers[0]
    client = _quick.get(url)
    if client is None:
        with _quick_lock:
            client = _quick.get(url)
            if client is None:
                client = _quick[url] = redis.Redis.from_url(
                    url, socket_connect_timeout=QUICK_TIMEOUT_SECONDS, socket_timeout=QUICK_TIMEOUT_SECONDS,
                    retry=Retry(NoBackoff(), 0))
    return client
