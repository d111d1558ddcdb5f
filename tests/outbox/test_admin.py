"""The outbox admin through the Django test client: the secret once, attempts on the endpoint page, replays
with the same webhook-id, "replay failed since", read-only system records, groups, query counts."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from standardwebhooks.webhooks import Webhook

from outbox import delivery, services
from outbox.models import Delivery, DeliveryAttempt, Endpoint, Event

pytestmark = pytest.mark.django_db
ENDPOINTS = reverse("admin:outbox_endpoint_changelist")
EVENTS = reverse("admin:outbox_event_changelist")
DELIVERIES = reverse("admin:outbox_delivery_changelist")
ACTION_CHECKBOX = "_selected_action"


def _fail_then_recover(consumer, endpoint) -> Event:
    """An event whose delivery gave up: the consumer was gone (410), then came back and was enabled again."""
    event = services.event_emit(type="message.received", data={"message_id": 1})
    consumer.fail(410)
    delivery.deliveries_sweep()
    consumer.recover()
    services.endpoint_update(endpoint=endpoint, is_enabled=True)
    assert Delivery.objects.get(event=event).status == Delivery.Status.FAILED
    return event


def test_adding_an_endpoint_shows_its_secret_once(admin_client, consumer):
    response = admin_client.post(reverse("admin:outbox_endpoint_add"), {
        "url": consumer.url, "event_types": ["message.received", "pool.paused"], "description": "CRM",
        "is_enabled": "on"})
    assert response.status_code == 200
    endpoint = Endpoint.objects.get()
    assert endpoint.event_types == ["message.received", "pool.paused"]
    page = response.content.decode()
    assert endpoint.secret in page and "not shown again" in page

    change = admin_client.get(reverse("admin:outbox_endpoint_change", args=[endpoint.pk])).content.decode()
    assert endpoint.secret not in change and endpoint.secret.removeprefix("whsec_") not in change
    assert endpoint.secret not in admin_client.get(ENDPOINTS).content.decode()


def test_the_add_form_refuses_private_targets_and_unknown_types(admin_client, settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    response = admin_client.post(reverse("admin:outbox_endpoint_add"), {"url": "http://169.254.169.254/"})
    assert response.status_code == 200 and "link-local" in response.content.decode()
    response = admin_client.post(reverse("admin:outbox_endpoint_add"),
                                 {"url": "https://93.184.216.34/", "event_types": ["nope"]})
    assert "Select a valid choice" in response.content.decode()
    assert not Endpoint.objects.exists()


def test_editing_an_endpoint_goes_through_the_service(admin_client, admin_user, endpoint):
    url = reverse("admin:outbox_endpoint_change", args=[endpoint.pk])
    response = admin_client.post(url, {"url": endpoint.url, "event_types": ["ping"], "description": "x"})
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.event_types == ["ping"] and not endpoint.is_enabled
    assert endpoint.disabled_reason == f"Disabled by operator {admin_user.username}."


def test_endpoint_page_shows_recent_attempts_newest_first(admin_client, consumer, endpoint):
    first = services.event_emit(type="ping", data={})
    consumer.fail(500, n=1)
    delivery.deliveries_sweep()
    second = services.event_emit(type="pool.paused", data={"reason": "x"})
    delivery.deliveries_sweep()
    page = admin_client.get(reverse("admin:outbox_endpoint_change", args=[endpoint.pk])).content.decode()
    table = page[page.index('class="outbox-attempts"'):]
    assert table.index(second.event_id) < table.index(first.event_id)
    assert ">204<" in table and ">500<" in table

    changelist = admin_client.get(ENDPOINTS).content.decode()
    assert endpoint.url in changelist and ">204<" in changelist  # the last delivery's status


def test_event_replay_action_resends_with_the_same_webhook_id(admin_client, consumer, endpoint):
    event = services.event_emit(type="message.status", data={"message_id": 9, "status": "read"})
    delivery.deliveries_sweep()
    late = services.endpoint_create(url=consumer.url + "/late", event_types=["message.status"])

    response = admin_client.post(EVENTS, {"action": "replay_to_subscribed", ACTION_CHECKBOX: [event.pk]},
                                 follow=True)
    assert "2 deliveries queued again (same webhook-id)." in response.content.decode()
    delivery.deliveries_sweep()

    received = consumer.received
    assert [r.webhook_id for r in received] == [event.event_id] * 3
    assert {r.path for r in received[1:]} == {"/hooks", "/hooks/late"}
    for got in received:
        secret = late.secret if got.path.endswith("/late") else endpoint.secret
        Webhook(secret).verify(got.body, got.headers)


def test_delivery_replay_action_resends_the_same_event(admin_client, consumer, endpoint):
    event = _fail_then_recover(consumer, endpoint)
    row = Delivery.objects.get(event=event)
    response = admin_client.post(DELIVERIES, {"action": "replay", ACTION_CHECKBOX: [row.pk]}, follow=True)
    assert "1 delivery queued again" in response.content.decode()
    assert delivery.deliveries_sweep() == {"delivered": 1}
    assert [r.webhook_id for r in consumer.received] == [event.event_id, event.event_id]
    row.refresh_from_db()
    assert row.status == Delivery.Status.DELIVERED and row.attempts == 1
    assert DeliveryAttempt.objects.filter(delivery=row).count() == 2  # the history stays


def test_replay_failed_since_asks_the_time_then_replays(admin_client, consumer, endpoint):
    old = _fail_then_recover(consumer, endpoint)
    Delivery.objects.filter(event=old).update(created_at="2020-01-01T00:00Z")
    recent = services.event_emit(type="ping", data={})
    consumer.fail(410)
    delivery.deliveries_sweep()
    consumer.recover()
    services.endpoint_update(endpoint=endpoint, is_enabled=True)

    data = {"action": "replay_failed_since", ACTION_CHECKBOX: [endpoint.pk]}
    form = admin_client.post(ENDPOINTS, data)
    assert form.status_code == 200 and 'name="since"' in form.content.decode()
    assert not Delivery.objects.filter(status="pending").exists()  # nothing happened yet

    bad = admin_client.post(ENDPOINTS, {**data, "apply": "1", "since": "yesterday"})
    assert "Enter a valid date/time." in bad.content.decode()
    response = admin_client.post(ENDPOINTS, {**data, "apply": "1", "since": "2025-06-01 00:00"}, follow=True)
    assert "1 failed delivery queued again." in response.content.decode()
    assert delivery.deliveries_sweep() == {"delivered": 1}
    assert consumer.accepted()[0].webhook_id == recent.event_id
    assert Delivery.objects.get(event=old).status == Delivery.Status.FAILED  # before the time: left alone


def test_system_records_are_read_only(admin_client, consumer, endpoint):
    event = services.event_emit(type="ping", data={})
    delivery.deliveries_sweep()
    row = Delivery.objects.get(event=event)
    for name, pk in [("event", event.pk), ("delivery", row.pk)]:
        assert admin_client.get(reverse(f"admin:outbox_{name}_add")).status_code == 403
        assert admin_client.post(reverse(f"admin:outbox_{name}_delete", args=[pk]), {"post": "yes"}).status_code == 403
        page = admin_client.get(reverse(f"admin:outbox_{name}_change", args=[pk]))
        assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
        changelist = admin_client.get(reverse(f"admin:outbox_{name}_changelist")).content.decode()
        assert 'value="delete_selected"' not in changelist
    assert Event.objects.count() == 1 and Delivery.objects.count() == 1
    assert event.event_id in admin_client.get(reverse("admin:outbox_event_change", args=[event.pk])).content.decode()


def test_viewers_look_but_cannot_replay_operators_can(client, django_user_model, consumer, endpoint):
    from django.contrib.auth.models import Group

    services.event_emit(type="ping", data={})
    for group, can_replay in [("Viewers", False), ("Operators", True)]:
        user = django_user_model.objects.create_user(group.lower(), password="pw", is_staff=True)
        user.groups.add(Group.objects.get(name=group))
        client.force_login(user)
        for url in (ENDPOINTS, EVENTS, DELIVERIES):
            page = client.get(url)
            assert page.status_code == 200
            assert ('value="replay' in page.content.decode()) is can_replay, (group, url)
        assert (client.get(reverse("admin:outbox_endpoint_add")).status_code == 200) is can_replay


@pytest.mark.parametrize("changelist", [ENDPOINTS, EVENTS, DELIVERIES])
def test_changelist_query_count_does_not_grow(admin_client, consumer, changelist):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(changelist).status_code == 200
        return len(ctx.captured_queries)

    def grow(n: int) -> None:
        for i in range(n):
            services.endpoint_create(url=f"{consumer.url}/{i}")
            services.event_emit(type="ping", data={"n": i})
        delivery.deliveries_sweep()

    grow(2)
    few = count_queries()
    grow(8)
    assert count_queries() == few

