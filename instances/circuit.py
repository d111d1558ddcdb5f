"""The send circuit breaker of each chip (W2 5/7), in Redis so every API process and worker shares it.

    closed ──CIRCUIT_FAILURES consecutive gateway failures──▶ open (no traffic for CIRCUIT_OPEN_SECONDS)
      ▲                                                         │ the period ends
      └────────── the trial succeeds ◀── half-open: exactly one trial send is let through
                                           └── the trial (or any send) fails ──▶ open again

A 429-like refusal opens the circuit at once for CIRCUIT_RATE_LIMITED_SECONDS and a 403-like one for
CIRCUIT_FORBIDDEN_SECONDS (WhatsApp or the gateway told us to hold off). What counts as a failure is the chip's
session or the gateway failing (`COUNTED_KINDS`); a number without WhatsApp, our own bad request or our wrong key
says nothing about the chip.

One hash per chip (`circuit:<id>`: consecutive failures `f`, open until `u`, trial lease until `t`, times opened
`o`, why `r`), changed only by Lua scripts (atomic on the server: two processes can never both take the trial),
plus a set of the chips whose hash exists (`circuit:tracked`), so the router and /metrics read only the chips in
trouble, never the pool. Times are the caller's `now` (epoch seconds), so time travel in tests moves them.

The router reads the gates (which chips are open or half-open) once per decision, and a process keeps what it read
for CIRCUIT_GATES_CACHE_SECONDS (1 s; 0 = read Redis every time): a route decision is a few hundred microseconds,
and a Redis round trip was a third of it. What is kept are the raw times (open until, trial leased until), so an
open period ends on time; a change this process makes (a circuit opened or closed, a trial leased) forgets them at once;
a circuit another process opens is seen here within that second (a send or two more to a chip that just failed,
which the gateway answers as it did the ones that opened it). The half-open trial is never taken on a kept view:
`circuit_acquire` leases it in Redis.

Redis down never blocks sending nor breaks routing: every call fails open (closed, allowed), logs a warning, and
after a timeout skips Redis for a few seconds (a request must not wait a socket timeout per call).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache

from common.redis import redis_client

logger = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: Gateway error kinds that count against the chip (instances.gateway.ERROR_KINDS).
COUNTED_KINDS = frozenset({"connection_closed", "not_found", "server", "timeout", "transport", "error_body"})
RATE_LIMITED, FORBIDDEN = 429, 403
# A hash lives this long after its last change (real seconds): an old failure or two is forgotten.
KEY_TTL = 24 * 3600
_BACKOFF_SECONDS = 10.0
_skip_until = 0.0
# What this process last read of the gates: (monotonic time it goes stale, {chip id: its hash's fields}), and how
# many times it forgot them (a read that began before a change this process made is not kept).
_gates: tuple[float, dict[int, list[Any]]] | None = None
_gates_forgotten = 0

_FAILURE = """
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local open_for = tonumber(ARGV[3])
local at_once = tonumber(ARGV[4])
local f = tonumber(redis.call('HGET', KEYS[1], 'f') or '0') + 1
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
local opened = 0
local duration = open_for
if at_once > 0 then duration = at_once end
if u > 0 and now < u then
  -- already open: a late failure of a send made before it opened; a longer refusal extends it
  if at_once > 0 and now + at_once > u then
    redis.call('HSET', KEYS[1], 'u', now + at_once, 'r', ARGV[6])
  end
elseif u > 0 or at_once > 0 or f >= threshold then
  -- half-open and the trial (or any send) failed, an immediate refusal, or the N-th failure in a row
  redis.call('HSET', KEYS[1], 'u', now + duration, 't', 0, 'r', ARGV[6], 's', now)
  redis.call('HINCRBY', KEYS[1], 'o', 1)
  opened = 1
