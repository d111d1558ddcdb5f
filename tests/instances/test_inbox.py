"""Message events stored by the webhook and applied by the drain (W2 7/7): once, in order, through a real worker,
with failures retried then given up, one drain per shard at a time, the sweep for lost kicks."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from common.redis import redis_client
from config import metrics
from config.celery import app
from instances import inbox, webhooks
from instances.models import DeliveryEvent, OutboundMessage, WebhookReceipt
from tests.inbox import drain_all
from tests.instances.conftest import production_chip

pytestmark = pytest.mark.django_db
URL = "/webhooks/evolution"


def inbound(instance: str, key_id: str, text: str = "oi") -> dict:
    return {"event": "messages.upsert", "instance": instance, "date_time": "2026-11-24T10:00:00.000Z",
            "data": {"key": {"remoteJid": "5511988887777@s.whatsapp.net", "fromMe": False, "id": key_id},
                     "message": {"conversation": text}, "messageType": "conversation"}}


def ack(instance: str, key_id: str, status: str) -> dict:
    return {"event": "messages.update", "instance": instance, "date_time": "2026-11-24T10:00:00.000Z",
            "data": {"keyId": key_id, "status": status, "fromMe": True}}


@pytest.fixture
def post(client, settings):
    def _post(envelope: dict) -> str:
        response = client.post(URL, data=json.dumps(envelope), content_type="application/json",
                               headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
        assert response.status_code == 200, response.content
        return response.json()["status"]
    return _post


@pytest.fixture
def chip(settings):
    settings.MAX_CHIPS_ACTIVE = 1000
    return production_chip()


def test_a_message_event_is_stored_not_applied_until_the_drain_runs(post, chip):
    assert post(inbound(chip.instance_name, "3A01")) == "accepted"
    row = WebhookReceipt.objects.get()
    assert (row.event, row.instance_id, row.applied_at, row.data["key"]["id"]) == (
        "messages.upsert", chip.instance.pk, None, "3A01")
    assert not DeliveryEvent.objects.filter(kind="inbound").exists()

    assert drain_all() == 1
    row.refresh_from_db()
    assert row.applied_at is not None and row.outcome == "processed"
    assert DeliveryEvent.objects.filter(chip=chip, kind="inbound", message_id="3A01").count() == 1
    assert drain_all() == 0  # applied once


def test_events_of_one_instance_are_applied_in_arrival_order(post, chip):
    message = OutboundMessage.objects.create(idempotency_key="k", contact="+5511988887777", chip=chip, text="oi",
                                             status="sent", evolution_message_id="3EB0ORDER")
    for status in ("DELIVERY_ACK", "READ"):
        assert post(ack(chip.instance_name, message.evolution_message_id, status)) == "accepted"
    drain_all()
    message.refresh_from_db()
    assert message.status == "read"
    kinds = list(DeliveryEvent.objects.filter(chip=chip).order_by("id").values_list("kind", flat=True))
    assert kinds == ["delivered", "read"]


def test_a_failing_event_stops_its_shard_is_retried_then_given_up(post, chip, monkeypatch):
    for key in ("3A1", "3A2", "3A3"):
        post(inbound(chip.instance_name, key))
    real = webhooks.HANDLERS["messages.upsert"]

    def flaky(instance, data, now):
        if data["key"]["id"] == "3A2":
            raise RuntimeError("the database hiccuped")
        return real(instance, data, now)

    monkeypatch.setitem(webhooks.HANDLERS, "messages.upsert", flaky)
    drain_all()  # 3A1 applied; 3A2 fails (attempt 1) and 3A3 waits behind it, in order
    states = dict(WebhookReceipt.objects.values_list("dedup_key", "outcome"))
    assert list(states.values()).count("processed") == 1
    assert WebhookReceipt.objects.get(dedup_key__endswith=":3A2").attempts == 1
    assert WebhookReceipt.objects.get(dedup_key__endswith=":3A3").applied_at is None

    drain_all()  # attempt 2
    drain_all()  # attempt 3: given up, and 3A3 goes through
    failed = WebhookReceipt.objects.get(dedup_key__endswith=":3A2")
    assert (failed.outcome, failed.attempts) == ("error", inbox.RECEIPT_MAX_ATTEMPTS) and failed.applied_at
    assert sorted(DeliveryEvent.objects.filter(kind="inbound").values_list("message_id", flat=True)) == ["3A1", "3A3"]


def test_a_batch_reads_the_policy_the_endpoints_and_the_opt_out_rules_once(post, chip):
    from django.test.utils import CaptureQueriesContext

    from instances.models import RoutingPolicy
    from outbox.models import Endpoint

    RoutingPolicy.load()  # a running pool has its policy row
    Endpoint.objects.create(url="https://app.example.com/hooks")
    for n in range(10):
        body = inbound(chip.instance_name, f"3A{n:02d}", text=f"oi {n}")
        body["data"]["key"]["remoteJid"] = f"55119888800{n:02d}@s.whatsapp.net"
        assert post(body) == "accepted"
    with CaptureQueriesContext(connection) as drained:
        assert drain_all() == 10
    sql = [q["sql"] for q in drained.captured_queries]
    for table in ("instances_routingpolicy", "outbox_endpoint", "instances_optoutrule"):
        assert sum(f'FROM "{table}"' in q for q in sql) == 1, table
    # The ten messages' delivery events go in with one COPY, inside the batch's transaction.
    assert sum(q.startswith('COPY "instances_deliveryevent"') for q in sql) == 1
    assert not any(q.startswith('INSERT INTO "instances_deliveryevent"') for q in sql)
    assert DeliveryEvent.objects.filter(chip=chip, kind="inbound").count() == 10
    # Each of the 10 messages still bound its contact and told the app.
    from instances.models import ContactBinding
    from outbox.models import Event

    assert ContactBinding.objects.filter(chip=chip, origin="inbound").count() == 10
    assert Event.objects.filter(type="message.received").count() == 10


def test_a_batch_tells_the_app_with_one_insert_per_table_and_one_queued_task(post, chip, settings,
                                                                             django_capture_on_commit_callbacks):
    """With the business app subscribed, a batch's events and deliveries go in with the batch's rows, and the
    deliveries of the whole batch are queued with one task on commit (not two INSERTs and a publish per event)."""
    import base64

    import redis
    from django.test.utils import CaptureQueriesContext

    from instances.models import RoutingPolicy
    from outbox.models import Delivery, Endpoint, Event

    RoutingPolicy.load()
    endpoint = Endpoint.objects.create(url="https://app.example.com/hooks")
    for n in range(10):
        body = inbound(chip.instance_name, f"3B{n:02d}", text=f"oi {n}")
        body["data"]["key"]["remoteJid"] = f"55119888801{n:02d}@s.whatsapp.net"
        assert post(body) == "accepted"
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue)
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as drained:
        assert drain_all() == 10
    sql = [q["sql"] for q in drained.captured_queries]
    for table in ("outbox_event", "outbox_delivery"):
        assert sum(q.startswith(f'COPY "{table}"') for q in sql) == 1, table
        assert not any(q.startswith(f'INSERT INTO "{table}"') for q in sql), table
    events = Event.objects.filter(type="message.received")
    assert events.count() == 10
    deliveries = sorted(Delivery.objects.filter(endpoint=endpoint, event__in=events).values_list("pk", flat=True))
    assert len(deliveries) == 10
    messages = [json.loads(m) for m in broker.lrange(queue, 0, -1)]
    broker.delete(queue)
    deliver = [m for m in messages if m["headers"]["task"] == "outbox.deliver"]
    assert len(deliver) == 1
    args, _kwargs, _embed = json.loads(base64.b64decode(deliver[0]["body"]))
    assert sorted(args[0]) == deliveries


def test_a_batch_scope_reads_once_and_inserts_at_its_end_and_outside_one_everything_is_at_once(chip):
    from django.db import transaction

    from common.batch import batch_scope, insert_later, memoized

    reads = []
    read = lambda: reads.append(1) or len(reads)  # noqa: E731
    assert (memoized("k", read), memoized("k", read)) == (1, 2)
    with transaction.atomic(), batch_scope():
        assert (memoized("k", read), memoized("k", read), memoized("j", read)) == (3, 3, 4)
        insert_later(DeliveryEvent(chip=chip, kind="inbound", message_id="A", occurred_at=timezone.now()))
        assert not DeliveryEvent.objects.filter(message_id="A").exists()  # not yet
    assert memoized("k", read) == 5
    assert DeliveryEvent.objects.filter(message_id="A").count() == 1
    with pytest.raises(RuntimeError), transaction.atomic(), batch_scope():
        insert_later(DeliveryEvent(chip=chip, kind="inbound", message_id="B", occurred_at=timezone.now()))
        raise RuntimeError("the batch failed")
    assert not DeliveryEvent.objects.filter(message_id="B").exists()  # a failed batch inserts nothing
    insert_later(DeliveryEvent(chip=chip, kind="inbound", message_id="C", occurred_at=timezone.now()))
    assert DeliveryEvent.objects.filter(message_id="C").exists()  # outside a scope: at once


def test_a_batch_stores_its_rows_as_saving_them_one_by_one_would(chip):
    """rows_copy (COPY) against Model.save: defaults, auto_now_add, JSON through the field's encoder, a row that
    names a parent numbered in the same batch, and rows with and without an id of their own."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from django.db import transaction

    from common.batch import batch_scope, insert_later
    from outbox.models import Delivery, Endpoint, Event

    endpoint = Endpoint.objects.create(url="https://app.example.com/hooks")
    at = datetime(2026, 12, 1, 12, 30, tzinfo=UTC)
    data = {"when": at, "amount": Decimal("1.50"), "text": "olá \\ \t tab", "none": None}

    def rows():
        event = Event(type="message.received", data=data, occurred_at=at)
        return [event, Delivery(event=event, endpoint=endpoint, next_attempt_at=at),
                DeliveryEvent(chip=chip, kind="inbound", message_id="M1", remote="5511", occurred_at=at)]

    saved = rows()
    with transaction.atomic():
        for row in saved:
            row.save(force_insert=True)
    batched = rows()
    with transaction.atomic(), batch_scope():
        insert_later(batched[0], numbered=True)
        insert_later(batched[1], numbered=True)
        insert_later(batched[2])  # takes its id from the table's sequence
    assert batched[2].pk is None and not batched[2]._state.adding

    def stored(model, **lookup):
        values = model.objects.filter(**lookup).values()
        return [{k: v for k, v in row.items() if k not in ("id", "event_id", "created_at",
                                                            "updated_at")} for row in values]

    for model, lookup in ((Event, {}), (Delivery, {}), (DeliveryEvent, {"message_id": "M1"})):
        first, second = stored(model, **lookup)
        assert first == second, model
    assert Event.objects.get(pk=batched[0].pk).data == {"when": "2026-12-01T12:30:00Z", "amount": "1.50",
                                                        "text": "olá \\ \t tab", "none": None}
    assert Delivery.objects.get(pk=batched[1].pk).event_id == batched[0].pk  # named its parent, numbered first
    stamped = DeliveryEvent.objects.filter(message_id="M1").values_list("created_at", flat=True)
    assert all(value is not None for value in stamped)  # auto_now_add


