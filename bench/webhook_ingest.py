"""Evolution webhook events per second and latency through a real HTTP server, against a no-op baseline.

The Django app runs under gunicorn in a subprocess (2 workers x 4 threads, gthread) on the bench database;
a pool of client threads (keep-alive) POSTs /webhooks/evolution with the X-Webhook-Secret header.
Each round posts N distinct, realistic envelopes (shaped like the fake Evolution's: messages.upsert
inbound, messages.update acks of messages we sent, connection.update open) plus 10 % re-sent byte for byte,
in random order (so some duplicates race their original). The baseline is the same number of requests from
the same threads to GET /health on the same server: a no-op view that runs one `SELECT 1`.

The webhook stores each message event (one INSERT … ON CONFLICT DO NOTHING) and kicks the drain, which a Celery
worker (2 processes) runs during the round; after each round the bench waits until every stored event is applied
and prints how long that took. At the end the database is checked: one WebhookReceipt per distinct message event,
all applied, one DeliveryEvent per inbound message and per ack, no event applied twice, every acked OutboundMessage
updated. Queries per event are counted in process (Django's test client, then the drain).

The clients share the machine's cores with the server, the worker and PostgreSQL (the real gateway posts from its
own machine), so they are as light as Python allows: the standard library's http.client, about a quarter of the
CPU per request that httpx spends (`--client httpx` measures with httpx instead). The CPU each side spent per
request (the server's processes, the worker's, PostgreSQL's, the clients') is printed for both phases.

With `--subscribed` the business app is subscribed to every event (sandbox.consumer in its own process, checking
signatures): the drain also records message.received and message.status for it, and the worker delivers them;
each round then waits for every delivery too, and the check adds: one event per inbound message and per ack,
every delivery done, each accepted by the consumer once.

    .venv/bin/python bench/webhook_ingest.py [--events 2000] [--clients 8] [--rounds 3] [--chips 20]
                                             [--client stdlib|httpx] [--subscribed]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from _load import StdlibClient, consumer_accepted, cpu_per_request, cpu_seconds, start_consumer, told_report, wait_told
from _setup import BENCH_DB, ROOT, analyze, median, setup_django

DUPLICATE_SHARE = 0.10
MIX = (("messages.upsert", 0.6), ("messages.update", 0.3), ("connection.update", 0.1))
EVOLUTION_URL = "http://127.0.0.1:8081"


# ----------------------------------------------------------------------------------------------- the server


def _env(secret: str, queue: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": BENCH_DB,
        "DJANGO_SETTINGS_MODULE": "config.settings.base",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "EVOLUTION_WEBHOOK_SECRET": secret,
        "CELERY_TASK_DEFAULT_QUEUE": queue,  # the webhook's kicks reach the bench's own worker
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",  # the consumer of --subscribed listens on loopback
    }


def start_worker(log, secret: str, queue: str) -> subprocess.Popen:
    """The Celery worker that drains the stored events (2 processes, as `make run` starts it)."""
    cmd = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "--concurrency", "2",
           "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", "-n", f"{queue}@%h"]
    return subprocess.Popen(cmd, cwd=ROOT, env=_env(secret, queue), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_server(port: int, log, secret: str, queue: str) -> subprocess.Popen:
    env = _env(secret, queue)
    cmd = [sys.executable, "-m", "gunicorn", "config.wsgi:application", "-b", f"127.0.0.1:{port}",
           "-w", "2", "--threads", "4", "--worker-class", "gthread", "--log-level", "warning",
           "--graceful-timeout", "5", "--keep-alive", "30"]
    # Its own process group, so stop_server() reaches the workers even if the master dies first.
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(proc: subprocess.Popen, url: str, log_path: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    with open(log_path) as f:
        tail = f.read()[-3000:]
    raise RuntimeError(f"gunicorn did not answer GET /health within {timeout:.0f} s; its log:\n{tail}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):  # stray workers of our group, normally none
        os.killpg(proc.pid, signal.SIGKILL)


# ----------------------------------------------------------------------------------------------- the events


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_events(n: int, instances: list[dict], sent: list[tuple[str, dict, str]], rng: random.Random,
                 now: datetime) -> tuple[list[bytes], Counter]:
    """n distinct envelopes (bytes, as Evolution posts them) and how many of each kind.

    `sent`: (key id, instance, remote jid) of OutboundMessage rows; each ack acknowledges one of them once.
    """
    bodies: list[bytes] = []
    kinds: Counter = Counter()
    events = rng.choices([e for e, _ in MIX], weights=[w for _, w in MIX], k=n)
    acks = iter(sent)
    for k, event in enumerate(events):
        moment = now + timedelta(milliseconds=k)
        ack = next(acks, None) if event == "messages.update" else None
        if ack is not None:
            key_id, inst, jid = ack
            status = "DELIVERY_ACK" if k % 2 else "READ"
            data = {"keyId": key_id, "remoteJid": jid, "fromMe": True, "status": status,
                    "instanceId": inst["id"], "messageId": "cm" + secrets.token_hex(12)[:23]}
            kinds["ack " + status] += 1
        elif event == "connection.update":
            inst = rng.choice(instances)
            data = {"instance": inst["name"], "wuid": inst["jid"], "profileName": inst["name"],
                    "profilePictureUrl": None, "state": "open", "statusReason": 200}
            kinds["connection open"] += 1
        else:  # messages.upsert (also when no sent message is left to acknowledge)
            event, inst = "messages.upsert", rng.choice(instances)
            digits = f"55119{rng.randrange(10**8):08d}"
            data = {
                "key": {"remoteJid": f"{digits}@s.whatsapp.net", "fromMe": False,
                        "id": "3A" + secrets.token_hex(9).upper()},
                "pushName": f"Contato {digits[-4:]}", "status": "DELIVERY_ACK",
                "message": {"conversation": f"Oi, tudo bem? ({k})", "messageContextInfo": {}},
                "messageType": "conversation", "messageTimestamp": int(moment.timestamp()),
                "instanceId": inst["id"], "source": "ios",
            }
            kinds["inbound"] += 1
        envelope = {"event": event, "instance": inst["name"], "data": data,
                    "destination": "http://127.0.0.1/webhooks/evolution", "date_time": _iso(moment),
                    "sender": inst["jid"], "server_url": EVOLUTION_URL, "apikey": inst["token"]}
        bodies.append(json.dumps(envelope, separators=(",", ":")).encode())
    return bodies, kinds


def _kind_label(body: bytes) -> str:
    envelope = json.loads(body)
    return {"messages.upsert": "inbound", "connection.update": "connection open"}.get(envelope["event"], "ack")


# ----------------------------------------------------------------------------------------------- the load


CLIENT = "stdlib"  # or "httpx" (--client)


def _client(base_url: str):
    if CLIENT == "httpx":
        import httpx

        return httpx.Client(base_url=base_url, timeout=30.0)
    return StdlibClient(base_url, timeout=30.0)


def timed(base_url: str, n_clients: int, n_requests: int, make_request,
          by_label: dict[str, list[float]] | None = None, label=None) -> tuple[float, list[float], Counter]:
    """Client c sends requests c, c + n_clients, ... (make_request(http, i) -> answer) over its own keep-alive
    connection; returns (wall seconds, every request's latency, answers). With `label(i)`, each latency is also
    added to `by_label[label(i)]`."""
    latencies: list[list[float]] = [[] for _ in range(n_clients)]
    labelled: list[list[tuple[str, float]]] = [[] for _ in range(n_clients)]
    answers: list[Counter] = [Counter() for _ in range(n_clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_clients + 1)

    def client(c: int) -> None:
        try:
            with _client(base_url) as http:
                http.get("/health")  # open the connection before the clock starts
                barrier.wait()
                for i in range(c, n_requests, n_clients):
                    started = time.perf_counter()
                    answer = make_request(http, i)
                    latencies[c].append(time.perf_counter() - started)
                    answers[c][answer] += 1
                    if label is not None:
                        labelled[c].append((label(i), latencies[c][-1]))
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n_clients)]
    for t in threads:
        t.start()
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: its error is raised below
        barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    for per in labelled:
        for name, latency in per:
            by_label.setdefault(name, []).append(latency)
    return elapsed, [x for per in latencies for x in per], sum(answers, Counter())


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def wait_applied(*, started: float, timeout: float = 300.0) -> float:
    """Seconds until the drain has applied every stored event (it runs while the round is posted)."""
    from instances.models import WebhookReceipt

    while WebhookReceipt.objects.filter(applied_at__isnull=True).exists():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"events still not applied after {timeout:.0f} s: is the worker running?")
        time.sleep(0.05)
    return time.perf_counter() - started


def queries_per_event(instances: list[dict], sent: list, rng: random.Random) -> dict[str, tuple[float, float]]:
    """Statements per event of each kind: the webhook's (the request) and the drain's (batches of 100, divided)."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from instances.inbox import receipts_drain, shards

    settings.ALLOWED_HOSTS = ["*"]
    client = Client(headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
    bodies, _kinds = build_events(300, instances, sent, rng, datetime.now(UTC))
    by_kind: dict[str, list[int]] = {}
    for body in bodies:
        kind = _kind_label(body)
        with CaptureQueriesContext(connection) as ctx:
            client.post("/webhooks/evolution", data=body, content_type="application/json")
        by_kind.setdefault(kind, []).append(len(ctx.captured_queries))
    drained: dict[str, float] = {}
    for kind, event in (("inbound", "messages.upsert"), ("ack", "messages.update")):
        from instances.models import WebhookReceipt

        # Drain one kind at a time: hold the other kind's rows back by marking them, then restore.
        others = list(WebhookReceipt.objects.filter(applied_at__isnull=True).exclude(event=event)
                      .values_list("pk", flat=True))
        WebhookReceipt.objects.filter(pk__in=others).update(applied_at=datetime.now(UTC))
        n = WebhookReceipt.objects.filter(applied_at__isnull=True).count()
        with CaptureQueriesContext(connection) as ctx:
            for shard in range(shards()):
                receipts_drain(shard)
        drained[kind] = len(ctx.captured_queries) / max(1, n)
        WebhookReceipt.objects.filter(pk__in=others).update(applied_at=None)
    return {kind: (median(counts), drained.get(kind, 0.0)) for kind, counts in sorted(by_kind.items())}


# ----------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="distinct events per round")
    parser.add_argument("--clients", type=int, default=8, help="client threads")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chips", type=int, default=20, help="chips (instances) the events are spread over")
    parser.add_argument("--client", choices=("stdlib", "httpx"), default="stdlib", help="the clients' HTTP library")
    parser.add_argument("--subscribed", action="store_true",
                        help="the business app subscribed to every event: the worker also tells it each message "
                             "and receipt (message.received, message.status) through the outbox")
    args = parser.parse_args()
    global CLIENT
    CLIENT = args.client
    setup_django()

    from django.conf import settings
    from django.db.models import Count

    from chips.demo import chip_in_state
    from chips.models import Chip
    from instances.models import DeliveryEvent, Instance, OutboundMessage, WebhookReceipt
    from instances.services import instance_register
    from sandbox.server import free_port

    settings.MAX_CHIPS_ACTIVE = max(10_000, args.chips * 2)
    secret = settings.EVOLUTION_WEBHOOK_SECRET
    rng = random.Random(20261124)

    instances = []
    for _ in range(args.chips):
        chip = chip_in_state(status=Chip.Status.ACTIVE, area_code="11")
        Instance.objects.filter(pk=instance_register(chip=chip).pk).update(state=Instance.State.CONNECTING)
        instances.append({"name": chip.instance_name, "chip_id": chip.pk, "id": str(uuid.uuid4()),
                          "token": str(uuid.uuid4()).upper(), "jid": f"{chip.phone.lstrip('+')}@s.whatsapp.net"})

    # The messages the acks refer to: sent through Evolution (status sent, with its key id).
    n_acks = int(args.events * dict(MIX)["messages.update"] * 1.5) + 10
    sent: list[tuple[str, dict, str]] = []
    rows = []
    for i in range(n_acks * (args.rounds + 1)):  # the last slice: for counting queries at the end
        inst = instances[i % len(instances)]
        key_id, contact = "3EB0" + secrets.token_hex(9).upper(), f"+55119{rng.randrange(10**8):08d}"
        sent.append((key_id, inst, f"{contact.lstrip('+')}@s.whatsapp.net"))
        rows.append(OutboundMessage(idempotency_key=f"bench-{uuid.uuid4().hex}", contact=contact,
                                    chip_id=inst["chip_id"], text="Olá!", status=OutboundMessage.Status.SENT,
                                    evolution_message_id=key_id))
    OutboundMessage.objects.bulk_create(rows, batch_size=1000)
    analyze()

    n_dups = int(args.events * DUPLICATE_SHARE)
    n_requests = args.events + n_dups
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    headers = {"X-Webhook-Secret": secret, "Content-Type": "application/json"}
    log = tempfile.NamedTemporaryFile("w", prefix="bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    queue = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    proc = start_server(port, log, secret, queue)
    worker = start_worker(log, secret, queue)
    lags: list[float] = []
    groups = {"server": proc.pid, "worker": worker.pid}  # each started in a session of its own
    if args.subscribed:
        from outbox.models import Endpoint

        consumer_port = free_port()
        endpoint = Endpoint.objects.create(url=f"http://127.0.0.1:{consumer_port}/hooks", description="bench")
        consumer = start_consumer(consumer_port, endpoint.secret, log, ROOT)
        groups["consumer"] = consumer.pid
    told_lags: list[float] = []
    cpu: dict[str, list[dict[str, float]]] = {"webhook": [], "health": []}

    hook_rates, hook_p50, hook_p99, base_rates, base_p50, base_p99 = [], [], [], [], [], []
    by_kind: dict[str, list[float]] = {}  # every round's webhook latencies by kind of event
    answers: Counter = Counter()
    kinds: Counter = Counter()
    bad_health = 0
    try:
        wait_ready(proc, base_url, log.name)
        timed(base_url, args.clients, 200, lambda http, i: http.get("/health").status_code)  # warm-up

        for r in range(args.rounds):
            now = datetime.now(UTC)
            bodies, round_kinds = build_events(args.events, instances, sent[r * n_acks:(r + 1) * n_acks], rng, now)
            kinds.update(round_kinds)
            order = list(range(args.events)) + rng.sample(range(args.events), n_dups)  # 10 % sent twice
            rng.shuffle(order)

            def post(http, i, order=order, bodies=bodies):
                response = http.post("/webhooks/evolution", content=bodies[order[i]], headers=headers)
                return response.json().get("status", "?") if response.status_code == 200 else response.status_code

            seen: set[int] = set()
            label_of = []
            for i in order:  # a re-sent event is labelled as such (whichever of the two arrives first)
                label_of.append(_kind_label(bodies[i]) + (" (re-sent)" if i in seen else ""))
                seen.add(i)
            before = cpu_seconds(groups)
            elapsed, lat, got = timed(base_url, args.clients, n_requests, post, by_kind, label_of.__getitem__)
            cpu["webhook"].append(cpu_per_request(before, cpu_seconds(groups), n_requests))
            answers.update(got)
            hook_rates.append(n_requests / elapsed)
            hook_p50.append(statistics.median(lat))
            hook_p99.append(p99(lat))
            lags.append(wait_applied(started=time.perf_counter()))
            if args.subscribed:
                told_lags.append(wait_told(started=time.perf_counter()))

            before = cpu_seconds(groups)
            elapsed, lat, got = timed(base_url, args.clients, n_requests,
                                      lambda http, i: http.get("/health").status_code)
            cpu["health"].append(cpu_per_request(before, cpu_seconds(groups), n_requests))
            bad_health += sum(v for k, v in got.items() if k != 200)
            base_rates.append(n_requests / elapsed)
            base_p50.append(statistics.median(lat))
            base_p99.append(p99(lat))
        accepted = consumer_accepted(f"http://127.0.0.1:{consumer_port}") if args.subscribed else None
    finally:
        stop_server(proc)
        stop_server(worker)
        if args.subscribed:
            stop_server(consumer)
        log.close()
        os.unlink(log.name)

    distinct, dups = args.events * args.rounds, n_dups * args.rounds
    receipts = WebhookReceipt.objects.count()
    delivery = DeliveryEvent.objects.count()
    expected_delivery = sum(v for k, v in kinds.items() if k != "connection open")
    applied_twice = (DeliveryEvent.objects.values("kind", "message_id").annotate(n=Count("id"))
                     .filter(n__gt=1).count())
    acked = OutboundMessage.objects.filter(status__in=[OutboundMessage.Status.DELIVERED,
                                                       OutboundMessage.Status.READ]).count()
    expected_acked = kinds["ack DELIVERY_ACK"] + kinds["ack READ"]  # the last slice is not acked yet
    opened = Instance.objects.filter(name__in=[i["name"] for i in instances], state=Instance.State.OPEN).count()
    # Message events carry an id of their own: stored once ("accepted"; a duplicate is answered "duplicate") and
    # applied by the drain; state events (connection.update) are applied in the request, idempotently, without a
    # receipt (their duplicates are "processed" again).
    expected_receipts = distinct - kinds["connection open"]
    not_applied = WebhookReceipt.objects.exclude(outcome=WebhookReceipt.Outcome.PROCESSED).count()
    exactly_once = (receipts == expected_receipts and delivery == expected_delivery and applied_twice == 0
                    and acked == expected_acked and answers["duplicate"] <= dups and not_applied == 0
                    and answers["accepted"] == expected_receipts
                    and answers["accepted"] + answers["processed"] + answers["duplicate"] == distinct + dups)
    from config.celery import app

    app.conf.task_default_queue = queue  # the counting's kicks go to the bench's queue, not a running pool's
    if args.subscribed:  # before the counting below adds events of its own
        told, told_ok = told_report(accepted, Counter({
            "message.received": kinds["inbound"], "message.status": kinds["ack DELIVERY_ACK"] + kinds["ack READ"]}))
    per_event = queries_per_event(instances, sent[args.rounds * n_acks:], rng)

    h, b = median(hook_rates), median(base_rates)
    ms = 1000
    print("=" * 100)
    print(f"bench/webhook_ingest.py: gunicorn config.wsgi (2 workers x 4 threads) on {base_url}, "
          f"{'the business app subscribed (sandbox.consumer), ' if args.subscribed else ''}"
          f"{args.clients} client threads ({'httpx' if CLIENT == 'httpx' else 'http.client'}, keep-alive), "
          f"{args.rounds} rounds, medians")
    print(f"per round: {args.events} distinct events + {n_dups} duplicates (10 %, same bytes, random order) = "
          f"{n_requests} POST /webhooks/evolution; mix over {args.chips} instances: "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + " (all rounds)")
    print("baseline: GET /health on the same server (no-op view: one SELECT 1), same threads, same request count")
    print(f"webhook POST  : {h:7.0f} events/s   p50 {median(hook_p50) * ms:6.1f} ms   "
          f"p99 {median(hook_p99) * ms:6.1f} ms")
    print(f"GET /health   : {b:7.0f} req/s      p50 {median(base_p50) * ms:6.1f} ms   "
          f"p99 {median(base_p99) * ms:6.1f} ms")
    print(f"ratio webhook / baseline: throughput {h / b:.2f}, p50 {median(hook_p50) / median(base_p50):.2f}x, "
          f"p99 {median(hook_p99) / median(base_p99):.2f}x")
    print("webhook latency by event (all rounds): " + "; ".join(
        f"{name} n={len(lat)} p50 {statistics.median(lat) * ms:.1f} ms p99 {p99(lat) * ms:.1f} ms"
        for name, lat in sorted(by_kind.items()) if len(lat) >= 2))
    print("CPU per request (µs; the drain's work is the worker's): " + "; ".join(
        f"{phase}: " + ", ".join(f"{name} {median([r[name] for r in rows]) * 1e6:.0f}" for name in rows[0])
        for phase, rows in cpu.items()))
    print(f"answers: {dict(sorted(answers.items(), key=str))}; GET /health non-200: {bad_health}")
    print(f"duplicates posted: {dups}; distinct events posted: {distinct} -> "
          f"WebhookReceipt rows {receipts} (expected {expected_receipts}), "
          f"DeliveryEvent rows {delivery} (expected {expected_delivery}), applied twice {applied_twice}, "
          f"acked OutboundMessages {acked} (expected {expected_acked}), instances open {opened}/{args.chips}")
    print(f"applied by the drain (Celery worker, 2 processes): every stored event within {median(lags):.1f} s "
          f"of the round's last POST (median), receipts not applied or given up: {not_applied}")
    print("queries per event (in process, Django test client): "
          + ", ".join(f"{k}: webhook {w:.0f} + drain {d:.1f}" for k, (w, d) in per_event.items()))
    if args.subscribed:
        print(f"{told}; every delivery done within {median(told_lags):.1f} s of the drain (median)")
        exactly_once = exactly_once and told_ok
    print(f"each distinct event applied exactly once: {'yes' if exactly_once else 'NO'}")
    print("=" * 100)
    from instances.models import ContactBinding

    OutboundMessage.objects.filter(idempotency_key__startswith="bench-").delete()
    ContactBinding.objects.filter(chip_id__in=[i["chip_id"] for i in instances]).delete()
    Chip.objects.filter(pk__in=[i["chip_id"] for i in instances]).delete()
    if not exactly_once:
        sys.exit(1)


if __name__ == "__main__":
    main()
