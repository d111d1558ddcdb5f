"""The planner and the dispatcher: hours, holidays, volumes, texts, idle restarts, restrictions, SKIP LOCKED."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection

from chips.models import Chip, WarmingPhase
from instances import hours
from instances.caps import Caps, caps_in_effect
from instances.models import ChipCapacity
from warmer.models import PhasePlan, WarmingAction, WarmingDay
from warmer.services import _pick_peers, phase_plans, warming_dispatch, warming_plan_day

pytestmark = pytest.mark.django_db
TUESDAY = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)  # 07:00 in São Paulo, before opening


def talked_yesterday(chip: Chip, peer: Chip) -> None:
    """A conversation the day before, so the chip is not idle (72 h) and keeps its ramp."""
    yesterday = TUESDAY - timedelta(days=1)
    WarmingAction.objects.create(chip=chip, peer=peer, kind="initiate", text="Oi!", day=yesterday.date(),
                                 due_at=yesterday, status="sent", done_at=yesterday)


def test_plans_only_inside_business_hours_with_distinct_texts_per_peer(warming_pool):
    with time_machine.travel(TUESDAY - timedelta(days=8), tick=False):
        subjects, peers = warming_pool(warming=3, peers=2)
    for chip in subjects:
        talked_yesterday(chip, peers[0])
    with time_machine.travel(TUESDAY, tick=False):
        report = warming_plan_day()
    assert report.chips == 3 and report.actions > 0 and not report.restarted
    actions = list(WarmingAction.objects.filter(status="planned"))
    assert all(hours.is_business_time(a.due_at) for a in actions)
    pairs = Counter((a.chip_id, a.peer_id, a.text) for a in actions)
    assert max(pairs.values()) == 1
    # idempotent: a second run the same day plans nothing more
    with time_machine.travel(TUESDAY + timedelta(hours=2), tick=False):
        assert warming_plan_day().actions == 0
    assert WarmingAction.objects.filter(status="planned").count() == len(actions)


def test_daily_volume_follows_the_phase_plan(warming_pool):
    with time_machine.travel(TUESDAY - timedelta(days=7), tick=False):
        (subject,), peers = warming_pool(warming=1, peers=4)
        Chip.objects.filter(pk=subject.pk).update(trust_score=60)
    talked_yesterday(subject, peers[0])
    with time_machine.travel(TUESDAY, tick=False):
        warming_plan_day()
    subject.refresh_from_db()
    plan = PhasePlan.objects.get(phase=subject.warming_phase)
    assert subject.warming_phase == WarmingPhase.GROWTH  # day 7, trust 60
    assert WarmingAction.objects.filter(chip=subject, status="planned").count() == plan.initiations_per_day
    # the router's caps keep the day within the plan: read from the phase, never written into a capacity row
    capacity = ChipCapacity.objects.get(chip=subject)
    assert caps_in_effect(subject, capacity) == Caps(per_hour=plan.messages_per_hour, per_day=plan.messages_per_day,
                                                     new_contacts_per_day=plan.new_peers_per_day)
    assert (capacity.max_per_hour, capacity.max_per_day) == (None, None)


def test_new_peers_per_day_are_limited(warming_pool):
    with time_machine.travel(TUESDAY, tick=False):
        (subject,), peers = warming_pool(warming=1, peers=8)
    picked = _pick_peers(subject.pk, 30, 2, [p.pk for p in peers], {}, TUESDAY)
    assert len(set(picked)) <= 2


def test_nothing_is_planned_on_a_national_holiday(warming_pool):
    holiday = datetime(2026, 12, 25, 10, 0, tzinfo=UTC)
    with time_machine.travel(holiday - timedelta(days=3), tick=False):
        warming_pool(warming=2, peers=2)
    with time_machine.travel(holiday, tick=False):
        report = warming_plan_day()
    assert report.holiday and not WarmingAction.objects.exists()


def test_dispatch_outside_hours_sends_nothing(warming_pool, fake_evolution):
    with time_machine.travel(TUESDAY - timedelta(days=3), tick=False):
        (subject,), peers = warming_pool(warming=1, peers=2)
    talked_yesterday(subject, peers[0])
    with time_machine.travel(TUESDAY, tick=False):
        warming_plan_day()
    WarmingAction.objects.filter(status="planned").update(due_at=TUESDAY)
    with time_machine.travel(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), tick=False):  # 20:30 in São Paulo
        report = warming_dispatch()
    assert report.sent == 0 and report.skipped == report.claimed > 0
    assert fake_evolution.sent_messages == []


def test_a_72h_idle_chip_restarts_its_ramp(warming_pool):
    with time_machine.travel(TUESDAY - timedelta(days=10), tick=False):
        (subject,), _ = warming_pool(warming=1, peers=2)
    Chip.objects.filter(pk=subject.pk).update(warming_phase=WarmingPhase.GROWTH, trust_score=70)
    with time_machine.travel(TUESDAY, tick=False):
        report = warming_plan_day()
    subject.refresh_from_db()
    assert report.restarted == [subject.pk]
    assert subject.warming_phase == WarmingPhase.REST
    assert subject.warming_started_at == TUESDAY
    assert WarmingDay.objects.get(chip=subject).warming_day == 0


def test_a_restricted_chip_is_not_planned(warming_pool):
    with time_machine.travel(TUESDAY, tick=False):
        (subject, other), _ = warming_pool(warming=2, peers=2)
        ChipCapacity.objects.filter(chip=subject).update(restricted_until=TUESDAY + timedelta(hours=24))
        report = warming_plan_day()
    assert report.chips == 1
    assert not WarmingDay.objects.filter(chip=subject).exists()
    assert WarmingDay.objects.filter(chip=other).exists()


def test_a_sent_message_schedules_the_peers_reply_after_a_human_delay(warming_pool, fake_evolution):
    noon = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    with time_machine.travel(noon, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        action = WarmingAction.objects.create(chip=subject, peer=peer, kind="initiate", text="Oi, tudo bem?",
                                              day=noon.date(), due_at=noon)
        assert warming_dispatch().sent == 1
    reply = WarmingAction.objects.get(reply_to=action)
    assert (reply.chip_id, reply.peer_id, reply.kind) == (peer.pk, subject.pk, "reply")
    assert timedelta(seconds=90) <= reply.due_at - noon <= timedelta(minutes=15)
    assert fake_evolution.sent_messages[0]["number"] == peer.phone.lstrip("+")


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_never_send_an_action_twice(warming_pool, fake_evolution):
    noon = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    with time_machine.travel(noon, tick=True):
        subjects, peers = warming_pool(warming=4, peers=4)
        phase_plans()  # the rows exist (a transactional test before this one may have flushed them)
        PhasePlan.objects.update(messages_per_day=1000)  # the warming subjects' caps come from their phase
        WarmingAction.objects.bulk_create([
            WarmingAction(chip=subjects[i % 4], peer=peers[i % 4], kind="reply", text=f"texto {i}",
                          day=noon.date(), due_at=noon - timedelta(minutes=1))
            for i in range(120)
        ])
        barrier = threading.Barrier(2)

        def worker():
            try:
                barrier.wait(timeout=10)
                while warming_dispatch(limit=10).claimed:
                    pass
            finally:
                connection.close()

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    texts = Counter(m["text"] for m in fake_evolution.sent_messages)
    assert len(texts) == 120 and max(texts.values()) == 1
    assert WarmingAction.objects.filter(status="sent").count() == 120
