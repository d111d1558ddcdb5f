"""Warming actions dispatched per second with 2 workers over 10,000 due rows, and how many went twice.

Two dispatcher threads (each its own database connection) sweep `warming_dispatch(limit=50)` until
nothing is due; the fake Evolution runs in its own process on loopback. The baseline, measured in the
same run, is the fake's raw sendText rate from 2 threads calling the Evolution client directly (the
network ceiling the dispatcher works under). "Dispatched twice" counts texts the fake received more than
once (every action carries a unique text) — it must be 0.

    .venv/bin/python bench/warmer_dispatch.py [--rows 10000] [--workers 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from _setup import ROOT, setup_django

NOON = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday, 12:00 in São Paulo
API_KEY = "bench-evolution-key"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chips", type=int, default=20)
    args = parser.parse_args()
    setup_django()

    import time_machine
    from django.conf import settings
    from django.db import connection

    from chips.models import Chip
    from instances.gateway.evolution import EvolutionGateway as EvolutionClient
    from instances.models import ChipCapacity
    from sandbox.server import free_port
    from warmer.models import WarmingAction
    from warmer.services import warming_dispatch

    port = free_port()
    fake = subprocess.Popen([sys.executable, "-m", "sandbox.evolution", "--port", str(port),
                             "--api-key", API_KEY], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        settings.EVOLUTION_API_URL, settings.EVOLUTION_API_KEY, settings.WARMER_TYPING_MS_MAX = url, API_KEY, 0

        chips = Chip.objects.bulk_create([
            Chip(area_code="11", status=Chip.Status.ACTIVE, is_connected=True, phone=f"+5511987{i:06d}",
                 instance_name=f"bench-{i}") for i in range(args.chips)
        ])
        ChipCapacity.objects.bulk_create([ChipCapacity(chip=c, max_per_day=10**6, max_per_hour=10**6) for c in chips])
        httpx.post(f"{url}/__fake__/add-instances", json={"names": [c.instance_name for c in chips]}, timeout=10)
        WarmingAction.objects.bulk_create([
            WarmingAction(chip=chips[i % len(chips)], peer=chips[(i + 1) % len(chips)], kind="reply",
                          text=f"bench message {i}", day=NOON.date(), due_at=NOON - timedelta(seconds=i % 600))
            for i in range(args.rows)
        ], batch_size=5000)

        # Baseline: the raw sendText rate of the fake with the same number of threads.
        sample = min(2000, args.rows)

        def raw(i: int) -> None:
            with EvolutionClient() as client:
                for n in range(i, sample, args.workers):
                    client.send_text(chips[n % len(chips)].instance_name, number="5511999990000", text=f"raw {n}")

        started = time.perf_counter()
        threads = [threading.Thread(target=raw, args=(i,)) for i in range(args.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        raw_rate = sample / (time.perf_counter() - started)
        httpx.post(f"{url}/__fake__/reset-stats", timeout=10)

        with time_machine.travel(NOON, tick=True):
            def sweep() -> None:
                try:
                    while warming_dispatch(limit=50).claimed:
                        pass
                finally:
                    connection.close()

            started = time.perf_counter()
            threads = [threading.Thread(target=sweep) for _ in range(args.workers)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started

        sent = httpx.get(f"{url}/__fake__/sent-messages", timeout=30).json()
        texts = Counter(m["text"] for m in sent if m["text"].startswith("bench message"))
        twice = sum(1 for n in texts.values() if n > 1)
        statuses = Counter(
            WarmingAction.objects.filter(text__startswith="bench message").values_list("status", flat=True)
        )
        rate = statuses.get("sent", 0) / elapsed
        print("=" * 96)
        print(f"bench/warmer_dispatch.py: {args.rows} due rows, {args.workers} dispatcher threads, "
              f"{args.chips} chips, fake Evolution in its own process")
        print(f"dispatched        : {rate:8.0f} actions/s  ({statuses.get('sent', 0)} sent in {elapsed:.1f} s; "
              f"statuses {dict(statuses)})")
        print(f"raw sendText      : {raw_rate:8.0f} sends/s    (baseline: the client alone, {sample} sends)")
        print(f"ratio             : {rate / raw_rate:.2f}")
        print(f"dispatched twice  : {twice}")
        print("=" * 96)
        WarmingAction.objects.all().delete()
        Chip.objects.filter(pk__in=[c.pk for c in chips]).delete()
    finally:
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
