"""Real facts write their events in their own transaction: a chip's transition, an alert and the kill switch emit
what the business app hears, and a fact rolled back leaves no event and no outbox row behind."""

from __future__ import annotations

import pytest
from django.db import transaction
from standardwebhooks.webhooks import Webhook

from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from instances.models import RoutingPolicy
from instances.services import sending_pause
from outbox import delivery, services
from outbox.models import Delivery, Event
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db


class FactFailed(Exception):
    pass


def _subscribed(consumer):
    """An endpoint for every event, created after the test's chips (their walk emits events of its own)."""
    return services.endpoint_create(url=consumer.url, event_types=["*"])


def _received(consumer, endpoint, type_: str) -> list[dict]:
    delivery.deliveries_sweep()
    got = [Webhook(endpoint.secret).verify(r.body, r.headers) for r in consumer.accepted()]
    return [e["data"] for e in got if e["type"] == type_]


def test_a_rolled_back_chip_transition_produces_no_event(consumer):
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    _subscribed(consumer)

    with pytest.raises(FactFailed), transaction.atomic():
        chip_transition(chip=chip, transition="cool_down", actor=Actor.system("test"), reason="heat")
        assert Event.objects.filter(type="chip.status_changed").count() == 1  # written with the fact...
        raise FactFailed
    assert not Event.objects.exists() and not Delivery.objects.exists()  # ...and gone with it
    chip.refresh_from_db()
    assert chip.status == Chip.Status.ACTIVE and not chip.transitions.filter(transition="cool_down").exists()


def test_a_rolled_back_pause_produces_no_event(consumer):
    _subscribed(consumer)

    with pytest.raises(FactFailed), transaction.atomic():
        sending_pause(reason="incident", by="ops")
        assert Event.objects.filter(type="pool.paused").count() == 1
        raise FactFailed
    assert not Event.objects.exists() and not Delivery.objects.exists()
    assert not RoutingPolicy.load().is_paused

    sending_pause(reason="incident", by="ops")  # committed, the same call does write it
    assert list(Event.objects.values_list("type", flat=True)) == ["pool.paused"]
    assert Delivery.objects.count() == 1


def test_a_transition_tells_the_app_from_to_transition_and_reason(consumer):
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    endpoint = _subscribed(consumer)

    chip_transition(chip=chip, transition="cool_down", actor=Actor.system("test"), reason="too many sends")

    assert _received(consumer, endpoint, "chip.status_changed") == [{
        "chip_id": chip.pk, "phone": chip.phone, "from": "active", "to": "cooling", "transition": "cool_down",
        "reason": "too many sends"}]


def test_a_raised_alert_tells_the_app_once(consumer):
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    endpoint = _subscribed(consumer)

    alert, created = alert_raise(kind="disconnected", severity="warning", message="offline", chip=chip,
                                 action_taken="none")
    again, created_again = alert_raise(kind="disconnected", severity="critical", message="still", chip=chip)

    assert created and not created_again and again.pk == alert.pk  # the open alert bumped: no new event
    assert ChipAlert.objects.count() == 1
    assert _received(consumer, endpoint, "alert.raised") == [{
        "alert_id": alert.pk, "kind": "disconnected", "severity": "warning", "message": "offline",
        "chip_id": chip.pk, "action_taken": "none"}]
