"""Sustained routing: 8 threads route new contacts for a while against a pool with room for all of them, with the
capacity table's background vacuum on (CAPACITY_VACUUM_EVERY, instances.reservations) and off, in the same run.

Every routed decision writes a new version of one capacity row, and the picks read every row with room; under
load PostgreSQL cannot prune the old versions (another backend always has the page pinned), so without the vacuum
each second is slower than the one before. Printed: decisions/s over the whole run and in its last second, for
each setting, and their ratio (vacuum on / off). Runs at the real time, with business hours set to the whole
day (on a national holiday it travels to the next business day).

    .venv/bin/python bench/route_sustained.py [--chips 50] [--threads 8] [--seconds 8] [--every 1000]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time

from _setup import run_threads, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chips", type=int, default=50)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--every", type=int, default=1000, help="CAPACITY_VACUUM_EVERY of the 'on' run")
    args = parser.parse_args()
    setup_django()

    import time_machine
    from django.conf import settings

    from chips.demo import chip_in_state
    from chips.models import Chip
    from instances import hours, reservations
    from instances.models import ChipCapacity, ContactBinding
    from instances.routing import contact_route
    from instances.services import instance_register

    settings.MAX_CHIPS_ACTIVE = max(10_000, args.chips * 2)
    settings.BUSINESS_HOURS_START, settings.BUSINESS_HOURS_END = clock_time(0, 0), clock_time(23, 59, 59)
    start = datetime.now(UTC)
    while hours.is_holiday(hours.business_day(start)):
        start += timedelta(days=1)
    big = 10**7

    def run(every: int, tag: str) -> tuple[float, float]:
        settings.CAPACITY_VACUUM_EVERY = every
        reservations._taken_since_vacuum = 0
        chips = []
        for _ in range(args.chips):
            chip = chip_in_state(status=Chip.Status.ACTIVE, area_code="11")
            instance_register(chip=chip)
            ChipCapacity.objects.create(chip=chip, max_per_hour=big, max_per_day=big, max_new_contacts_per_day=big)
            chips.append(chip.pk)
        contact_route(contact=f"+5511{tag}00000000")  # the policy row exists, as in a running pool

        def work(i: int) -> list[float]:
            stamps, stop, n = [], time.monotonic() + args.seconds, 0
            while time.monotonic() < stop:
                contact_route(contact=f"+551{tag}{i}{n:08d}")
                stamps.append(time.monotonic())
                n += 1
            return stamps

        elapsed, stamps = run_threads(args.threads, work)
        ended = max(s[-1] for s in stamps if s)
        total = sum(len(s) for s in stamps)
        last = sum(1 for s in stamps for x in s if x >= ended - 1.0)
        while reservations._vacuum_running:
            time.sleep(0.05)
        ContactBinding.objects.filter(chip_id__in=chips).delete()
        Chip.objects.filter(pk__in=chips).delete()
        return total / elapsed, float(last)

    import contextlib

    travel = time_machine.travel(start, tick=True) if start.date() != datetime.now(UTC).date() else \
        contextlib.nullcontext()
    with travel:
        off = run(0, "7")
        on = run(args.every, "8")
    print("=" * 100)
    print(f"bench/route_sustained.py: {args.threads} threads route new contacts for {args.seconds:.0f} s, "
          f"{args.chips} chips with room for all of them")
    print(f"vacuum off (CAPACITY_VACUUM_EVERY=0)   : {off[0]:7.0f} decisions/s over the run, {off[1]:6.0f} in its "
          f"last second")
    print(f"vacuum on  (CAPACITY_VACUUM_EVERY={args.every}): {on[0]:7.0f} decisions/s over the run, {on[1]:6.0f} in "
          f"its last second")
    print(f"ratio on / off: {on[0] / off[0]:.2f} over the run, {on[1] / off[1]:.2f} in the last second")
    print("=" * 100)


if __name__ == "__main__":
    main()
