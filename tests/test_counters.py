"""The /metrics counters (config.counters): counting is an in-memory add, sent to Redis in the background within
FLUSH_SECONDS; a Redis outage keeps the counts until it is over, and never slows the counting caller."""

from __future__ import annotations

import time

from django.core.cache import cache

from common.redis import redis_client
from config import counters


def _stored(metric: str) -> dict[str, int]:
    """What Redis holds, read past this process's buffer (as another process would see it)."""
    raw = redis_client().hgetall(cache.make_and_validate_key(f"counter:{metric}"))
    return {k.decode(): int(v) for k, v in raw.items()}


def _eventually(check, seconds: float = 5.0):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not sent in time"
        time.sleep(0.05)


def test_increments_reach_redis_in_the_background_in_one_batch(isolated_cache):
    for _ in range(50):
        counters.incr("route_decisions", "routed")
    counters.incr("webhook_events", ("messages.upsert", "processed"), 3)
    _eventually(lambda: _stored("route_decisions") == {"routed": 50})
    assert _stored("webhook_events") == {"messages.upsert|processed": 3}
    assert counters.read("route_decisions") == {"routed": 50}  # nothing counted twice


def test_a_redis_outage_keeps_the_counts_and_never_slows_the_counter(isolated_cache, settings):
    alive = settings.CACHES["default"]["LOCATION"]
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    started = time.perf_counter()
    for _ in range(1000):
        counters.incr("route_decisions", "no_capacity")
    assert time.perf_counter() - started < 0.5  # no network per increment
    assert counters.flush() is False  # refused: kept
    with counters._lock:
        kept = {field: n for (url, key, field), n in counters._pending.items()
                if url.endswith(":1/0") and key.startswith(isolated_cache)}
    assert kept == {"no_capacity": 1000}
    # Redis back at the same address (here: the buffered entries moved to the live server) — all of them arrive.
    with counters._lock:
        for (url, key, field), n in list(counters._pending.items()):
            if url.endswith(":1/0") and key.startswith(isolated_cache):
                del counters._pending[url, key, field]
                counters._pending[alive, key, field] += n
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": alive}}
    counters.flush()
    assert _stored("route_decisions") == {"no_capacity": 1000}
    with counters._lock:
        assert not [entry for entry in counters._pending if entry[1].startswith(isolated_cache)]  # nothing left of ours
