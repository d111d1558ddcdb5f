"""Delivering to a real consumer on loopback: signatures, the retry schedule by time travel, 410, giving up with
one alert, SSRF at send time, concurrent sweeps, the tasks."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from standardwebhooks.webhooks import Webhook

from chips.models import ChipAlert
from outbox import delivery, services, tasks
from outbox.client import ConsumerClient
from outbox.models import MAX_ATTEMPTS, RETRY_DELAYS, Delivery, DeliveryAttempt, Endpoint, Event

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


def _verify(endpoint: Endpoint, received) -> dict:
    return Webhook(endpoint.secret).verify(received.body, received.headers)


def test_each_event_is_delivered_once_signed_per_standard_webhooks(consumer, endpoint):
    events = [services.event_emit(type="message.received", data={"message_id": n, "text": f"oi {n}"})
              for n in range(3)]
    assert delivery.deliveries_sweep() == {"delivered": 3}
    assert delivery.deliveries_sweep() == {}  # nothing left: exactly one delivery per event

    received = consumer.received
    assert [r.webhook_id for r in received] == [e.event_id for e in events]
    for event, got in zip(events, received, strict=True):
        assert got.headers["content-type"] == "application/json"
        assert _verify(endpoint, got) == {"type": "message.received", "id": event.event_id,
                                          "timestamp": event.as_payload()["timestamp"], "data": event.data}
    with pytest.raises(Exception, match="signature"):  # another endpoint's secret does not verify
        Webhook(services.endpoint_create(url=consumer.url).secret).verify(received[0].body, received[0].headers)
    assert set(Delivery.objects.values_list("status", "attempts")) == {(Delivery.Status.DELIVERED, 1)}
    attempt = DeliveryAttempt.objects.filter(endpoint=endpoint).first()
    assert attempt.status_code == 204 and attempt.is_success and attempt.duration_ms >= 0 and not attempt.error


def test_a_down_consumer_gets_the_event_once_it_answers_again_with_the_same_id(consumer, endpoint):
    with time_machine.travel(T0, tick=False) as traveller:
        event = services.event_emit(type="chip.status_changed", data={"chip_id": 1, "to": "banned"})
        consumer.fail(500)
        assert delivery.deliveries_sweep() == {"failed": 1}
        row = Delivery.objects.get(event=event)
        assert row.next_attempt_at == T0 + RETRY_DELAYS[0] and row.last_status_code == 500

        assert delivery.deliveries_sweep() == {}  # not due before its time
        for wait in RETRY_DELAYS[:3]:  # 5 s, 5 min, 30 min: still down
            traveller.shift(wait)
            assert delivery.deliveries_sweep() == {"failed": 1}
        consumer.recover()
        traveller.shift(RETRY_DELAYS[3] - timedelta(seconds=1))
        assert delivery.deliveries_sweep() == {}
        traveller.shift(timedelta(seconds=1))
        assert delivery.deliveries_sweep() == {"delivered": 1}

        received = consumer.received
        assert [r.status for r in received] == [500, 500, 500, 500, 204]
        assert {r.webhook_id for r in received} == {event.event_id}
        assert _verify(endpoint, received[-1])["id"] == event.event_id
        # each attempt is signed at its own time, always over the same body
        assert len({r.headers["webhook-timestamp"] for r in received}) == 5
        assert len({r.body for r in received}) == 1
    row.refresh_from_db()
    assert (row.status, row.attempts, row.delivered_at) == (Delivery.Status.DELIVERED, 5, T0 + timedelta(
        seconds=5, minutes=35, hours=2))
    assert list(DeliveryAttempt.objects.filter(delivery=row).values_list("status_code", flat=True)) == [
        204, 500, 500, 500, 500]


def test_410_disables_the_endpoint_with_the_reason(consumer, endpoint):
    first = services.event_emit(type="ping", data={})
    second = services.event_emit(type="ping", data={})
    consumer.fail(410)
    assert delivery.deliveries_sweep() == {"failed": 1}
    endpoint.refresh_from_db()
    assert not endpoint.is_enabled and "410" in endpoint.disabled_reason and endpoint.disabled_at
    assert Delivery.objects.get(event=first).status == Delivery.Status.FAILED
    assert Delivery.objects.get(event=second).status == Delivery.Status.FAILED  # pending ones too
    assert len(consumer.received) == 1
    assert services.event_emit(type="ping", data={}) is None  # no longer subscribed while disabled


def test_the_whole_schedule_failing_disables_the_endpoint_with_exactly_one_alert(consumer, endpoint):
    with time_machine.travel(T0, tick=False) as traveller:
        consumer.fail(503)
        first = services.event_emit(type="message.status", data={"message_id": 1, "status": "sent"})
        assert delivery.deliveries_sweep() == {"failed": 1}
        traveller.shift(timedelta(seconds=2))
        second = services.event_emit(type="message.status", data={"message_id": 2, "status": "sent"})
        for wait in RETRY_DELAYS:
            traveller.shift(wait)
            delivery.deliveries_sweep()
            delivery.deliveries_sweep()
        traveller.shift(timedelta(days=2))
        assert delivery.deliveries_sweep() == {}

    endpoint.refresh_from_db()
    assert not endpoint.is_enabled and f"{MAX_ATTEMPTS} attempts" in endpoint.disabled_reason
    assert Delivery.objects.get(event=first).attempts == MAX_ATTEMPTS
    assert set(Delivery.objects.filter(event__in=[first, second]).values_list("status", flat=True)) == {"failed"}
    alerts = ChipAlert.objects.filter(kind="webhook_endpoint_disabled")
    assert alerts.count() == 1
    alert = alerts.get()
    assert alert.severity == "warning" and endpoint.url in alert.message and alert.occurrences == 1
    assert len([r for r in consumer.received if r.webhook_id == first.event_id]) == MAX_ATTEMPTS


def test_delivery_time_ssrf_check_fails_the_attempt_without_a_request(consumer, endpoint, settings):
    event = services.event_emit(type="ping", data={})
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False  # as in production: loopback is refused
    assert delivery.deliveries_sweep() == {"failed": 1}
    assert consumer.received == []
    attempt = DeliveryAttempt.objects.get(delivery__event=event)
    assert attempt.status_code is None and "Not sent" in attempt.error and "loopback" in attempt.error
    row = Delivery.objects.get(event=event)
    assert row.status == Delivery.Status.PENDING and row.attempts == 1  # the schedule goes on (DNS may change)


def test_a_consumer_that_does_not_answer_in_time_is_a_failed_attempt(consumer, endpoint, settings):
    settings.WEBHOOK_TIMEOUT_SECONDS = 0.3
    consumer.set_latency(1.0)
    services.event_emit(type="ping", data={})
    assert delivery.deliveries_sweep() == {"failed": 1}
    attempt = DeliveryAttempt.objects.get()
    assert attempt.status_code is None and "no answer within 0.3 s" in attempt.error


def test_an_unreachable_consumer_is_a_failed_attempt():
    from sandbox.server import free_port

    services.endpoint_create(url=f"http://127.0.0.1:{free_port()}/hooks")
    services.event_emit(type="ping", data={})
    assert delivery.deliveries_sweep() == {"failed": 1}
    assert "connection failed" in DeliveryAttempt.objects.get().error


def test_a_leased_row_is_not_sent_twice(consumer, endpoint):
    event = services.event_emit(type="ping", data={})
    row = Delivery.objects.get(event=event)
    rows, lease_until = delivery._claim()
    assert [r.pk for r in rows] == [row.pk]
    assert delivery.deliveries_sweep() == {}  # leased to the first claimer
    assert delivery.delivery_attempt(delivery_id=row.pk) is None
    with time_machine.travel(lease_until + timedelta(seconds=1)):  # its sender died: after the lease, sent again
        assert delivery.deliveries_sweep() == {"delivered": 1}


def test_a_replay_while_in_flight_keeps_the_replay(consumer, endpoint):
    event = services.event_emit(type="ping", data={})
    [row], lease = delivery._claim()
    services.delivery_replay(delivery=row.pk)  # the operator replays while the first attempt is in flight
    with delivery.Clients() as clients:
        delivery._attempt(row, lease, clients)
    row.refresh_from_db()
    assert row.status == Delivery.Status.PENDING and row.attempts == 0  # the replay's, not the old claim's
    assert delivery.deliveries_sweep() == {"delivered": 1}
    assert [r.webhook_id for r in consumer.received] == [event.event_id, event.event_id]


def test_an_endpoint_deleted_during_an_attempt_records_nothing(consumer, endpoint):
    services.event_emit(type="ping", data={})
    [row], lease = delivery._claim()
    services.endpoint_delete(endpoint=endpoint.pk)
    with delivery.Clients() as clients:
        assert delivery._attempt(row, lease, clients) is None
    assert not DeliveryAttempt.objects.exists()


def test_one_http_client_per_consumer_host():
    with delivery.Clients() as clients:
        a = clients.for_url("https://consumer.example/hooks/a")
        assert clients.for_url("https://Consumer.example/hooks/b") is a  # kept alive between its webhooks
        assert clients.for_url("https://other.example/hooks") is not a  # never another name's TLS connection
        assert clients.for_url("https://consumer.example:8443/hooks") is not a


def test_tasks_delegate_to_the_sweep(consumer, endpoint):
    first = services.event_emit(type="ping", data={})
    second = services.event_emit(type="ping", data={})
    assert tasks.deliver.run([Delivery.objects.get(event=first).pk]) == {"delivered": 1}
    assert [r.webhook_id for r in consumer.received] == [first.event_id]
    assert tasks.sweep.run() == {"delivered": 1}
    assert [r.webhook_id for r in consumer.received] == [first.event_id, second.event_id]


def test_a_webhook_still_in_the_consumer_when_it_is_reset_is_not_kept(consumer):
    """What let an earlier test's timed-out ping land among the concurrent sweeps' webhooks."""
    from outbox.client import ConsumerError

    consumer.set_latency(0.5)
    with ConsumerClient(timeout=0.1) as client, pytest.raises(ConsumerError, match="no answer"):
        client.post_event(url=consumer.url, body=b"{}", headers={})
    consumer.reset()  # the next test starts while that request waits out its latency
    time.sleep(0.8)
    assert consumer.received == []


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_never_send_one_row_twice(consumer):
    endpoint = services.endpoint_create(url=consumer.url)
    consumer.set_latency(0.005)
    events = [services.event_emit(type="message.received", data={"n": n}) for n in range(40)]
    results: list[dict] = []
    # Each worker's first POST waits until the other worker has claimed a batch and is sending too: both take
    # part however the threads are scheduled (a loaded machine once let one sweep take every row first).
    both_sending = threading.Barrier(2, timeout=30)

    class MeetsTheOtherWorker(ConsumerClient):
        met = False

        def post_event(self, **kw):
            if not self.met:
                self.met = True
                both_sending.wait()
            return super().post_event(**kw)

    def sweep() -> None:
        try:
            with MeetsTheOtherWorker(timeout=10) as client:
                results.append(delivery.deliveries_sweep(client=client))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r.webhook_id for r in consumer.received]
    assert sorted(ids) == sorted(e.event_id for e in events)  # each exactly once
    assert sum(r.get("delivered", 0) for r in results) == 40
    assert all(r.get("delivered", 0) > 0 for r in results)  # both workers took part
    assert Delivery.objects.filter(endpoint=endpoint, status="delivered", attempts=1).count() == 40


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_delivery_through_a_real_celery_worker(consumer, celery_worker_queue):
    endpoint = services.endpoint_create(url=consumer.url)
    event = services.event_emit(type="pool.paused", data={"reason": "incident", "by": "ops"})
    row = Delivery.objects.get(event=event)
    tasks.deliver.apply_async(args=[[row.pk]], queue=celery_worker_queue)
    deadline = time.monotonic() + 30
    while not consumer.received and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.webhook_id for r in consumer.received] == [event.event_id]
    assert _verify(endpoint, consumer.received[0])["data"] == {"reason": "incident", "by": "ops"}
    deadline = time.monotonic() + 10
    while Delivery.objects.get(pk=row.pk).status != "delivered" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Delivery.objects.get(pk=row.pk).status == Delivery.Status.DELIVERED
    assert Event.objects.count() == 1
