"""The instance check (instances.health.instances_check: concurrent, bounded reads) against a sequential loop.

1,000 instances in the fake Evolution (FakeServer, in-process on loopback) with 50 ms latency on every call.
Both sides read the same instances' connectionState: the project's `instances_check()` (one query, reads
with at most HEALTH_CHECK_CONCURRENCY in flight, changes written in bulk) against a loop of
`Gateway.connection_state` (the configured gateway, Evolution), one call after another. To keep the run short,
the sequential loop is timed over a sample (--sample, default 100) and extrapolated to all instances; the output
says so.

Chips and Instance rows are bulk-created (a benchmark fixture, not the lifecycle): their state is `open`,
like the fake's, so every round reads everything and writes nothing. The last check's summary goes to the
cache under a bench key prefix, not over the dev server's.

    .venv/bin/python bench/health_check.py [--instances 1000] [--latency 0.05] [--sample 100] [--rounds 3]
                                           [--concurrency N]
"""

from __future__ import annotations

import argparse
import time

from _setup import median, setup_django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the fake sleeps in every call")
    parser.add_argument("--sample", type=int, default=100, help="instances the sequential loop reads per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=None, help="default: settings.HEALTH_CHECK_CONCURRENCY")
    args = parser.parse_args()
    setup_django()

    from django.conf import settings

    settings.CACHES["default"]["KEY_PREFIX"] = "chipfarm-bench"  # before the first cache access

    from chips.models import Chip
    from instances.gateway import gateway
    from instances.health import LAST_CHECK_KEY, instances_check
    from instances.models import Instance
    from sandbox.evolution import FakeEvolution
    from sandbox.server import FakeServer

    concurrency = args.concurrency or settings.HEALTH_CHECK_CONCURRENCY
    fake = FakeEvolution(api_key="bench-evolution-key")
    server = FakeServer(fake.app).start()
    try:
        fake.server_url = server.url
        settings.EVOLUTION_API_URL = server.url
        settings.EVOLUTION_API_KEY = fake.api_key

        names = [f"bench-{i:05d}" for i in range(args.instances)]
        chips = Chip.objects.bulk_create(
            [Chip(area_code="11", instance_name=name, is_connected=True) for name in names], batch_size=1000
        )
        Instance.objects.bulk_create([Instance(chip=chip, name=chip.instance_name, state=Instance.State.OPEN)
                                      for chip in chips], batch_size=1000)
        fake.add_instances(names, "open")
        fake.set_latency(args.latency)
        sample = names[:: max(1, args.instances // args.sample)][: args.sample]

        check_times, per_call, peaks, results = [], [], [], []
        with gateway() as client:
            for _ in range(args.rounds):
                fake.reset_stats()
                started = time.perf_counter()
                result = instances_check(concurrency=concurrency)
                check_times.append(time.perf_counter() - started)
                peaks.append(fake.peak_in_flight)
                results.append(result)

                started = time.perf_counter()
                states = [client.connection_state(name) for name in sample]
                per_call.append((time.perf_counter() - started) / len(sample))
                assert set(states) == {"open"}, states
        from django.core.cache import cache

        last = cache.get(LAST_CHECK_KEY)
        cache.delete(LAST_CHECK_KEY)
    finally:
        fake.reset()  # releases anything still sleeping in the fake
        server.stop()

    check = median(check_times)
    sequential = median(per_call) * args.instances
    print("=" * 100)
    print(f"bench/health_check.py: {args.instances} instances, fake Evolution in-process on {server.url} with "
          f"{args.latency * 1000:.0f} ms latency per call, {args.rounds} rounds, medians")
    speed_up = sequential / check
    print(f"instances_check(), concurrency {concurrency:<3}  : {check:7.2f} s  "
          f"({args.instances / check:5.0f} instances/s, peak in flight {max(peaks)})")
    print(f"sequential connection_state loop: {sequential:7.2f} s  ({args.instances / sequential:5.0f} instances/s) "
          f"EXTRAPOLATED from {len(sample)} instances per round ({median(per_call) * 1000:.1f} ms per call) "
          f"x {args.instances}")
    verdict = "met" if speed_up >= 10 else "NOT MET"
    print(f"speed-up                        : {speed_up:7.1f}x  (target >= 10x: {verdict})")
    checked = sorted({(r.checked, r.changed, r.unknown) for r in results})
    print(f"every check (checked, changed, unknown): {checked}; cached summary of the last: {last}")
    print("=" * 100)
    Chip.objects.filter(instance_name__in=names).delete()


if __name__ == "__main__":
    main()
