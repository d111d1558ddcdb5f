"""A pool found full (instances.pool_full): refusals without the pick for ROUTING_FULL_POOL_SECONDS, and the room
that comes back — seen at once when it comes back through this process, within that time otherwise."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chips.models import Chip
from common.exceptions import DomainError
from instances.caps import rule_version
from instances.models import ChipCapacity, Instance
from instances.pool_full import pool_found_full, pool_generation, pool_known_full, pool_room_changed
from instances.reservations import SENDING
from instances.routing import contact_route
from instances.sessions import session_opened
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db(transaction=True)  # each decision its own statements, as in production

PICK = "SKIP LOCKED"  # the pick of the best chip (a bound chip's own reservation locks its row plainly)


def contact(n: int) -> str:
    return f"+55116{n:08d}"


def refused(n: int) -> tuple[str, list[str]]:
    """contact_route for contact n, which must refuse: (its code, the SQL it sent)."""
    with CaptureQueriesContext(connection) as ctx, pytest.raises(DomainError) as exc:
        contact_route(contact=contact(n))
    return exc.value.code, [q["sql"] for q in ctx.captured_queries]


def fill(chip: Chip, count: int = 20) -> None:
    """The chip's hour used up behind this process's back (another process's reservations: no signal)."""
    ChipCapacity.objects.filter(chip=chip).update(hour_count=count, hour_window=BUSINESS_TIME)


@pytest.fixture
def at_business_time():
    with time_machine.travel(BUSINESS_TIME, tick=False):
        yield


def test_a_full_pool_refuses_new_contacts_without_the_pick_until_room_comes_back(make_production_chip, settings,
                                                                                  at_business_time):
    settings.ROUTING_FULL_POOL_SECONDS = 0.3
    chip = make_production_chip(per_hour=20)
    contact_route(contact=contact(1))
    fill(chip)
    code, first = refused(2)
    assert code == "no_capacity" and PICK in first[0]
    code, second = refused(3)  # known full: the context read only (opt-out, kill switch, binding)
    assert code == "no_capacity" and len(second) == 1 and PICK not in second[0]

    ChipCapacity.objects.filter(chip=chip).update(hour_count=0)  # room again, in another process
    assert refused(4)[0] == "no_capacity"  # not seen yet: it was full a moment ago
    time.sleep(0.35)
    assert contact_route(contact=contact(5)).chip_id == chip.pk  # seen once ROUTING_FULL_POOL_SECONDS passed


def test_the_other_refusals_still_come_first(make_production_chip, at_business_time):
    from instances.optouts import suppression_add
    from instances.services import sending_pause, sending_resume

    chip = make_production_chip(per_hour=20)
    contact_route(contact=contact(1))
    fill(chip)
    assert refused(2)[0] == "no_capacity"
    suppression_add(contact=contact(3), source="test", reason="opted out")
    assert refused(3)[0] == "opted_out"
    sending_pause(reason="incident", by="test")
    assert refused(4)[0] == "paused"
    sending_resume(by="test")
    assert refused(5)[0] == "no_capacity"


def test_room_given_back_through_this_process_is_seen_at_once(make_production_chip, at_business_time):
    chip = make_production_chip(per_hour=20)
    contact_route(contact=contact(1))
    fill(chip)
    assert PICK in refused(2)[1][0] and PICK not in refused(3)[1][0]
    capacity = ChipCapacity.objects.get(chip=chip)
    capacity.max_per_hour = 30  # an operator raises the cap (the admin saves the row)
    capacity.save()
    assert contact_route(contact=contact(4)).chip_id == chip.pk

    other = make_production_chip(per_hour=20, is_connected=False)
    fill(chip, 30)
    assert PICK in refused(5)[1][0] and PICK not in refused(6)[1][0]
    session_opened(Instance.objects.get(chip=other), BUSINESS_TIME)  # its session opens: the chip is connected
    assert contact_route(contact=contact(7)).chip_id == other.pk


def test_a_bound_contact_keeps_their_chip_and_leaves_it_without_a_transaction(make_production_chip,
                                                                            at_business_time):
    chip = make_production_chip(per_hour=20, new_contacts=1)
    assert contact_route(contact=contact(1)).binding == "new"
    code, sql = refused(2)  # the chip took its one new contact: full for new contacts
    assert PICK in sql[0] and PICK not in refused(3)[1][0]
    assert contact_route(contact=contact(1)).binding == "sticky"  # the hour still has room for its own contacts

    fill(chip)
    code, sql = refused(1)  # their chip refuses, and no other could take them
    assert code == "no_capacity"
    assert len(sql) == 2 and not any(PICK in q or q.startswith(("BEGIN", "SAVEPOINT")) for q in sql)


def test_what_is_remembered_is_the_kind_the_hour_the_rule_and_the_chips_left_out(settings):
    now, version = BUSINESS_TIME, rule_version(SENDING, "follow_up")
    began = pool_generation()
    pool_room_changed()  # room came back while that pick ran: what it found is not remembered
    pool_found_full("follow_up", now, version, {1, 2}, since=began)
    assert not pool_known_full("follow_up", now, version, {1, 2})
    pool_found_full("follow_up", now, version, {1, 2}, since=pool_generation())
    assert pool_known_full("follow_up", now + timedelta(minutes=30), version, {1, 2})
    assert pool_known_full("follow_up", now, version, {1, 2, 3})  # more chips left out: still no room
    assert not pool_known_full("follow_up", now, version, {1})  # a circuit closed: chip 2 may have room
    assert not pool_known_full("prospecting", now, rule_version(SENDING, "prospecting"), {1, 2})
    assert not pool_known_full("follow_up", now + timedelta(hours=1), version, {1, 2})  # a new hour: room again
    settings.MAX_MSGS_PER_HOUR += 10
    assert not pool_known_full("follow_up", now, rule_version(SENDING, "follow_up"), {1, 2})  # another rule
    settings.MAX_MSGS_PER_HOUR -= 10
    assert pool_known_full("follow_up", now, version, {1, 2})
    pool_room_changed()
    assert not pool_known_full("follow_up", now, version, {1, 2})

    settings.ROUTING_FULL_POOL_SECONDS = 0  # off: nothing is remembered, every refusal runs the pick
    pool_found_full("follow_up", now, version, {1, 2}, since=pool_generation())
    assert not pool_known_full("follow_up", now, version, {1, 2})
