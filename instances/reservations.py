"""Reserving many messages of several chips' capacity at once: the warmer's own traffic (W2 7/7).

A batch of warming actions needs a few units from each of a handful of chips. Reserving them one by one costs a
locked read and an update per message; here it is one locking read of the batch's capacity rows (in chip order,
so two dispatchers never deadlock) and one bulk update, under the same caps in effect as routing
(instances.caps) — the caps hold under any concurrency because the rows stay locked until the caller commits.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection, transaction

from instances.caps import caps_in_effect, day_window, hour_window, usage_now
from instances.models import ChipCapacity


def capacity_reserve_batch(*, wants: dict[int, int], now: datetime) -> dict[int, int]:
    """Take up to `wants[chip_id]` messages of each chip's capacity; returns what each chip was granted."""
    if not wants:
        return {}
    with transaction.atomic():
        ChipCapacity.objects.bulk_create([ChipCapacity(chip_id=chip_id) for chip_id in wants], ignore_conflicts=True)
        rows = list(ChipCapacity.objects.select_for_update(of=("self",)).select_related("chip")
                    .filter(chip_id__in=list(wants)).order_by("chip_id"))
        granted: dict[int, int] = {}
        counts: list[tuple[int, int, int]] = []  # (chip id, hour count, day count) after the grant
        for capacity in rows:
            caps, used = caps_in_effect(capacity.chip, capacity), usage_now(capacity, now)
            n = max(0, min(wants[capacity.chip_id], caps.per_hour - used.hour, caps.per_day - used.day))
            granted[capacity.chip_id] = n
            if n:
                counts.append((capacity.chip_id, used.hour + n, used.day + n))
        if counts:  # one UPDATE … FROM (VALUES …) for every row (bulk_update's CASE per row costs more than the SQL)
            table = ChipCapacity._meta.db_table
            values = ", ".join(["(%s, %s, %s)"] * len(counts))
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} AS c SET hour_window = %s, hour_count = v.h::int, day_window = %s, "
                    f"day_count = v.d::int, last_routed_at = %s, updated_at = %s "
                    f"FROM (VALUES {values}) AS v(chip_id, h, d) WHERE c.chip_id = v.chip_id::bigint",
                    [hour_window(now), day_window(now), now, now, *[x for row in counts for x in row]])
    return granted
