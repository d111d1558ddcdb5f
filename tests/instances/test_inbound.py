"""A contact's message and its binding (instances.inbound): one statement tells whether the number is the pool's
own, how it relates to the contact's binding, and binds a new contact who wrote to a production chip — also
when another request binds the same contact at the same moment."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.utils import timezone

from chips.models import Chip
from common.batch import batch_scope
from instances.inbound import _relation, inbound_receive
from instances.models import ContactBinding, InboundMessage
from outbox.models import Endpoint, Event
from tests.factories import chip_in_state
from tests.instances.conftest import production_chip

CONTACT = "+5511977770000"


@pytest.fixture
def chips(settings):
    settings.MAX_CHIPS_ACTIVE = 1000
    return production_chip(), production_chip()


@pytest.mark.django_db
def test_each_relation_of_a_message_to_its_contacts_binding(chips):
    mine, other = chips
    now = timezone.now()
    assert _relation(CONTACT, mine, now) == (False, "new", mine.pk)  # bound by writing
    binding = ContactBinding.objects.current().get(contact=CONTACT)
    assert (binding.chip_id, binding.origin) == (mine.pk, "inbound")
    assert _relation(CONTACT, mine, now) == (False, "sticky", mine.pk)
    assert _relation(CONTACT, other, now) == (False, "other", mine.pk)  # wrote to another of our numbers
    ContactBinding.objects.filter(pk=binding.pk).update(origin="moved")
    assert _relation(CONTACT, mine, now) == (False, "moved", mine.pk)
    assert _relation(other.phone, mine, now) == (True, "new", None)  # the pool's own number: warming traffic
    warming = chip_in_state(status=Chip.Status.WARMING)
    assert _relation("+5511977770001", warming, now) == (False, "new", None)  # not bound to a warming chip
    assert not ContactBinding.objects.filter(contact__in=[other.phone, "+5511977770001"]).exists()


@pytest.mark.django_db(transaction=True)
def test_a_binding_made_at_the_same_moment_wins_and_is_read_again(chips):
    mine, other = chips
    now = timezone.now()
    inserted, done = threading.Event(), threading.Event()

    def rival():  # binds the contact to the other chip, and commits only after ours has started waiting
        try:
            with transaction.atomic():
                ContactBinding.objects.create(contact=CONTACT, chip=other, origin="routed", last_used_at=now,
                                              expires_at=now + timedelta(days=30))
                inserted.set()
                done.wait(5)
        finally:
            connections.close_all()

    thread = threading.Thread(target=rival)
    thread.start()
    assert inserted.wait(5)
    timer = threading.Timer(0.5, done.set)  # our insert waits on the rival's row; it commits half a second later
    timer.start()
    try:
        assert _relation(CONTACT, mine, now) == (False, "other", other.pk)
    finally:
        done.set()
        thread.join()
    assert ContactBinding.objects.current().get(contact=CONTACT).chip_id == other.pk


@pytest.mark.django_db
def test_in_a_batch_the_message_is_numbered_at_once_and_inserted_at_its_end(chips):
    mine, _other = chips
    Endpoint.objects.create(url="https://app.example.com/hooks")
    now = timezone.now()
    key = {"remoteJid": "5511977770000@s.whatsapp.net", "fromMe": False, "id": "3A99"}
    with transaction.atomic(), batch_scope():
        message = inbound_receive(chip=mine, data={"message": {"conversation": "oi"}, "messageType": "conversation"},
                                  key=key, phone=CONTACT, lid="", now=now)
        assert message.pk is not None and not InboundMessage.objects.filter(pk=message.pk).exists()
    stored = InboundMessage.objects.get(pk=message.pk)
    assert (stored.contact, stored.text, stored.binding) == (CONTACT, "oi", "new")
    assert Event.objects.get(type="message.received").data["message_id"] == message.pk
