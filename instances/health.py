"""The periodic instance check: every instance's state read concurrently, only changes written."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from chips.models import Chip
from instances.gateway import GatewayError, gateway
from instances.models import Instance

logger = logging.getLogger(__name__)
LAST_CHECK_KEY = "instances:last_check"
KNOWN_STATES = {s.value for s in Instance.State}


@dataclass
class CheckResult:
    checked: int = 0
    changed: int = 0
    unknown: int = 0
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (name, old, new)


def instances_check(*, concurrency: int | None = None, base_url: str | None = None, api_key: str | None = None,
                    timeout: float | None = None, now: datetime | None = None) -> CheckResult:
    """Read every live instance's connectionState (bounded concurrency) and write what changed.

    One query reads the instances, the reads run concurrently, and the changes are written in bulk in
    one transaction: the SQL does not grow with the pool, only with the number of changes. A read that
    fails or times out makes that instance `unknown` (its chip's connected flag is left as it was: we do
    not know), never a crash of the whole check.
    """
    rows = list(
        Instance.objects.exclude(chip__status=Chip.Status.RETIRED).values_list("pk", "name", "state", "chip_id")
    )
    result = CheckResult(checked=len(rows))
    if not rows:
        return result
    with gateway(base_url=base_url, api_key=api_key, timeout=timeout) as gw:
        states = gw.connection_states([name for _pk, name, _state, _chip in rows],
                                      concurrency=concurrency or settings.HEALTH_CHECK_CONCURRENCY)
    now = now or timezone.now()
    changed: list[Instance] = []
    opened: list[int] = []
    closed: list[int] = []
    for pk, name, old, chip_id in rows:
        read = states.get(name)
        if isinstance(read, GatewayError) or read is None:
            new = Instance.State.UNKNOWN
            result.unknown += 1
        else:
            new = read if read in KNOWN_STATES else Instance.State.UNKNOWN
        if new == old:
            continue
        changed.append(Instance(pk=pk, state=new, state_changed_at=now, updated_at=now))
        result.changes.append((name, old, new))
        logger.info("instance %s: %s → %s (check)", name, old, new)
        if new == Instance.State.OPEN:
            opened.append(chip_id)
        elif new == Instance.State.CLOSE:
            closed.append(chip_id)
    with transaction.atomic():
        Instance.objects.bulk_update(changed, ["state", "state_changed_at", "updated_at"], batch_size=500)
        if opened:
            Chip.objects.filter(pk__in=opened, is_connected=False).update(
                is_connected=True, connection_changed_at=now, updated_at=now)
        if closed:
            Chip.objects.filter(pk__in=closed, is_connected=True).update(
                is_connected=False, connection_changed_at=now, updated_at=now)
    result.changed = len(changed)
    cache.set(LAST_CHECK_KEY, {"at": now.isoformat(), "checked": result.checked, "changed": result.changed,
                               "unknown": result.unknown}, timeout=None)
    return result


def instances_summary() -> dict:
    """Counts by state for /health/instances, with the last check's figures."""
    counts = dict(
        Instance.objects.exclude(chip__status=Chip.Status.RETIRED).values_list("state").annotate(n=Count("pk"))
    )
    try:
        last = cache.get(LAST_CHECK_KEY)
    except Exception:  # Redis down: the counts from PostgreSQL still answer
        last = None
    total = sum(counts.values())
    return {
        "status": "ok" if total == counts.get(Instance.State.OPEN, 0) else "degraded",
        "total": total,
        "by_state": {state: counts.get(state, 0) for state in KNOWN_STATES},
        "last_check": last,
    }