end
redis.call('HSET', KEYS[1], 'f', f)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
redis.call('SADD', KEYS[2], ARGV[5])
return {opened, f}
"""

_SUCCESS = """
local now = tonumber(ARGV[1])
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
if u > 0 and now < u then
  return 0  -- a late success while open: the open period stands
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
if u > 0 then return 2 end  -- the half-open trial succeeded: closed
return 1
"""

_ACQUIRE = """
local now = tonumber(ARGV[1])
local u = tonumber(redis.call('HGET', KEYS[1], 'u') or '0')
if u == 0 then return 'closed' end
if now < u then return 'open' end
local t = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
if t > now then return 'busy' end
redis.call('HSET', KEYS[1], 't', now + tonumber(ARGV[2]))
return 'trial'
"""

_scripts: dict[str, Any] = {}


@dataclass(frozen=True)
class CircuitState:
    """What the admin, the API and /metrics show of one chip's circuit."""

    chip_id: int
    state: str                       # closed | open | half_open
    failures: int                    # consecutive failures
    open_until: datetime | None
    trial_in_flight: bool
    times_opened: int
    reason: str
    known: bool = True               # False: Redis could not be read (shown as closed: routing fails open)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "failures": self.failures, "open_until": self.open_until,
                "trial_in_flight": self.trial_in_flight, "times_opened": self.times_opened, "reason": self.reason,
                "known": self.known}


def _client() -> Any:
    return redis_client()


def _key(chip_id: int) -> str:
    return cache.make_and_validate_key(f"circuit:{chip_id}")


def _tracked() -> str:
    return cache.make_and_validate_key("circuit:tracked")


def _script(name: str, source: str) -> Any:
    # Registered per client object: a new connection pool (another process, a reconnect) gets its own.
    client = _client()
    cached = _scripts.get(name)
    if cached is None or cached[0] is not client:
        cached = (client, client.register_script(source))
        _scripts[name] = cached
    return cached[1]


def _epoch(now: datetime | None) -> float:
    return (now or datetime.now(UTC)).timestamp()


def _when(value: Any) -> datetime | None:
    seconds = float(value or 0)
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds > 0 else None


def _usable() -> bool:
    return settings.CIRCUIT_ENABLED and time.monotonic() >= _skip_until


def _failed_open(what: str, exc: Exception) -> None:
    global _skip_until
    if "timeout" in exc.__class__.__name__.lower():  # unreachable, not refusing: do not wait on it per request
        _skip_until = time.monotonic() + _BACKOFF_SECONDS
    logger.warning("circuit breaker: Redis unavailable for %s (%s); failing open", what, exc.__class__.__name__)


def counts_against_chip(error: Any) -> bool:
    """Whether a gateway error says something about the chip (see `COUNTED_KINDS`, and 429/403 refusals)."""
    return getattr(error, "kind", None) in COUNTED_KINDS or getattr(error, "status_code", None) in (
        RATE_LIMITED, FORBIDDEN)


def circuit_failure(*, chip_id: int, error: Any = None, now: datetime | None = None) -> bool:
    """Record a failed send of the chip. Returns True when this failure opened (or re-opened) the circuit."""
    if not _usable():
        return False
    status = getattr(error, "status_code", None)
    at_once = {RATE_LIMITED: settings.CIRCUIT_RATE_LIMITED_SECONDS,
               FORBIDDEN: settings.CIRCUIT_FORBIDDEN_SECONDS}.get(status, 0)
    reason = f"{getattr(error, 'kind', 'failure')}" + (f" (HTTP {status})" if status else "")
    try:
        opened, failures = _script("failure", _FAILURE)(
            keys=[_key(chip_id), _tracked()],
            args=[_epoch(now), settings.CIRCUIT_FAILURES, settings.CIRCUIT_OPEN_SECONDS, at_once, chip_id,
                  reason[:80], KEY_TTL])
    except Exception as exc:
        _failed_open("a failure", exc)
        return False
    if opened:
        gates_forget()
        logger.warning("chip %s: send circuit open after %s consecutive failures (%s)", chip_id, failures, reason)
    return bool(opened)


def circuit_success(*, chip_id: int, now: datetime | None = None) -> bool:
    """Record a send the gateway accepted. Returns True when it closed a half-open circuit (the trial passed)."""
    if not _usable():
        return False
    try:
        result = _script("success", _SUCCESS)(keys=[_key(chip_id), _tracked()], args=[_epoch(now), chip_id])
    except Exception as exc:
        _failed_open("a success", exc)
        return False
    if result == 2:
        gates_forget()
        logger.info("chip %s: send circuit closed (the trial send passed)", chip_id)
    return result == 2


def circuit_acquire(*, chip_id: int, now: datetime | None = None) -> str:
    """May the chip take one send now? "closed" (yes), "trial" (yes: the one half-open trial, now leased to the
    caller for CIRCUIT_TRIAL_SECONDS), "open" or "busy" (no: open, or half-open with its trial out)."""
    if not _usable():
        return CLOSED
    try:
        answer = _script("acquire", _ACQUIRE)(keys=[_key(chip_id)],
                                              args=[_epoch(now), settings.CIRCUIT_TRIAL_SECONDS])
    except Exception as exc:
        _failed_open("a routing check", exc)
        return CLOSED
    answer = answer.decode() if isinstance(answer, bytes) else str(answer)
    if answer == "trial":
        gates_forget()
    return answer