def test_an_event_for_an_instance_we_do_not_know_is_not_stored(post):
    assert post(inbound("not-ours", "3AX")) == "unknown_instance"
    assert not WebhookReceipt.objects.exists()


def test_the_backlog_is_on_metrics(post, chip):
    post(inbound(chip.instance_name, "3AM"))
    text = metrics.render()
    assert "chipfarm_gateway_events_pending 1" in text
    drain_all()
    assert "chipfarm_gateway_events_pending 0" in metrics.render()


@pytest.mark.django_db(transaction=True)
def test_one_drain_per_shard_at_a_time(chip):
    WebhookReceipt.objects.create(dedup_key="k", event="messages.upsert", instance_name=chip.instance_name,
                                  instance=chip.instance, data=inbound(chip.instance_name, "3AL")["data"])
    shard = inbox.shard_of(chip.instance.pk)
    held, release = threading.Event(), threading.Event()

    def holder():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_lock(%s, %s)", [inbox._LOCK_CLASS, shard])
                held.set()
                release.wait(10)
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [inbox._LOCK_CLASS, shard])
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        assert inbox.receipts_drain(shard).busy
        assert WebhookReceipt.objects.get().applied_at is None
    finally:
        release.set()
        thread.join(10)
    assert inbox.receipts_drain(shard).applied == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_store_one_row(chip, live_server, settings):
    import httpx

    body = json.dumps(inbound(chip.instance_name, "3ADUP")).encode()
    answers: list[str] = []
    barrier = threading.Barrier(8)

    def send():
        barrier.wait(10)
        answers.append(httpx.post(f"{live_server.url}{URL}", content=body, timeout=10, headers={
            "X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET, "Content-Type": "application/json"}
        ).json()["status"])

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(answers) == ["accepted"] + ["duplicate"] * 7
    assert WebhookReceipt.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_webhook_kicks_a_drain_that_a_real_worker_runs(chip, client, settings, celery_worker_queue):
    previous = app.conf.task_default_queue
    app.conf.task_default_queue = celery_worker_queue  # the kick goes where the worker listens
    redis_client().delete(inbox._kick_key(inbox.shard_of(chip.instance.pk)))
    try:
        response = client.post(URL, data=json.dumps(inbound(chip.instance_name, "3AW")),
                               content_type="application/json",
                               headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
        assert response.json()["status"] == "accepted"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not DeliveryEvent.objects.filter(message_id="3AW").exists():
            time.sleep(0.1)
    finally:
        app.conf.task_default_queue = previous
    assert DeliveryEvent.objects.filter(chip=chip, kind="inbound", message_id="3AW").count() == 1
    assert WebhookReceipt.objects.get().outcome == "processed"


def test_the_sweep_kicks_shards_whose_events_waited(chip, settings):
    old = timezone.now() - timedelta(minutes=1)
    WebhookReceipt.objects.create(dedup_key="w", event="messages.upsert", instance_name=chip.instance_name,
                                  instance=chip.instance, received_at=old, data={})
    WebhookReceipt.objects.create(dedup_key="fresh", event="messages.upsert", instance_name=chip.instance_name,
                                  instance=chip.instance, data={})
    shard = inbox.shard_of(chip.instance.pk)
    redis_client().set(inbox._kick_key(shard), "stale", ex=30)  # a kick whose task was lost
    assert inbox.receipts_sweep() == [shard]
    flag = float(redis_client().get(inbox._kick_key(shard)))  # kicked again: the flag is the new kick's moment
    assert abs(flag - (time.time() + settings.GATEWAY_EVENT_DRAIN_DELAY_SECONDS)) < 5


def test_events_stored_while_a_queued_drain_has_not_started_send_no_kick_of_their_own(
        post, chip, monkeypatch, settings, django_capture_on_commit_callbacks):
    from common import redis as shared_redis

    sent: list[tuple] = []
    real = shared_redis.quick_client

    class Counting:
        def __init__(self, client):
            self.client = client

        def set(self, *args, **kwargs):
            sent.append(args)
            return self.client.set(*args, **kwargs)

    monkeypatch.setattr(inbox, "quick_client", lambda url=None: Counting(real(url)))
    queued: list[int] = []
    monkeypatch.setattr(inbox, "_drain_queue", lambda shard, *, delay: queued.append(shard) or True)
    settings.GATEWAY_EVENT_DRAIN_DELAY_SECONDS = 10.0  # the drain queued below reads in 10 s, not before
    shard = inbox.shard_of(chip.instance.pk)
    redis_client().delete(inbox._kick_key(shard))

    def burst(prefix: str, n: int) -> None:
        for k in range(n):
            with django_capture_on_commit_callbacks(execute=True):  # the kick runs on commit
                assert post(inbound(chip.instance_name, f"{prefix}{k}")) == "accepted"

    burst("3AK", 20)
    assert (len(sent), queued) == (1, [shard])  # one flag, one drain for the burst

    # Another process queued the drain: this one reads the flag's moment once, and is covered by it as well.
    inbox._covered_until.clear()
    burst("3AL", 5)
    assert (len(sent), queued) == (2, [shard])

    # A flag due in a second covers this process's events until then, less the clocks' margin: one ask.
    inbox._covered_until.clear()
    redis_client().set(inbox._kick_key(shard), f"{time.time() + 1:.3f}", ex=30)
    burst("3AN", 3)
    assert (len(sent), queued) == (3, [shard])

    # A flag whose drain is (nearly) due covers nothing: each event asks again, and no drain is queued twice.
    inbox._covered_until.clear()
    redis_client().set(inbox._kick_key(shard), f"{time.time() + inbox.KICK_CLOCK_MARGIN_SECONDS / 2:.3f}", ex=30)
    burst("3AM", 3)
    assert (len(sent), queued) == (6, [shard])
    assert app.conf.beat_schedule["sweep-gateway-events"]["task"] == "instances.sweep_gateway_events"


def test_the_webhook_stores_with_one_prepared_insert(post, chip, settings):
    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                           ["INSERT INTO instances_webhookreceipt%"])
            return cursor.fetchone()[0]

    assert post(inbound(chip.instance_name, "3AP1")) == "accepted"
    assert post(inbound(chip.instance_name, "3AP2")) == "accepted"
    assert post(inbound(chip.instance_name, "3AP2")) == "duplicate"
    assert prepared() == 1  # planned once for this connection, whatever the values
    settings.DATABASE_PREPARED_STATEMENTS = False  # behind a pooler that cannot keep them: bound by the client
    assert post(inbound(chip.instance_name, "3AP3")) == "accepted"
    assert WebhookReceipt.objects.filter(dedup_key__contains=":3AP").count() == 3
