"""Cluster-wide counters for /metrics, kept in Redis: one hash per metric, one field per label.

Every API process and every worker adds to the same hash (HINCRBY is atomic), so the totals are right however
many processes run. A process does not send a command per increment: `incr` adds to a buffer in memory (no I/O,
never raises, never waits), and a background thread sends what it holds every FLUSH_SECONDS in one pipeline — as
a Prometheus client library keeps its counters in the process. `read` sends this process's buffer first, so a
process always reads its own increments.

While Redis is unreachable the buffer keeps its counts (one entry per metric and label, so it cannot grow without
bound) and sends them once Redis answers again; after a timeout (a hung server, not a refusal) the flusher waits
_BACKOFF_SECONDS before trying again. What a process held when it died (at most FLUSH_SECONDS of counts, or an
outage's) is lost: counting is best effort, and it never slows or breaks routing or webhooks.

A label with several parts (a tuple) is stored joined by "|"; `config.metrics` splits it again.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.signals import setting_changed

from common.redis import quick_client
from common.redis import redis_client as shared_client

logger = logging.getLogger(__name__)

SEPARATOR = "|"
FLUSH_SECONDS = 0.5
_BACKOFF_SECONDS = 10.0
_skip_until: dict[str, float] = {}  # server URL → when to try it again after a timeout

# (server URL, hash key, field) → increments not yet sent. The server and the key are taken when counting, in the
# caller's thread: its cache settings (a test's key prefix) are the ones that count.
_pending: Counter[tuple[str, str, str]] = Counter()
_lock = threading.Lock()
_flusher: threading.Thread | None = None


def redis_client() -> Any:
    """The default cache's Redis client (same server, timeouts and key prefix as the cache)."""
    return shared_client()


def _key(metric: str) -> str:
    return cache.make_and_validate_key(f"counter:{metric}")


# Per thread: {metric: (server URL, hash key)} of the thread's cache backend as it was at `_generation` — a hot
# counter (one per route decision) neither looks the backend up nor builds and validates its key every time. A
# settings change (a test's key prefix) bumps the generation: every thread looks again.
_local = threading.local()
_generation = 0


def _settings_changed(**_kwargs: Any) -> None:
    global _generation
    _generation += 1


setting_changed.connect(_settings_changed, weak=False, dispatch_uid="counters.targets")


def _target(metric: str) -> tuple[str, str]:
    known = getattr(_local, "targets", None)
    if known is None or _local.generation != _generation:
        known, _local.generation = {}, _generation
        _local.targets = known
    target = known.get(metric)
    if target is None:
        backend = caches[DEFAULT_CACHE_ALIAS]
        target = known[metric] = (backend._cache._servers[0], _key(metric))
    return target


def incr(metric: str, label: str | tuple[str, ...], amount: int = 1) -> None:
    """Add `amount` to `metric{label}` (buffered; sent within FLUSH_SECONDS). Never raises."""
    field = SEPARATOR.join(label) if isinstance(label, tuple) else label
    try:
        entry = (*_target(metric), field)
    except Exception as exc:  # a misconfigured cache: nothing to count into
        logger.debug("counter %s{%s} not counted: %s", metric, field, exc.__class__.__name__)
        return
    with _lock:
        _pending[entry] += amount
    if _flusher is None:
        _flusher_start()


def flush() -> bool:
    """Send the buffered increments now (one pipeline per server). True when nothing is left unsent. Never
    raises: what could not be sent stays in the buffer for the next flush."""
    with _lock:
        if not _pending:
            return True
        batch = dict(_pending)
        _pending.clear()
    by_server: dict[str, list[tuple[str, str, int]]] = {}
    for (url, key, field), amount in batch.items():
        by_server.setdefault(url, []).append((key, field, amount))
    sent, moment = True, time.monotonic()
    for url, increments in by_server.items():
        if moment < _skip_until.get(url, 0.0):
            sent = False
            _restore({(url, key, field): amount for key, field, amount in increments})
            continue
        try:
            pipe = quick_client(url).pipeline(transaction=False)
            for key, field, amount in increments:
                pipe.hincrby(key, field, amount)
            pipe.execute()
        except Exception as exc:
            sent = False
            if "timeout" in exc.__class__.__name__.lower():
                _skip_until[url] = time.monotonic() + _BACKOFF_SECONDS
            _restore({(url, key, field): amount for key, field, amount in increments})
            logger.debug("counters not sent to Redis yet: %s", exc.__class__.__name__)
    return sent


def _restore(batch: dict[tuple[str, str, str], int]) -> None:
    with _lock:
        _pending.update(batch)


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush()


def _flusher_start() -> None:
    global _flusher
    with _lock:
        if _flusher is None:
            _flusher = threading.Thread(target=_flush_forever, name="counters-flush", daemon=True)
            _flusher.start()


def _forked() -> None:
    """A forked child (a prefork worker, a gunicorn worker) starts empty: the parent sends its own counts, and
    the parent's flusher thread does not exist in the child."""
    global _flusher, _lock
    _lock = threading.Lock()
    _pending.clear()
    _flusher = None


os.register_at_fork(after_in_child=_forked)
atexit.register(flush)


def read(metric: str) -> dict[str, int]:
    """Every label of `metric` with its total, this process's buffered increments included. Raises when Redis
    cannot be read (the caller reports it)."""
    flush()
    raw = redis_client().hgetall(_key(metric))
    return {_text(label): int(value) for label, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
