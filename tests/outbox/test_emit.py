"""outbox.services.event_emit: written in the caller's transaction, one delivery per subscribed endpoint,
queued after commit, and a broker outage never fails the caller."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis
from django.conf import settings
from django.db import transaction

from outbox import delivery, services
from outbox.models import Delivery, Endpoint, Event

pytestmark = pytest.mark.django_db


def _endpoint(url: str = "http://127.0.0.1:9/hooks", **kw) -> Endpoint:
    return services.endpoint_create(url=url, **kw)


def test_one_delivery_per_enabled_endpoint_subscribed_to_the_type():
    every = _endpoint(event_types=[])
    star = _endpoint(event_types=["*"])
    messages = _endpoint(event_types=["message.received", "message.status"])
    _endpoint(event_types=["pool.paused"])  # not subscribed
    services.endpoint_update(endpoint=_endpoint().pk, is_enabled=False, actor="test")  # disabled

    event = services.event_emit(type="message.received", data={"message_id": 7, "text": "oi"})

    assert event is not None and event.event_id.startswith("evt_")
    assert set(event.deliveries.values_list("endpoint_id", flat=True)) == {every.pk, star.pk, messages.pk}
    assert set(event.deliveries.values_list("status", flat=True)) == {Delivery.Status.PENDING}


def test_nothing_is_written_when_no_endpoint_subscribes():
    _endpoint(event_types=["pool.paused"])
    assert services.event_emit(type="message.received", data={"message_id": 1}) is None
    assert not Event.objects.exists() and not Delivery.objects.exists()


def test_a_rolled_back_fact_produces_no_event():
    _endpoint()

    class FactFailed(Exception):
        pass

    with pytest.raises(FactFailed), transaction.atomic():
        services.event_emit(type="pool.paused", data={"reason": "incident", "by": "ops"})
        assert Event.objects.count() == 1  # written inside the fact's transaction...
        raise FactFailed
    assert not Event.objects.exists() and not Delivery.objects.exists()  # ...and gone with it


def test_payload_shape_and_json_ready_data():
    _endpoint()
    at = datetime(2026, 11, 24, 13, 0, 5, 123456, tzinfo=UTC)
    event = services.event_emit(type="message.status", at=at,
                                data={"message_id": 3, "status": "read", "when": at, "ratio": Decimal("0.5"),
                                      "id": uuid.UUID(int=1), "text": "a\u0000b"})
    event.refresh_from_db()
    payload = event.as_payload()
    assert payload == {"type": "message.status", "id": event.event_id, "timestamp": "2026-11-24T13:00:05.123456Z",
                       "data": {"message_id": 3, "status": "read", "when": "2026-11-24T13:00:05.123Z",
                                "ratio": "0.5", "id": "00000000-0000-0000-0000-000000000001", "text": "ab"}}
    assert delivery.body_of(event) == delivery.body_of(Event.objects.get(pk=event.pk))  # stable bytes


def test_unknown_event_type_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown event type"):
        services.event_emit(type="chip.exploded", data={})


def test_delivery_is_queued_on_commit_to_the_real_broker(django_capture_on_commit_callbacks):
    _endpoint()
    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(queue)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        event = services.event_emit(type="ping", data={})
    assert broker.llen(queue) == 0  # nothing before commit
    for callback in callbacks:
        callback()
    messages = broker.lrange(queue, 0, -1)
    broker.delete(queue)
    assert len(messages) == 1
    assert b'"task": "outbox.deliver"' in messages[0]
    assert event.deliveries.count() == 1


def test_a_broker_outage_never_fails_the_caller(broker_down, django_capture_on_commit_callbacks, caplog):
    _endpoint()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        event = services.event_emit(type="pool.resumed", data={"by": "ops"})
    assert "the sweep will send them" in caplog.text
    # The row waits for the sweep.
    assert Delivery.objects.get(event=event).status == Delivery.Status.PENDING


def test_subscription_rule_is_the_same_in_python_and_sql():
    endpoints = [_endpoint(event_types=types) for types in ([], ["*"], ["ping"], ["pool.paused", "ping"],
                                                            ["message.received"])]
    for event_type in ("ping", "message.received", "pool.paused", "alert.raised"):
        in_sql = set(Endpoint.objects.subscribed_to(event_type).values_list("pk", flat=True))
        in_python = {e.pk for e in endpoints if e.is_subscribed_to(event_type)}
        assert in_sql == in_python, event_type
