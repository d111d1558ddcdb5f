"""Per-contact courtesy (instances.courtesy), pool-wide: at most CONTACT_MAX_PER_HOUR messages to one contact an hour
and never the same text twice within 24 h; neither refusal reserves capacity."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum

from instances.models import ChipCapacity, ContactBinding, InboundMessage, OutboundMessage
from instances.services import message_send
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db
DOCTOR = "+5511987650000"


def used() -> int:
    return ChipCapacity.objects.aggregate(n=Sum("hour_count"))["n"] or 0


def send(n: int, text: str | None = None, kind: str = "follow_up", contact: str = DOCTOR):
    return message_send(contact=contact, text=text or f"Mensagem {n}", idempotency_key=f"key-{contact}-{n}",
                        kind=kind)


def test_a_fourth_message_within_the_hour_is_refused_and_reserves_nothing(world, business_hours, api):
    chip = world.chip(max_per_hour=50)
    for n in range(3):
        assert send(n).message.status == "sent"
    assert used() == 3
    response = api.post("/api/v1/messages", {"contact": DOCTOR, "text": "Mais uma", "idempotency_key": "k4"})
    assert response.status_code == 429
    body = response.json()
    assert body["code"] == "contact_rate_limited" and int(response["Retry-After"]) > 0
    assert used() == 3 and OutboundMessage.objects.count() == 3  # nothing reserved, nothing stored
    # Another contact is not affected; the same one is served again an hour after its first message.
    assert send(0, contact="+5511987651111").message.chip_id == chip.pk
    with time_machine.travel(BUSINESS_TIME + timedelta(hours=1, minutes=1), tick=False):
        assert send(5).message.status == "sent"


def test_the_same_text_twice_within_24_hours_is_duplicate_content(world, business_hours, api):
    world.chip(max_per_hour=50)
    assert send(1, "Bom dia, doutor!").message.status == "sent"
    response = api.post("/api/v1/messages", {"contact": DOCTOR, "text": "  bom dia,   DOUTOR! ",
                                             "idempotency_key": "again"})
    assert response.status_code == 409 and response.json()["code"] == "duplicate_content"
    assert used() == 1
    # The same key again is a replay (its first result), not a duplicate.
    assert send(1, "Bom dia, doutor!").replayed
    with time_machine.travel(BUSINESS_TIME + timedelta(hours=24, minutes=1), tick=False):
        assert send(2, "Bom dia, doutor!").message.status == "sent"


def test_a_message_that_never_left_does_not_count(world, fake_evolution, business_hours):
    world.chip(max_per_hour=50)
    fake_evolution.fail_next(1, 503, route="sendText")
    assert send(1, "Olá").message.status == "failed"
    assert send(2, "Olá").message.status == "sent"  # the first never reached the contact


def test_replies_are_not_refused_by_the_hourly_courtesy_but_count_toward_it(world, business_hours):
    chip = world.chip(max_per_hour=50)
    InboundMessage.objects.create(chip=chip, contact=DOCTOR, gateway_message_id="IN1", text="Pode falar?",
                                  binding="new")
    ContactBinding.objects.create(contact=DOCTOR, chip=chip, origin="inbound", last_used_at=BUSINESS_TIME,
                                  expires_at=BUSINESS_TIME + timedelta(days=30))
    for n in range(5):
        assert send(n, kind="reply").message.status == "sent"
    from instances.courtesy import ContactRateLimited

    with pytest.raises(ContactRateLimited):
        send(9)  # a follow-up after five replies this hour
    from instances.courtesy import DuplicateContent

    with pytest.raises(DuplicateContent):
        send(10, "Mensagem 1", kind="reply")  # a reply repeating a text


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_to_one_contact_never_pass_the_limit(world, business_hours):
    world.chip(max_per_hour=100)
    outcomes: list[str] = []
    barrier = threading.Barrier(10)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            try:
                outcomes.append(send(i).message.status)
            except Exception as exc:
                outcomes.append(getattr(exc, "code", repr(exc)))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == ["contact_rate_limited"] * 7 + ["sent"] * 3
    assert OutboundMessage.objects.filter(contact=DOCTOR).count() == 3 and used() == 3
