"""Message kinds (instances.kinds): each kind's trust minimum and hourly share; a reply always goes to the contact's own
chip while it is in production (within the hard caps); refusals name the kind."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from chips.models import Chip
from chips.services import Actor, chip_transition
from instances.models import ChipCapacity, ContactBinding, InboundMessage
from instances.routing import RoutingRefused, contact_route
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db


def contact(n: int) -> str:
    return f"+55119{n:08d}"


@pytest.fixture
def frozen():
    with time_machine.travel(BUSINESS_TIME, tick=False) as traveller:
        yield traveller


def bind(number: str, chip: Chip) -> None:
    ContactBinding.objects.create(contact=number, chip=chip, last_used_at=BUSINESS_TIME,
                                  expires_at=BUSINESS_TIME + timedelta(days=30))


def wrote(number: str, chip: Chip) -> None:
    InboundMessage.objects.create(chip=chip, contact=number, gateway_message_id=f"IN{number}", text="Oi",
                                  binding="sticky", received_at=BUSINESS_TIME - timedelta(hours=2))


def test_a_prospecting_message_goes_to_a_chip_above_the_prospecting_trust(make_production_chip, frozen):
    low = make_production_chip(per_hour=50, trust=70)
    high = make_production_chip(per_hour=50, trust=85)
    assert {contact_route(contact=contact(n), kind="prospecting").chip_id for n in range(3)} == {high.pk}
    # A contact bound to the low-trust chip moves for a prospecting message, and says why.
    bind(contact(9), low)
    decision = contact_route(contact=contact(9), kind="prospecting")
    assert (decision.chip_id, decision.binding) == (high.pk, "moved")
    assert "below the prospecting minimum 80" in ContactBinding.objects.current().get(contact=contact(9)).move_reason
    # A follow-up (trust >= 60) may use either.
    assert contact_route(contact=contact(20), kind="follow_up").chip_id == low.pk


def test_without_a_chip_above_the_trust_the_refusal_names_the_kind(make_production_chip, frozen, api):
    chip = make_production_chip(per_hour=50, trust=70)
    with pytest.raises(RoutingRefused) as refused:
        contact_route(contact=contact(1), kind="prospecting")
    assert refused.value.code == "no_capacity" and "prospecting" in refused.value.message
    assert ChipCapacity.objects.get(chip=chip).hour_count == 0
    response = api.post("/api/v1/route", {"contact": contact(1), "kind": "prospecting"})
    assert response.status_code == 503
    body = response.json()
    assert (body["code"], body["kind"]) == ("no_capacity", "prospecting")
    assert "trust >= 80" in body["message"]


def test_each_kind_stops_at_its_share_of_the_hour(make_production_chip, frozen):
    chip = make_production_chip(per_hour=20, per_day=100, new_contacts=100)
    for n in range(5):  # 25 % of 20
        contact_route(contact=contact(n), kind="prospecting")
    with pytest.raises(RoutingRefused):
        contact_route(contact=contact(5), kind="prospecting")
    for n in range(10):  # 50 % of 20, on its own count
        contact_route(contact=contact(10 + n), kind="follow_up")
    with pytest.raises(RoutingRefused):
        contact_route(contact=contact(30), kind="follow_up")
    capacity = ChipCapacity.objects.get(chip=chip)
    assert (capacity.hour_prospecting, capacity.hour_follow_up, capacity.hour_count) == (5, 10, 15)
    # The quarter of the hour the proactive kinds leave is the replies'.
    for n in range(5):
        wrote(contact(40 + n), chip)
        bind(contact(40 + n), chip)
        assert contact_route(contact=contact(40 + n), kind="reply").chip_id == chip.pk
    capacity.refresh_from_db()
    assert (capacity.hour_reply, capacity.hour_count) == (5, 20)
    # The next hour starts every kind's count over.
    frozen.shift(timedelta(hours=1))
    assert contact_route(contact=contact(50), kind="prospecting").chip_id == chip.pk
    capacity.refresh_from_db()
    assert (capacity.hour_prospecting, capacity.hour_follow_up, capacity.hour_reply) == (1, 0, 0)


def test_a_reply_always_goes_to_the_contacts_own_chip_while_it_is_in_production(make_production_chip, frozen,
                                                                                settings):
    settings.KIND_HOURLY_SHARE = {**settings.KIND_HOURLY_SHARE, "reply": 10}  # 2 replies an hour of 20
    own = make_production_chip(per_hour=20, trust=30)  # below even the reply minimum (40)
    other = make_production_chip(per_hour=20, trust=95)
    ChipCapacity.objects.filter(chip=own).update(restricted_until=BUSINESS_TIME + timedelta(hours=5))
    for n in range(4):
        wrote(contact(n), own)
        bind(contact(n), own)
    # Past the reply share, under the trust minimum, restricted from new contacts: still its own chip.
    assert [contact_route(contact=contact(n), kind="reply").chip_id for n in range(4)] == [own.pk] * 4
    # Resting (cooling) is still production: it answers the people who write to it.
    chip_transition(chip=own.pk, transition="cool_down", actor=Actor.system("t"))
    decision = contact_route(contact=contact(0), kind="reply")
    assert (decision.chip_id, decision.binding) == (own.pk, "sticky")
    # A follow-up to the same contact does not go to a resting chip.
    assert contact_route(contact=contact(1), kind="follow_up").chip_id == other.pk


def test_a_reply_still_respects_the_hard_caps(make_production_chip, frozen):
    own = make_production_chip(per_hour=2, trust=90)
    other = make_production_chip(per_hour=20, trust=90)
    for n in range(3):
        wrote(contact(n), own)
        bind(contact(n), own)
    assert [contact_route(contact=contact(n), kind="reply").chip_id for n in range(3)] == [own.pk, own.pk, other.pk]
    assert ChipCapacity.objects.get(chip=own).hour_count == 2  # never past its hourly cap
