"""Transitions per second through chips.services.chip_transition, against the database's ceiling.

Prints, as medians of several rounds: transitions/s with 1 and with 8 threads (each transition is a
transaction: read guard, conditional UPDATE of the chip, INSERT of its history row), single-row UPDATEs/s
on the same database with the same thread counts (the ceiling), and the ratio service / ceiling.

    .venv/bin/python bench/transitions.py [--chips 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import threading
import time

from _setup import median, setup_django


def run_threads(n_threads: int, work) -> float:
    """Run work(thread_index) in n threads; returns operations per second (work returns its count)."""
    counts = [0] * n_threads
    barrier = threading.Barrier(n_threads + 1)

    def target(i: int) -> None:
        from django.db import connection

        barrier.wait()
        counts[i] = work(i)
        connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chips", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup_django()

    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from chips.demo import chip_in_state
    from chips.models import Chip
    from chips.services import Actor, chip_transition

    settings.MAX_CHIPS_ACTIVE = args.chips * 2
    chips = [chip_in_state(status=Chip.Status.ACTIVE, area_code="11").pk for _ in range(args.chips)]
    actor = Actor.system("bench")

    def service_work(n_threads: int):
        def work(i: int) -> int:
            mine = chips[i::n_threads]
            done = 0
            for chip_id in mine:  # active → cooling → active: two transitions, two history rows
                chip_transition(chip=chip_id, transition="cool_down", actor=actor, params={"until": timezone.now()})
                chip_transition(chip=chip_id, transition="resume", actor=actor)
                done += 2
            return done
        return work

    def update_work(n_threads: int):
        def work(i: int) -> int:
            mine = chips[i::n_threads]
            done = 0
            with connection.cursor() as cursor:
                for _ in range(2):
                    for chip_id in mine:
                        cursor.execute("UPDATE chips_chip SET updated_at = now() WHERE id = %s", [chip_id])
                        done += 1
            return done
        return work

    print(f"chips: {args.chips}, rounds: {args.rounds} (medians)")
    for n_threads in (1, 8):
        service = [run_threads(n_threads, service_work(n_threads)) for _ in range(args.rounds)]
        ceiling = [run_threads(n_threads, update_work(n_threads)) for _ in range(args.rounds)]
        s, c = median(service), median(ceiling)
        print(f"{n_threads} thread(s): service {s:8.0f} transitions/s | single-row UPDATE {c:8.0f}/s "
              f"| ratio {s / c:.3f}")
    Chip.objects.all().delete()


if __name__ == "__main__":
    main()
