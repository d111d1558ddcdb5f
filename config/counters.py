"""Cluster-wide counters for /metrics, kept in Redis: one hash per metric, one field per label.

Every API process and every worker increments the same hash (HINCRBY is atomic), so the totals are right
however many processes run. Counting is best effort: `incr` never raises, because a Redis outage must
not break routing or webhooks; the lost increments are the price.

A label with several parts (a tuple) is stored joined by "|"; `config.metrics` splits it again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.cache import cache

from common.redis import quick_client
from common.redis import redis_client as shared_client

logger = logging.getLogger(__name__)

SEPARATOR = "|"
# An increment waits at most common.redis.QUICK_TIMEOUT_SECONDS; after a timeout (Redis unreachable, not
# refusing), counting is skipped for a while: a request must not wait a socket timeout per increment during an
# outage.
_BACKOFF_SECONDS = 10.0
_skip_until = 0.0


def redis_client() -> Any:
    """The default cache's Redis client (same server, timeouts and key prefix as the cache)."""
    return shared_client()


def _key(metric: str) -> str:
    return cache.make_and_validate_key(f"counter:{metric}")


def incr(metric: str, label: str | tuple[str, ...], amount: int = 1) -> None:
    """Add `amount` to `metric{label}`. Never raises."""
    global _skip_until
    if time.monotonic() < _skip_until:
        return
    field = SEPARATOR.join(label) if isinstance(label, tuple) else label
    try:
        quick_client().hincrby(_key(metric), field, amount)
    except Exception as exc:
        if "timeout" in exc.__class__.__name__.lower():
            _skip_until = time.monotonic() + _BACKOFF_SECONDS
        logger.debug("counter %s{%s} not incremented: %s", metric, field, exc.__class__.__name__)


def read(metric: str) -> dict[str, int]:
    """Every label of `metric` with its total. Raises when Redis cannot be read (the caller reports it)."""
    raw = redis_client().hgetall(_key(metric))
    return {_text(label): int(value) for label, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