def allows(answer: str) -> bool:
    return answer in (CLOSED, "trial")


def _read(chip_ids: list[int]) -> dict[int, list[Any]]:
    client = _client()
    pipe = client.pipeline(transaction=False)
    for chip_id in chip_ids:
        pipe.hmget(_key(chip_id), "f", "u", "t", "o", "r")
    return dict(zip(chip_ids, pipe.execute(), strict=True))


def _state_of(chip_id: int, row: list[Any], now: float) -> CircuitState:
    f, u, t, o, r = row
    until = float(u or 0)
    state = CLOSED if until == 0 else OPEN if now < until else HALF_OPEN
    reason = r.decode() if isinstance(r, bytes) else (r or "")
    return CircuitState(chip_id=chip_id, state=state, failures=int(f or 0),
                        open_until=_when(until) if state != CLOSED else None,
                        trial_in_flight=state == HALF_OPEN and float(t or 0) > now, times_opened=int(o or 0),
                        reason=reason)


def circuit_state(*, chip_id: int, now: datetime | None = None) -> CircuitState:
    """One chip's circuit (for the chip page). Redis down: closed, `known=False`."""
    try:
        row = _read([chip_id])[chip_id]
    except Exception as exc:
        _failed_open("a state read", exc)
        return CircuitState(chip_id, CLOSED, 0, None, False, 0, "", known=False)
    return _state_of(chip_id, row, _epoch(now))


def _tracked_rows() -> dict[int, list[Any]]:
    """The hashes of every tracked chip (two round trips, whatever the pool's size); the expired ones are dropped
    from the set. Raises when Redis cannot be read."""
    client = _client()
    members = [int(m) for m in client.smembers(_tracked())]
    if not members:
        return {}
    rows = _read(members)
    gone = [chip_id for chip_id, row in rows.items() if not any(row)]
    if gone:  # their hash expired: nothing to track any more
        client.srem(_tracked(), *gone)
    return {chip_id: row for chip_id, row in rows.items() if any(row)}


def circuit_states(*, now: datetime | None = None) -> dict[int, CircuitState]:
    """Every chip whose circuit is not plainly closed (failures counted, open, half-open), read from Redis now.
    Raises when Redis cannot be read (/metrics reports that)."""
    moment = _epoch(now)
    return {chip_id: _state_of(chip_id, row, moment) for chip_id, row in _tracked_rows().items()}


def gates_forget() -> None:
    """Drop what this process kept of the gates: the next routing decision reads Redis."""
    global _gates, _gates_forgotten
    _gates_forgotten += 1
    _gates = None


def _gate_rows() -> dict[int, list[Any]]:
    """The tracked chips' hashes as this process read them at most CIRCUIT_GATES_CACHE_SECONDS ago (see the module
    docstring)."""
    global _gates
    kept, moment, generation = _gates, time.monotonic(), _gates_forgotten
    if kept is not None and moment < kept[0]:
        return kept[1]
    rows = _tracked_rows()
    if generation == _gates_forgotten:
        _gates = (moment + settings.CIRCUIT_GATES_CACHE_SECONDS, rows)
    return rows


def routing_gates(*, now: datetime | None = None) -> tuple[set[int], set[int]]:
    """What the router needs: (blocked, on trial) — the chips it must not try now (open, or half-open with their one
    trial already out), and the half-open chips whose trial is free (taking one needs `circuit_acquire`). Every
    other chip's circuit is closed. Read at most every CIRCUIT_GATES_CACHE_SECONDS per process (the module
    docstring); fails open (nothing blocked)."""
    if not _usable():
        return set(), set()
    try:
        rows = _gate_rows()
    except Exception as exc:
        _failed_open("the blocked chips", exc)
        return set(), set()
    if not rows:  # every circuit closed: the usual answer
        return set(), set()
    moment = _epoch(now)
    states = [_state_of(chip_id, row, moment) for chip_id, row in rows.items()]
    blocked = {s.chip_id for s in states if s.state == OPEN or (s.state == HALF_OPEN and s.trial_in_flight)}
    trial = {s.chip_id for s in states if s.state == HALF_OPEN and not s.trial_in_flight}
    return blocked, trial
