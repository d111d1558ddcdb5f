"""Route decisions per second (instances.routing.contact_route) against single-row UPDATEs on the same database.

A pool of active, connected production chips (Instance + ChipCapacity rows) with small caps; each round,
8 threads (each its own database connection) route many distinct contacts, and route some of them again a
little later (the sticky path). The caps are sized so that the pool runs out: some requests are refused
with no_capacity. The baseline, measured in the same run with the same threads, is single-row UPDATEs
(autocommit) on the chips table. Time travels to a Tuesday 13:00 UTC (10:00 in São Paulo, business hours)
and ticks from there (time_machine; each request is given its moment, read from that clock).

A deadlock detected by PostgreSQL inside contact_route is counted and reported, not hidden.

After every round the caps are verified (ChipCapacity counters and the decisions actually returned, per
chip); the round is then reset (bindings deleted, counters zeroed) so every round does the same work. The
threads (and their connections) live across rounds, as an API's do; one round of each is run first, unmeasured.
The CPU each phase spent per operation is printed: this process's (the threads, Python) and PostgreSQL's.

    .venv/bin/python bench/route.py [--chips 50] [--contacts 600] [--sticky 0.2] [--threads 8] [--rounds 5]
                                    [--per-hour 10] [--per-day 50] [--new-contacts 40]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from _load import cpu_per_request, cpu_seconds
from _setup import analyze, median, run_threads, setup_django

# A Tuesday, 10:00 in São Paulo (13:00 UTC): inside business hours, not a holiday.
BUSINESS_TIME = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, default=50, help="active connected chips in the pool")
    parser.add_argument("--contacts", type=int, default=600, help="distinct contacts routed per round")
    parser.add_argument("--sticky", type=float, default=0.2, help="share of contacts routed a second time")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-hour", type=int, default=10, help="hourly cap of every chip")
    parser.add_argument("--per-day", type=int, default=50, help="daily cap of every chip")
    parser.add_argument("--new-contacts", type=int, default=40, help="new contacts per 24 h cap of every chip")
    args = parser.parse_args()
    setup_django()

    import time_machine
    from django.conf import settings
    from django.db import OperationalError, connection
    from django.test.utils import CaptureQueriesContext
    from psycopg.errors import DeadlockDetected

    from chips.demo import chip_in_state
    from chips.models import Chip
    from instances.caps import caps_in_effect
    from instances.models import NEW_CONTACT_BUCKETS, ChipCapacity, ContactBinding, RoutingPolicy
    from instances.pool_full import pool_room_changed
    from instances.routing import RoutingRefused, contact_route
    from instances.services import instance_register

    settings.MAX_CHIPS_ACTIVE = max(10_000, args.chips * 2)
    n_threads = args.threads

    with time_machine.travel(BUSINESS_TIME, tick=True):
        chips: list[int] = []
        for _ in range(args.chips):
            chip = chip_in_state(status=Chip.Status.ACTIVE, area_code="11")
            instance_register(chip=chip)
            ChipCapacity.objects.create(chip=chip, max_per_hour=args.per_hour, max_per_day=args.per_day,
                                        max_new_contacts_per_day=args.new_contacts)
            chips.append(chip.pk)
        assert Chip.objects.filter(pk__in=chips, status=Chip.Status.ACTIVE, is_connected=True).count() == args.chips
        policy = RoutingPolicy.load()
        analyze()

        contacts = [f"+55119{n:08d}" for n in range(args.contacts)]
        # Thread i routes its own contacts; every 1/sticky-th of them is routed again a little later (sticky path).
        every = max(1, round(1 / args.sticky)) if args.sticky > 0 else 0
        plans: list[list[str]] = []
        for i in range(n_threads):
            plan: list[str] = []
            for j, contact in enumerate(contacts[i::n_threads]):
                plan.append(contact)
                if every and j % every == every - 1:
                    plan.append(plan[-3] if len(plan) >= 3 else contact)
            plans.append(plan)
        requests_per_round = sum(len(p) for p in plans)

        def route_work(i: int) -> tuple[Counter, Counter]:
            outcomes: Counter = Counter()
            per_chip: Counter = Counter()
            # The moment of each request, ticking from the travelled clock as time_machine's would: its patched
            # clock costs the caller more Python than the decision's own reads (a bench device, not the product's).
            start, clock = datetime.now(UTC), time.perf_counter()
            for contact in plans[i]:
                now = start + timedelta(seconds=time.perf_counter() - clock)
                try:
                    decision = contact_route(contact=contact, now=now)
                except RoutingRefused as exc:
                    outcomes[exc.code] += 1
                except OperationalError as exc:  # counted, not hidden: a deadlock is a 500 for the caller
                    if not isinstance(exc.__cause__, DeadlockDetected):
                        raise
                    outcomes["deadlock"] += 1
                else:
                    outcomes[decision.binding] += 1
                    per_chip[decision.chip_id] += 1
            return outcomes, per_chip

        def update_work(i: int) -> int:
            mine = chips[i::n_threads] or chips[:1]
            n = len(plans[i])
            with connection.cursor() as cursor:
                for k in range(n):
                    cursor.execute("UPDATE chips_chip SET updated_at = now() WHERE id = %s", [mine[k % len(mine)]])
            return n

        def violations(per_chip: Counter) -> tuple[int, int]:
            """(capacity rows over a cap, chips whose decisions this round exceed a cap)."""
            over_rows = over_decisions = 0
            # Every new contact a chip took this round (moved-away bindings included: the cap counts them).
            new_contacts = Counter(ContactBinding.objects.filter(origin=ContactBinding.Origin.ROUTED)
                                   .values_list("chip_id", flat=True))
            for cap in ChipCapacity.objects.filter(chip_id__in=chips).select_related("chip"):
                caps = caps_in_effect(cap.chip, cap)
                if cap.hour_count > caps.per_hour or cap.day_count > caps.per_day:
                    over_rows += 1
                if (per_chip[cap.chip_id] > min(caps.per_hour, caps.per_day)
                        or new_contacts[cap.chip_id] > caps.new_contacts_per_day):
                    over_decisions += 1
            return over_rows, over_decisions

        def reset_round() -> None:
            ContactBinding.objects.all().delete()
            ChipCapacity.objects.update(hour_window=None, hour_count=0, day_window=None, day_count=0,
                                        last_routed_at=None, hour_prospecting=0, hour_follow_up=0, hour_reply=0,
                                        new_contact_hours=[0] * NEW_CONTACT_BUCKETS,
                                        new_contact_counts=[0] * NEW_CONTACT_BUCKETS, new_contact_total=0)
            # The counters were zeroed behind the routing's back, as a new hour would: what this process knew of a
            # full pool (instances.pool_full, keyed by the hour) no longer holds.
            pool_room_changed()

        def queries_per_decision(sample: int = 20) -> dict[str, float]:
            """Statements one decision sends (transaction control included), by path, on a fresh round."""
            reset_round()
            per_path: dict[str, list[int]] = {"new": [], "sticky": []}
            probe = [f"+55118{n:08d}" for n in range(sample)]
            for path in ("new", "sticky"):
                for contact in probe:
                    with CaptureQueriesContext(connection) as ctx:
                        decision = contact_route(contact=contact)
                    assert decision.binding == path, (decision.binding, path)
                    per_path[path].append(len(ctx.captured_queries))
            # Refused (the pool full for the hour, as most of a round's refusals are): the read and the refused take.
            from django.utils import timezone

            from instances.caps import hour_window

            ChipCapacity.objects.filter(chip_id__in=chips).update(hour_window=hour_window(timezone.now()),
                                                                  hour_count=10**6)
            per_path["refused"] = []
            for contact in [f"+55117{n:08d}" for n in range(sample)]:
                with CaptureQueriesContext(connection) as ctx:
                    try:
                        contact_route(contact=contact)
                    except RoutingRefused:
                        pass
                    else:
                        raise AssertionError("a full pool routed")
                per_path["refused"].append(len(ctx.captured_queries))
            return {path: median(counts) for path, counts in per_path.items()}

        contact_route(contact="+5511700000000")  # warm: the policy row exists, as in a running pool
        queries = queries_per_decision()
        # One round of each, not measured: every thread's connection has prepared its statements, as in a running
        # pool (the threads keep their connections across rounds: _setup.run_threads).
        reset_round()
        run_threads(n_threads, route_work)
        run_threads(n_threads, update_work)
        route_rates, update_rates, routed_counts, refused_counts, error_counts = [], [], [], [], []
        totals: Counter = Counter()
        over_rows_total = over_decisions_total = mismatches = 0
        cpu = {"route": Counter(), "update": Counter()}  # CPU seconds of this process and PostgreSQL, per phase
        for _ in range(args.rounds):
            reset_round()
            before = cpu_seconds({})
            elapsed, results = run_threads(n_threads, route_work)
            cpu["route"].update(cpu_per_request(before, cpu_seconds({}), 1))
            outcomes: Counter = sum((r[0] for r in results), Counter())
            per_chip: Counter = sum((r[1] for r in results), Counter())
            routed = sum(per_chip.values())
            route_rates.append(requests_per_round / elapsed)
            routed_counts.append(routed)
            error_counts.append(outcomes["deadlock"])
            refused_counts.append(requests_per_round - routed - outcomes["deadlock"])
            totals.update(outcomes)
            over_rows, over_decisions = violations(per_chip)
            over_rows_total += over_rows
            over_decisions_total += over_decisions
            recorded = sum(ChipCapacity.objects.filter(chip_id__in=chips).values_list("hour_count", flat=True))
            mismatches += int(recorded != routed)

            before = cpu_seconds({})
            elapsed, counts = run_threads(n_threads, update_work)
            cpu["update"].update(cpu_per_request(before, cpu_seconds({}), 1))
            update_rates.append(sum(counts) / elapsed)
        reset_round()

    r, u = median(route_rates), median(update_rates)
    capacity = args.chips * min(args.per_hour, args.per_day)
    refused_codes = ", ".join(f"{k} {v}" for k, v in sorted(totals.items())
                              if k not in ("new", "sticky", "moved", "deadlock"))
    print("=" * 100)
    print(f"bench/route.py: contact_route vs single-row UPDATE, {n_threads} threads (one DB connection each), "
          f"{args.rounds} rounds, medians")
    print(f"pool: {args.chips} active connected chips, caps {args.per_hour}/h, {args.per_day}/day, "
          f"{args.new_contacts} new contacts/24 h (pool capacity {capacity}/h); strategy {policy.strategy}")
    print(f"per round: {args.contacts} distinct contacts + {requests_per_round - args.contacts} sticky repeats "
          f"= {requests_per_round} route requests; time {BUSINESS_TIME:%a %Y-%m-%d %H:%M} UTC (time_machine, tick)")
    print(f"contact_route        : {r:8.0f} decisions/s   (routed or refused; per round: routed "
          f"{median(routed_counts):.0f}, refused {median(refused_counts):.0f}, errors {median(error_counts):.0f})")
    print(f"single-row UPDATE    : {u:8.0f} UPDATEs/s     (baseline, same threads, same database)")
    print(f"ratio route / UPDATE : {r / u:8.3f}")
    print(f"all rounds: decisions new {totals['new']}, sticky {totals['sticky']}, moved {totals['moved']}; "
          f"refused: {refused_codes or 'none'}; errors: deadlock detected {totals['deadlock']}")
    print(f"queries per decision : new contact {queries['new']:.0f}, sticky {queries['sticky']:.0f}, refused "
          f"{queries['refused']:.0f} (statements sent, BEGIN/COMMIT included; median of 20 each, one thread)")
    n = requests_per_round * args.rounds
    print(f"CPU per operation    : decision: this process {cpu['route']['clients'] / n * 1e6:.0f} µs, postgresql "
          f"{cpu['route']['postgresql'] / n * 1e6:.0f} µs; UPDATE: this process "
          f"{cpu['update']['clients'] / n * 1e6:.0f} µs, postgresql {cpu['update']['postgresql'] / n * 1e6:.0f} µs")
    print(f"cap violations       : {over_rows_total + over_decisions_total} (capacity rows over a cap: "
          f"{over_rows_total}, chips with more reservations than a cap: {over_decisions_total}); rounds where "
          f"recorded reservations != decisions: {mismatches}")
    print("=" * 100)
    Chip.objects.filter(pk__in=chips).delete()


if __name__ == "__main__":
    main()
