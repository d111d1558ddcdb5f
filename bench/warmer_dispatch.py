"""Warming actions dispatched per second with 2 workers over 10,000 due rows, and how many went twice.

Two dispatcher processes (forked, each with its own database connection, as two Celery prefork workers) sweep
`warming_dispatch(limit=100)` until nothing is due; the fake Evolution runs in its own process on loopback. The
baseline, measured in the same run, is the fake's raw sendText rate from 2 processes calling the Evolution client
directly, one send after another (the network ceiling the dispatcher works under). "Dispatched twice" counts
texts the fake received more than once (every action carries a unique text) — it must be 0.

    .venv/bin/python bench/warmer_dispatch.py [--rows 10000] [--workers 2] [--batch 100] [--latency 0]
        [--null-gateway]

`--latency` makes the fake answer every request that many seconds late (a real gateway is tens to hundreds of
milliseconds away); `--null-gateway` replaces the HTTP fake by an in-process gateway that accepts every send at
once, which measures the dispatcher's own bookkeeping (the database work per action) with nothing else in the way.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import httpx
from _setup import ROOT, NullGateway, QueryCounter, analyze, setup_django

NOON = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday, 12:00 in São Paulo
API_KEY = "bench-evolution-key"


def _run_workers(n: int, target) -> list:
    """`target(i, queue)` in n forked processes (as n Celery prefork workers would run it); what each put."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    workers = [ctx.Process(target=target, args=(i, out)) for i in range(n)]
    for w in workers:
        w.start()
    results: list = []
    while len(results) < n:
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            if any(w.exitcode for w in workers):
                for w in workers:
                    w.kill()
                raise SystemExit("a worker process failed (its traceback is above)") from None
    for w in workers:
        w.join()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chips", type=int, default=20)
    parser.add_argument("--batch", type=int, default=100, help="warming_dispatch(limit=...) per sweep")
    parser.add_argument("--latency", type=float, default=0.0, help="the fake's added latency per request, s")
    parser.add_argument("--null-gateway", action="store_true", help="an in-process gateway instead of HTTP")
    args = parser.parse_args()
    setup_django()

    import time_machine
    from django.conf import settings
    from django.db import connection, connections

    from chips.models import Chip
    from instances.gateway import gateway
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
        analyze()

        # Baseline: the raw sendText rate of the fake from the same number of worker processes.
        sample = min(2000, args.rows)
        names = [c.instance_name for c in chips]
        connections.close_all()  # the workers are forked: none may inherit this process's connection

        def raw(i: int, out) -> None:
            with gateway() as client:
                for n in range(i, sample, args.workers):
                    client.send_text(names[n % len(names)], number="5511999990000", text=f"raw {n}")
            out.put(None)

        started = time.perf_counter()
        _run_workers(args.workers, raw)
        raw_rate = sample / (time.perf_counter() - started)
        httpx.post(f"{url}/__fake__/reset-stats", timeout=10)
        httpx.post(f"{url}/__fake__/latency", json={"seconds": args.latency}, timeout=10)

        def sweep(_i: int, out) -> None:
            null_gateway = NullGateway() if args.null_gateway else None
            queries = QueryCounter()
            with time_machine.travel(NOON, tick=True), queries.counting():
                while warming_dispatch(limit=args.batch, client=null_gateway).claimed:
                    pass
            connection.close()
            out.put((queries.total, null_gateway.texts if null_gateway is not None else []))

        started = time.perf_counter()
        results = _run_workers(args.workers, sweep)
        elapsed = time.perf_counter() - started
        total_queries = sum(r[0] for r in results)

        if args.null_gateway:
            sent_texts = [t for r in results for t in r[1]]
        else:
            sent_texts = [m["text"] for m in httpx.get(f"{url}/__fake__/sent-messages", timeout=30).json()]
        texts = Counter(t for t in sent_texts if t.startswith("bench message"))
        twice = sum(1 for n in texts.values() if n > 1)
        statuses = Counter(
            WarmingAction.objects.filter(text__startswith="bench message").values_list("status", flat=True)
        )
        rate = statuses.get("sent", 0) / elapsed
        print("=" * 96)
        print(f"bench/warmer_dispatch.py: {args.rows} due rows, {args.workers} dispatcher processes, "
              f"{args.chips} chips, batches of {args.batch}, "
              + ("an in-process null gateway (no HTTP)" if args.null_gateway else
                 f"fake Evolution in its own process, latency {args.latency * 1000:.0f} ms"))
        print(f"dispatched        : {rate:8.0f} actions/s  ({statuses.get('sent', 0)} sent in {elapsed:.1f} s; "
              f"statuses {dict(statuses)})")
        print(f"raw sendText      : {raw_rate:8.0f} sends/s    (baseline: the client alone, {sample} sends)")
        print(f"ratio             : {rate / raw_rate:.2f}")
        print(f"dispatched twice  : {twice}")
        print(f"queries per action: {total_queries / max(1, sum(statuses.values())):.2f} "
              f"({total_queries} statements for {sum(statuses.values())} actions)")
        print("=" * 96)
        WarmingAction.objects.all().delete()
        Chip.objects.filter(pk__in=[c.pk for c in chips]).delete()
    finally:
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    main()
