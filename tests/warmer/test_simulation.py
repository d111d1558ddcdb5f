"""21 days of warming with time travel, the fake Evolution, and (for part of it) a real Celery worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chipfarm.orchestrator import run_cycle
from chips.models import Chip, ChipTransition, WarmingPhase
from instances import hours
from tests.warmer.conftest import Network
from warmer.models import ChipDailyMetrics, PhasePlan, WarmingAction, WarmingDay
from warmer.services import phase_plans, trust_recompute, warming_dispatch, warming_plan_day
from warmer.tasks import recompute_trust

START = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)  # Monday 08:00 in São Paulo
STEP = timedelta(minutes=30)


def _configure_pool() -> None:
    # A quarter of the default volumes keeps 21 simulated days quick; the ramp's shape is unchanged.
    # phase_plans(): a transactional test before this one may have flushed the seeded rows.
    for plan in phase_plans():
        plan.messages_per_day = max(4, plan.messages_per_day // 4)
        plan.save()
    config = PoolConfiguration.defaults()
    config.production_min, config.ready_min, config.warmup_buffer, config.auto_provision = 0, 0, 0, False
    config.save()


def simulate(days: int, network: Network, subject: Chip, *, on_day_end=None) -> list[str]:
    phases = []
    with time_machine.travel(START, tick=False) as clock:
        for day in range(days):
            clock.move_to(START + timedelta(days=day))
            warming_plan_day()
            now = START + timedelta(days=day)
            while hours.is_business_time(now):
                warming_dispatch(limit=500)
                network.deliver()
                now += STEP
                clock.move_to(now)
            warming_dispatch(limit=500)  # anything due at closing is skipped, never sent after hours
            network.deliver()
            as_of = START + timedelta(days=day, hours=12, minutes=30)
            clock.move_to(as_of)
            if on_day_end:
                on_day_end(day, as_of)
            else:
                trust_recompute(as_of=as_of)
            run_cycle()
            subject.refresh_from_db()
            phases.append(subject.warming_phase or subject.status)
    return phases


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_clean_chip_walks_every_phase_reaches_85_and_is_promoted(warming_pool, fake_evolution, celery_worker_queue):
    _configure_pool()
    with time_machine.travel(START - timedelta(hours=1), tick=False):
        (subject,), peers = warming_pool(warming=1, peers=4)

    def day_end(day: int, as_of: datetime) -> None:
        if day >= 19:  # the last days' trust runs in the real worker, through Redis
            # ignore_result=False: the task ignores results, and .get() would then return at once (a race)
            recompute_trust.apply_async(args=[None, as_of.isoformat()], queue=celery_worker_queue,
                                        ignore_result=False).get(timeout=30)
        else:
            trust_recompute(as_of=as_of)

    phases = simulate(23, Network(fake_evolution), subject, on_day_end=day_end)

    subject.refresh_from_db()
    assert subject.status == Chip.Status.READY, (subject.status, subject.trust_score, phases)
    assert subject.trust_score >= 85
    walked = [p.phase for p in PhasePlan.objects.order_by("order")]
    assert [p for i, p in enumerate(phases) if p in walked and (i == 0 or phases[i - 1] != p)] == walked
    assert OrchestratorOperation.objects.filter(kind="promotion_warming_ready", chip=subject).count() == 1
    assert ChipTransition.objects.filter(chip=subject, transition="promote_to_ready", actor_id="orchestrator").exists()
    sent = ChipDailyMetrics.objects.filter(chip=subject)
    assert sum(m.sent for m in sent) > 100 and sum(m.received for m in sent) > 50


@pytest.mark.django_db
def test_twenty_percent_delivery_failures_keep_it_below_and_unpromoted(warming_pool, fake_evolution):
    _configure_pool()
    with time_machine.travel(START - timedelta(hours=1), tick=False):
        (subject,), _ = warming_pool(warming=1, peers=4)

    simulate(23, Network(fake_evolution, fail_every=5), subject)

    subject.refresh_from_db()
    assert subject.status == Chip.Status.WARMING
    assert subject.trust_score < 85
    assert subject.warming_phase in (WarmingPhase.PRE_OPERATION, WarmingPhase.OPERATION)
    assert not OrchestratorOperation.objects.filter(kind="promotion_warming_ready").exists()
    # every message was sent inside business hours, and each day's volume stayed within that day's plan
    for done_at in WarmingAction.objects.filter(status="sent").values_list("done_at", flat=True):
        assert hours.is_business_time(done_at)
    plans = {p.phase: p.messages_per_day for p in PhasePlan.objects.all()}
    days = {d.day: d.phase for d in WarmingDay.objects.filter(chip=subject)}
    metrics = list(ChipDailyMetrics.objects.filter(chip=subject))
    assert len(metrics) >= 20
    for m in metrics:
        assert m.sent + m.send_failures <= plans[days[m.day]], (m.day, m.sent, days[m.day])
