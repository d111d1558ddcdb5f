"""The reach-out restriction from the signal 2.3.7 really sends: ERROR receipts with no code (field notes §1)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from chips.models import ChipAlert
from instances.models import ChipCapacity, DeliveryEvent
from instances.routing import contact_route
from instances.services import message_send
from tests.inbox import drain_all
from tests.instances.conftest import payload

pytestmark = pytest.mark.django_db

OLD, NEW1, NEW2, NEW3 = "+5511988880001", "+5511988880002", "+5511988880003", "+5511988880004"


def send(contact: str, key: str):
    return message_send(contact=contact, text=f"Olá {key}", idempotency_key=key)


@pytest.fixture
def two_chips(world, business_hours):
    """`first` gets new contacts first (priority strategy); `second` is where they go once it is restricted."""
    from instances.models import RoutingPolicy

    RoutingPolicy.objects.update_or_create(id=1, defaults={"strategy": RoutingPolicy.Strategy.PRIORITY})
    first, second = world.chip(priority=10), world.chip(priority=1)
    return first, second


def restricted(chip) -> bool:
    capacity = ChipCapacity.objects.get(chip=chip)
    return capacity.restricted_until is not None and capacity.restricted_until > timezone.now()


def test_two_failed_first_contacts_within_six_hours_restrict_the_chip_from_new_contacts(world, two_chips):
    first, second = two_chips
    assert send(OLD, "m-old").message.chip_id == first.pk  # a contact it already talks to
    world.fake.restrict(first.instance_name)  # WhatsApp's timelock: new chats fail later, with no code

    one, two = send(NEW1, "m-1"), send(NEW2, "m-2")
    assert {one.message.chip_id, two.message.chip_id} == {first.pk}
    assert {one.message.status, two.message.status} == {"sent"}  # 201 PENDING: nothing failed yet
    world.fake.deliver_queued()
    world.relay()

    assert restricted(first) and not restricted(second)
    alert = ChipAlert.objects.open().get(chip=first, kind="restricted")
    assert alert.severity == "warning" and "2" in alert.message and "+5511*****0002" in alert.message
    assert contact_route(contact=NEW3).chip_id == second.pk  # new contacts go elsewhere
    assert send(OLD, "m-old-2").message.chip_id == first.pk  # its contacts still route to it
    sent = [m for m in world.fake.sent_messages if m["instance"] == first.instance_name]
    assert len(sent) == 4  # no send was retried
    assert ChipAlert.objects.filter(kind="restricted").count() == 1


def test_one_failed_first_contact_alone_restricts_nothing(world, two_chips):
    first, _ = two_chips
    world.fake.restrict(first.instance_name)
    send(NEW1, "m-1")
    world.fake.restrict(first.instance_name, on=False)
    send(NEW2, "m-2")
    world.fake.deliver_queued()
    world.relay()

    assert not restricted(first)
    assert DeliveryEvent.objects.filter(chip=first, kind="failed", first_contact=True).count() == 1
    assert not ChipAlert.objects.filter(kind="restricted").exists()


def test_errors_to_contacts_the_chip_already_talks_to_restrict_nothing(world, two_chips):
    first, _ = two_chips
    sent = [send(OLD, "m-a"), send(NEW1, "m-b")]
    again = [send(OLD, "m-a2"), send(NEW1, "m-b2")]  # sticky: not first contacts
    for outcome in again:
        world.fake.ack(first.instance_name, outcome.message.evolution_message_id, "ERROR")
    world.relay()

    assert not restricted(first)
    assert all(not o.message.first_contact for o in again) and all(o.message.first_contact for o in sent)
    assert DeliveryEvent.objects.filter(chip=first, kind="failed", first_contact=False).count() == 2


def test_failures_further_apart_than_the_window_restrict_nothing(world, two_chips, settings):
    first, _ = two_chips
    one = send(NEW1, "m-1")
    world.fake.ack(first.instance_name, one.message.evolution_message_id, "ERROR")
    world.relay()
    later = timezone.now() + timedelta(hours=settings.RESTRICTION_WINDOW_HOURS, minutes=5)
    with time_machine.travel(later):
        two = send(NEW2, "m-2")
        world.fake.ack(first.instance_name, two.message.evolution_message_id, "ERROR")
        world.relay()
        assert not restricted(first)


def test_a_receipt_that_carries_the_463_code_restricts_at_once(world, two_chips, client, settings):
    import json

    first, second = two_chips
    one = send(NEW1, "m-1")
    body = payload("messages_update_error_stub_463", instance=first.instance_name,
                   keyId=one.message.evolution_message_id)

    response = client.post("/webhooks/evolution", data=json.dumps(body), content_type="application/json",
                           headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})

    assert response.status_code == 200 and response.json()["status"] == "accepted"
    drain_all()  # the drain applies it right after (the task the webhook kicked)
    assert restricted(first)
    assert "463" in ChipAlert.objects.get(chip=first, kind="restricted").message
    assert contact_route(contact=NEW2).chip_id == second.pk
