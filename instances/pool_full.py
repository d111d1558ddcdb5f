"""What this process knows of a full pool (W2 7/7).

A saturated pool answers no_capacity all day, and each refusal used to run the pick: the caps rule evaluated on
every production chip (the whole pool, at 10,000 chips), its capacity rows read, their pages pinned against
the pruning the routed requests need. Once a pick found no chip with room for a kind — confirmed, not because
the rows with room were held by other requests at that instant (instances.reservations: `capacity_take_best`
waits for held rows before it answers none) — this process remembers it for ROUTING_FULL_POOL_SECONDS (1 s; 0:
never), and within that time a new contact of that kind, or a contact leaving its chip, is refused without the
pick. Every other check still runs: the context read (opt-out, kill switch, binding) and a bound contact's own
chip.

What is remembered is keyed by everything else that decides the pick:

- the kind, and the rule in effect for it (instances.caps.rule_version: the settings' caps, the kind's policy);
- the hour (a new hour gives every chip its hourly room back, and rolls the day and the 24 h new-contact buckets);
- the chips the pick left out (open send circuits, a contact's own chip that refused): a pool found full without
  chips A and B is still full without A, B and C, but not without A alone (a circuit that closed gives B back).

A chip that gains room in this second by other means — an operator raising a cap, a chip connecting or promoted,
a restriction ending — is seen by this process at once when the change is made here (`pool_room_changed`: on
Chip's and ChipCapacity's post_save; a chip connected by its session's report or the health check; a new-contact
allowance raised; missing capacity rows created; and a pick that began before such a change is not remembered), and
otherwise at most ROUTING_FULL_POOL_SECONDS later: a request in that time is refused as it would have been a
second earlier.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable
from datetime import datetime

from django.conf import settings

from instances.caps import hour_window

MAX_ENTRIES = 64
# (kind, hour window) → {(rule version, chips left out): monotonic time until which the pool is known full}.
_full_until: dict[tuple[str, datetime], dict[tuple[Hashable, frozenset[int]], float]] = {}
_lock = threading.Lock()
_generation = 0  # how many times room came back here: a pick that began before is not remembered


def pool_generation() -> int:
    """Taken before a pick, handed to `pool_found_full`: room that came back while the pick ran wins."""
    return _generation


def pool_known_full(kind: str, now: datetime, version: Hashable, exclude: Iterable[int]) -> bool:
    """Did a pick in this process find no chip with room for `kind` within ROUTING_FULL_POOL_SECONDS, this hour,
    under this rule, leaving out no more chips than `exclude`?"""
    if not _full_until:
        return False
    found = _full_until.get((kind, hour_window(now)))
    if not found:
        return False
    moment = time.monotonic()
    left_out = exclude if isinstance(exclude, set | frozenset) else set(exclude)
    with _lock:
        known = list(found.items())
    return any(until > moment and excluded <= left_out and known_version == version
               for (known_version, excluded), until in known)


def pool_found_full(kind: str, now: datetime, version: Hashable, exclude: Iterable[int], *, since: int) -> None:
    """A pick that began at generation `since` found no chip with room (see the module docstring); remembered
    unless the setting is 0 or room came back in this process meanwhile."""
    seconds = settings.ROUTING_FULL_POOL_SECONDS
    if seconds <= 0:
        return
    with _lock:
        if since != _generation:
            return
        if len(_full_until) >= MAX_ENTRIES:
            _full_until.clear()
        found = _full_until.setdefault((kind, hour_window(now)), {})
        if len(found) >= MAX_ENTRIES:
            found.clear()
        found[version, frozenset(exclude)] = time.monotonic() + seconds


def pool_room_changed(**_signal: object) -> None:
    """Forget what this process knew of full pools: a chip or a capacity row saved here may have room now."""
    global _generation
    with _lock:
        _generation += 1
        _full_until.clear()
