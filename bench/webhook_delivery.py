"""Consumer webhooks delivered per second (outbox.delivery.deliveries_sweep) against raw signed POSTs.

The receiver is the project's demo consumer (sandbox.consumer) in a subprocess of its own on loopback, answering
204. Each round writes N events for one endpoint subscribed to everything (Event + Delivery rows as event_emit
writes them, inserted in bulk: emitting is not what is measured, and event_emit's after-commit task would go to
the real broker), then 2 worker threads (each its own database connection) run the sweep concurrently until
nothing is due: claim a row (SELECT ... FOR UPDATE SKIP LOCKED + lease), SSRF check, sign (standardwebhooks),
POST, record the attempt. The baseline, measured in the same run from the same process with the same 2 threads,
is N raw signed POSTs (the same body shape, signed by the same library, one keep-alive httpx client per thread)
to the same receiver, with no database.

After every round the receiver's log is checked: exactly one request per event, no webhook-id twice, every
signature valid; and every Delivery row delivered with one attempt.

    .venv/bin/python bench/webhook_delivery.py [--events 1000] [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

from _setup import ROOT, median, run_threads, setup_django


def start_consumer(port: int) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen([sys.executable, "-m", "sandbox.consumer", "--port", str(port), "--log-level", "warning"],
                            cwd=ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/__fake__/received", timeout=1).status_code == 200:
                return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the consumer did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1000, help="events delivered per round")
    parser.add_argument("--workers", type=int, default=2, help="threads sweeping (and posting, for the baseline)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup_django()

    import httpx
    from django.conf import settings
    from django.utils import timezone
    from standardwebhooks.webhooks import Webhook

    from outbox import delivery, services
    from outbox.models import Delivery, DeliveryAttempt, Event
    from sandbox.server import free_port

    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True  # the receiver is on loopback
    port = free_port()
    consumer = start_consumer(port)
    control = httpx.Client(base_url=f"http://127.0.0.1:{port}/__fake__", timeout=30)
    url = f"http://127.0.0.1:{port}/hooks"
    endpoint = services.endpoint_create(url=url, description="bench")
    signer = Webhook(endpoint.secret)
    n, workers = args.events, args.workers

    def write_events() -> None:
        now = timezone.now()
        events = Event.objects.bulk_create(
            Event(type="message.received", occurred_at=now, created_at=now,
                  data={"message_id": i, "chip_id": 12, "contact": "5511987654321", "text": f"mensagem {i}",
                        "received_at": now.isoformat()}) for i in range(n))
        Delivery.objects.bulk_create(Delivery(event=e, endpoint=endpoint, next_attempt_at=now, created_at=now)
                                     for e in events)

    def check_round() -> tuple[int, int]:
        """(problems in what the receiver got, delivery rows not delivered in one attempt)."""
        received = control.get("/received").json()["received"]
        control.post("/reset")
        ids = Counter(r["headers"]["webhook-id"] for r in received)
        problems = sum(c - 1 for c in ids.values()) + abs(len(ids) - n)
        for r in received:
            try:
                signer.verify(r["body"], r["headers"])
            except Exception:
                problems += 1
        bad_rows = Delivery.objects.exclude(status=Delivery.Status.DELIVERED, attempts=1).count()
        return problems, bad_rows

    def sweep_work(i: int) -> int:
        return delivery.deliveries_sweep(budget_seconds=3600).get("delivered", 0)

    def raw_work(i: int) -> int:
        sent = 0
        with httpx.Client(timeout=10) as http:
            for k in range(i, n, workers):
                at = datetime.now(UTC)
                body = json.dumps({"type": "message.received", "id": f"evt_raw{k:08d}",
                                   "timestamp": at.isoformat().replace("+00:00", "Z"),
                                   "data": {"message_id": k, "chip_id": 12, "contact": "5511987654321",
                                            "text": f"mensagem {k}", "received_at": at.isoformat()}},
                                  separators=(",", ":"), ensure_ascii=False)
                msg_id = f"evt_raw{k:08d}"
                headers = {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
                           "webhook-signature": signer.sign(msg_id, at, body), "Content-Type": "application/json"}
                response = http.post(url, content=body.encode(), headers=headers)
                sent += response.status_code == 204
        return sent

    outbox_rates, raw_rates, attempt_ms = [], [], []
    problems_total = bad_rows_total = 0
    try:
        for _ in range(args.rounds):
            write_events()
            elapsed, counts = run_threads(workers, sweep_work)
            outbox_rates.append(sum(counts) / elapsed)
            attempt_ms.append(median(list(DeliveryAttempt.objects.values_list("duration_ms", flat=True))))
            problems, bad_rows = check_round()
            problems_total += problems
            bad_rows_total += bad_rows
            Event.objects.all().delete()

            elapsed, counts = run_threads(workers, raw_work)
            raw_rates.append(sum(counts) / elapsed)
            control.post("/reset")
    finally:
        consumer.terminate()
        consumer.wait(timeout=10)
        endpoint.delete()

    o, r = median(outbox_rates), median(raw_rates)
    print("=" * 100)
    print(f"bench/webhook_delivery.py: outbox sweep vs raw signed POSTs, {workers} worker threads (one DB connection "
          f"each), {args.rounds} rounds of {n} events, medians")
    print("receiver: sandbox.consumer (uvicorn, own process, loopback, answers 204)")
    print(f"outbox deliveries    : {o:8.0f} events/s   (claim SKIP LOCKED + lease, SSRF check, sign, POST, record; "
          f"median attempt {median(attempt_ms):.0f} ms)")
    print(f"raw signed POSTs     : {r:8.0f} POSTs/s    (baseline, same threads, same receiver, no database)")
    print(f"ratio outbox / raw   : {o / r:8.3f}")
    print(f"checks               : receiver problems (missing, duplicated or unverifiable) {problems_total}; "
          f"rows not delivered in one attempt {bad_rows_total}")
    print("=" * 100)


if __name__ == "__main__":
    main()
