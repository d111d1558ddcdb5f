"""Orchestrator cycle wall time and query count at 1,000, 10,000 and 50,000 chips.

For each pool size: a cycle that changes nothing (median of --rounds) and a cycle that makes 100
changes (100 warming chips whose guard holds are promoted to ready). Target: a no-change cycle at
10,000 chips in <= 100 ms. The baseline in the same run is the single grouped count query the cycle
is built around (`SELECT status, count(*) ... GROUP BY status`).

    .venv/bin/python bench/orchestrator.py [--sizes 1000,10000,50000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

from _setup import median, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    setup_django()

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from chipfarm.models import PoolConfiguration
    from chipfarm.orchestrator import run_cycle
    from chipfarm.pool import state_counts
    from chips.models import Chip

    S = Chip.Status
    config = PoolConfiguration.defaults()
    config.production_min, config.production_max, config.ready_min, config.warmup_buffer = 10, 100_000, 1, 1
    config.save()
    mix = [S.ACTIVE, S.READY, S.WARMING, S.WARMING, S.DEGRADED, S.BANNED, S.COOLING, S.PENDING]

    def grow_to(n: int) -> None:
        # Volume rows in stable states (trusted, connected, young warming, cooling for a day): no step acts on them.
        have = Chip.objects.count()
        now = timezone.now()
        Chip.objects.bulk_create(
            [Chip(area_code="11", status=mix[i % len(mix)], trust_score=90, is_connected=True,
                  connection_changed_at=now, warming_phase="growth", warming_started_at=now,
                  cooling_until=now + timedelta(days=1) if mix[i % len(mix)] == S.COOLING else None)
             for i in range(have, n)],
            batch_size=5000,
        )
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE chips_chip")

    def timed_cycle() -> tuple[float, int, int]:
        with CaptureQueriesContext(connection) as ctx:
            started = time.perf_counter()
            report = run_cycle()
            elapsed = time.perf_counter() - started
        return elapsed, len(ctx.captured_queries), report.changes, report.steps

    print(f"rounds: {args.rounds} (medians); times in ms")
    print(f"{'chips':>7} | {'no-change cycle':>15} {'queries':>7} | {'count query':>11} {'ratio':>6} | "
          f"{'100-change cycle':>16} {'queries':>7} {'changes':>7}")
    for size in [int(s) for s in args.sizes.split(",")]:
        grow_to(size)
        run_cycle()  # settle: snapshot, alerts
        quiet = [timed_cycle() for _ in range(args.rounds)]
        assert all(q[2] == 0 for q in quiet), f"the quiet cycle changed something: {[q[3] for q in quiet]}"
        baseline = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            state_counts()
            baseline.append(time.perf_counter() - started)
        busy = []
        for _ in range(max(3, args.rounds // 2)):
            ids = list(Chip.objects.filter(status=S.WARMING).values_list("pk", flat=True)[:100])
            Chip.objects.filter(pk__in=ids).update(warming_phase="operation", trust_score=95,
                                                   warming_started_at=timezone.now() - timedelta(days=30))
            busy.append(timed_cycle())
            # put them back in warming for the next round, with volume rows' facts (not through the lifecycle:
            # this is a benchmark of the cycle, the rows are scenery)
            Chip.objects.filter(pk__in=ids).update(warming_phase="growth", warming_started_at=timezone.now())
            Chip.objects.filter(pk__in=ids).update(status=S.WARMING)
        q_ms = median([q[0] for q in quiet]) * 1000
        b_ms = median(baseline) * 1000
        busy_ms = median([b[0] for b in busy]) * 1000
        print(f"{size:>7} | {q_ms:>15.1f} {quiet[0][1]:>7} | {b_ms:>11.1f} {q_ms / b_ms:>6.1f} | "
              f"{busy_ms:>16.1f} {busy[0][1]:>7} {busy[0][2]:>7}")
    Chip.objects.all().delete()


if __name__ == "__main__":
    main()
