"""The batched dispatcher (W2 7/7): caps per batch, concurrent sends with the gateway's own typing delay,
results and counters written in bulk, a query count that does not grow with the batch, stale claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from instances.caps import caps_in_effect
from instances.models import ChipCapacity
from warmer.models import ChipDailyMetrics, PhasePlan, WarmingAction
from warmer.services import phase_plans, release_stale_claims, warming_dispatch, warming_dispatch_due

pytestmark = pytest.mark.django_db
NOON = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday, 12:00 in São Paulo


def due(chip, peer, n: int, *, kind: str = "reply", typing_ms: int = 0, prefix: str = "texto") -> list[WarmingAction]:
    return WarmingAction.objects.bulk_create([
        WarmingAction(chip=chip, peer=peer, kind=kind, text=f"{prefix} {i}", day=NOON.date(),
                      due_at=NOON - timedelta(seconds=i + 1), typing_ms=typing_ms)
        for i in range(n)
    ])


def test_a_batch_takes_only_what_the_chips_cap_leaves(warming_pool, fake_evolution):
    with time_machine.travel(NOON, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=30)  # the subject's phase: 30 a day, its share per hour
        caps = caps_in_effect(subject)
        room = min(caps.per_hour, caps.per_day)
        assert 0 < room < 10
        due(subject, peer, 10)
        report = warming_dispatch(limit=50)
    assert (report.claimed, report.sent, report.skipped) == (10, room, 10 - room)
    assert len(fake_evolution.sent_messages) == room
    assert ChipCapacity.objects.get(chip=subject).hour_count == room
    skipped = WarmingAction.objects.filter(status="skipped")
    assert {a.note for a in skipped} == {"the chip's cap for today is reached"}
    assert ChipDailyMetrics.objects.get(chip=subject, day=NOON.date()).sent == room


def test_sends_go_out_concurrently_with_the_typing_pause_left_to_the_gateway(warming_pool, fake_evolution, settings):
    settings.WARMER_DISPATCH_CONCURRENCY = 4
    fake_evolution.set_latency(0.2)  # a real gateway is far away: concurrent sends overlap
    with time_machine.travel(NOON, tick=True):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=100)
        due(subject, peer, 8, typing_ms=1500)
        assert warming_dispatch(limit=50).sent == 8
    assert fake_evolution.peak_in_flight >= 2
    assert {m["delay"] for m in fake_evolution.sent_messages} == {1500}  # Evolution's own `delay` types


def test_a_failed_send_is_recorded_counted_and_not_answered(warming_pool, fake_evolution):
    with time_machine.travel(NOON, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=100)
        fake_evolution.fail_next(1, 500, route="sendText")
        action, = due(subject, peer, 1, kind="initiate")
        report = warming_dispatch()
    action.refresh_from_db()
    assert (report.failed, action.status) == (1, "failed")
    assert "500" in action.note
    assert not WarmingAction.objects.filter(reply_to=action).exists()
    assert ChipDailyMetrics.objects.get(chip=subject, day=NOON.date()).send_failures == 1


def test_first_time_peers_are_counted_once_per_pair(warming_pool, fake_evolution):
    with time_machine.travel(NOON, tick=False):
        (subject,), (peer, other) = warming_pool(warming=1, peers=2)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=100)
        due(subject, peer, 3, kind="initiate", prefix="a")
        due(subject, other, 2, kind="initiate", prefix="b")
        assert warming_dispatch(limit=50).sent == 5
    metrics = ChipDailyMetrics.objects.get(chip=subject, day=NOON.date())
    assert (metrics.sent, metrics.new_peers) == (5, 2)
    assert WarmingAction.objects.filter(kind="reply", chip__in=[peer, other], peer=subject).count() == 5


def test_the_query_count_does_not_grow_with_the_batch(warming_pool, fake_evolution):
    def queries_for(n: int, prefix: str) -> int:
        due(subject, peer, n, kind="initiate", prefix=prefix)
        with CaptureQueriesContext(connection) as ctx:
            assert warming_dispatch(limit=n).sent == n
        return len(ctx.captured_queries)

    with time_machine.travel(NOON, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=1000)
        small, large = queries_for(2, "small"), queries_for(40, "large")
    assert large == small
    assert large <= 18  # 12 statements; the test's transaction turns each atomic block into 2 savepoint ones


def test_a_dead_workers_claims_are_failed_never_resent(warming_pool, fake_evolution):
    with time_machine.travel(NOON, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        action, = due(subject, peer, 1)
        WarmingAction.objects.filter(pk=action.pk).update(status="claimed", claimed_at=NOON - timedelta(minutes=11))
        assert release_stale_claims() == 1
        assert warming_dispatch().claimed == 0
    action.refresh_from_db()
    assert action.status == "failed" and not fake_evolution.sent_messages


def test_a_failure_streak_is_ended_by_a_send_that_goes_through(warming_pool, fake_evolution):
    from instances import circuit

    with time_machine.travel(NOON, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=100)
        fake_evolution.fail_next(2, 503, route="sendText")  # Evolution unavailable: the session stays
        due(subject, peer, 2, kind="initiate", prefix="falha")
        assert warming_dispatch().failed == 2
        assert circuit.circuit_state(chip_id=subject.pk, now=NOON).failures == 2
        due(subject, peer, 1, kind="initiate", prefix="certo")
        report = warming_dispatch()
        assert report.sent == 1, list(WarmingAction.objects.values_list("status", "note"))
        state = circuit.circuit_state(chip_id=subject.pk, now=NOON)
    assert (state.state, state.failures) == (circuit.CLOSED, 0)  # a third failure now would not open it


def test_a_run_sends_batch_after_batch_while_actions_are_due_and_starts_none_past_its_budget(warming_pool,
                                                                                              fake_evolution):
    with time_machine.travel(NOON, tick=False):
        (subject,), (peer,) = warming_pool(warming=1, peers=1)
        phase_plans()
        PhasePlan.objects.update(messages_per_day=1000)
        due(subject, peer, 25, prefix="backlog")
        report = warming_dispatch_due(limit=10)  # three batches: 10, 10, then 5 (not full: the run ends)
        assert (report.claimed, report.sent) == (25, 25)
        assert len(fake_evolution.sent_messages) == 25
        due(subject, peer, 25, prefix="later")
        report = warming_dispatch_due(limit=10, budget_seconds=0)  # the first batch only
    assert (report.claimed, report.sent) == (10, 10)
    assert WarmingAction.objects.filter(status="planned", text__startswith="later").count() == 15
