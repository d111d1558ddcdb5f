"""Scenario tests of the orchestrator cycle with time travel and the fake providers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from chipfarm.models import OrchestratorOperation, PoolSnapshot
from chipfarm.orchestrator import run_cycle
from chips.models import Chip, ChipAlert, ChipTransition, Notification, WarmingPhase
from chips.notifications import notifications_deliver
from instances.models import ContactBinding
from instances.routing import contact_route
from tests.chipfarm.conftest import run_provisioning_tasks
from tests.factories import chip_in_state
from tests.instances.conftest import BUSINESS_TIME, production_chip

pytestmark = pytest.mark.django_db
S = Chip.Status
Op = OrchestratorOperation.Kind


def test_ten_cycles_without_activation_buy_exactly_the_buffer(pool_config, fake_salvy, fake_evolution):
    pool_config(production_min=5, ready_min=2, warmup_buffer=4, provision_batch_max=3,
                provision_daily_budget=20)
    bought_per_cycle = []
    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        for _ in range(10):
            report = run_cycle()
            assert report.ran and not report.errors, report.errors
            bought_per_cycle.append(report.steps["provision"])
            run_provisioning_tasks()  # the lines are bought; no activation ever finishes
            clock.shift(timedelta(minutes=1))

    assert bought_per_cycle[:2] == [3, 1] and sum(bought_per_cycle) == 4
    assert len(fake_salvy.lines) == 4
    assert Chip.objects.filter(status=S.PENDING).count() == 4
    assert OrchestratorOperation.objects.filter(kind=Op.AUTO_PROVISION).count() == 4
    # the pool is critical the whole time: one open alert, Slack told once
    assert ChipAlert.objects.filter(kind="pool_critical").count() == 1
    assert Notification.objects.filter(dedup_key="alert:pool:critical").count() == 1


def test_provisioning_respects_the_daily_budget(pool_config, fake_salvy, fake_evolution):
    pool_config(production_min=0, ready_min=0, warmup_buffer=10, provision_batch_max=3, provision_daily_budget=4)
    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        for _ in range(4):
            run_cycle()
            Chip.objects.filter(status=S.PROVISIONING).delete()  # as if they all failed and were dropped
            clock.shift(timedelta(minutes=1))
    assert OrchestratorOperation.objects.filter(kind=Op.AUTO_PROVISION).count() == 4
    assert ChipAlert.objects.open().filter(kind="provision_budget").exists()


def test_degraded_active_chip_is_replaced_by_the_most_trusted_ready_chip(pool_config, fake_slack, settings):
    pool_config(production_min=1, ready_min=0, warmup_buffer=0, trust_degraded_threshold=50)
    settings.MAX_CHIPS_ACTIVE = 10
    with time_machine.travel(BUSINESS_TIME, tick=False):
        old = production_chip(per_hour=50)
        for n in range(3):
            contact_route(contact=f"+55119000000{n:02d}")
        weaker = chip_in_state(status=S.READY, trust=88)
        best = chip_in_state(status=S.READY, trust=97)
        Chip.objects.filter(pk=old.pk).update(trust_score=30)

        report = run_cycle()
        notifications_deliver()

    assert report.steps["replace"] == 1 and not report.errors
    assert Chip.objects.get(pk=old.pk).status == S.DEGRADED
    assert Chip.objects.get(pk=best.pk).status == S.ACTIVE
    assert Chip.objects.get(pk=weaker.pk).status == S.READY
    assert set(ContactBinding.objects.current().values_list("chip_id", flat=True)) == {best.pk}
    op = OrchestratorOperation.objects.get(kind=Op.AUTO_REPLACE)
    assert (op.chip_id, op.target_chip_id, op.metadata["bindings_moved"], op.success) == (old.pk, best.pk, 3, True)
    assert len(fake_slack.messages_to("/operations")) == 1
    assert "replaced by" in fake_slack.messages_to("/operations")[0]["text"]


def test_no_ready_chip_gives_one_critical_alert_not_one_per_cycle(pool_config, fake_slack):
    pool_config(production_min=1, ready_min=0, warmup_buffer=0)
    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        old = chip_in_state(status=S.ACTIVE, trust=20)
        for _ in range(5):
            run_cycle()
            notifications_deliver()
            clock.shift(timedelta(minutes=1))
    assert Chip.objects.get(pk=old.pk).status == S.DEGRADED
    critical = ChipAlert.objects.filter(severity="critical")
    assert critical.filter(kind="no_ready_chip").count() == 1
    assert critical.filter(kind="pool_critical").count() == 1
    assert critical.get(kind="pool_critical").occurrences == 5
    texts = [m["text"] for m in fake_slack.messages_to("/alerts")]
    assert sum("Pool critical:" in t for t in texts) == 1
    assert sum("No ready chip:" in t for t in texts) == 1


def test_critical_alert_repeats_at_most_every_30_minutes(pool_config, fake_slack):
    pool_config(production_min=1, ready_min=0, warmup_buffer=0)
    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        for _ in range(61):  # an hour of cycles
            run_cycle()
            notifications_deliver()
            clock.shift(timedelta(minutes=1))
    texts = [m["text"] for m in fake_slack.messages_to("/alerts") if "Pool critical:" in m["text"]]
    assert len(texts) == 3  # at 0, 30 and 60 minutes


def test_promotions_warming_to_ready_then_ready_to_active_within_limits(pool_config, settings):
    pool_config(production_min=2, production_max=2, ready_min=0, warmup_buffer=0, warmup_days=21,
                trust_min_for_ready=85)
    eligible = [chip_in_state(status=S.WARMING) for _ in range(3)]
    for chip in eligible:
        chip.set_trust(90)
        chip.warming_phase = WarmingPhase.final()
        chip.warming_started_at = timezone.now() - timedelta(days=22)
        chip.save()
    too_young = chip_in_state(status=S.WARMING, trust=95, warming_phase=WarmingPhase.final())

    report = run_cycle()

    assert report.steps["promote_ready"] == 3
    assert report.steps["promote_active"] == 2
    assert Chip.objects.get(pk=too_young.pk).status == S.WARMING
    assert Chip.objects.filter(status=S.ACTIVE).count() == 2  # production_max holds
    assert Chip.objects.filter(status=S.READY).count() == 1
    assert OrchestratorOperation.objects.filter(kind=Op.PROMOTION_READY_ACTIVE).count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_cycles_at_once_promote_no_chip_twice(pool_config):
    pool_config(production_min=3, production_max=10, ready_min=0, warmup_buffer=0)
    for _ in range(6):
        chip_in_state(status=S.READY, trust=90)
    barrier = threading.Barrier(2)
    reports = []

    def worker():
        try:
            barrier.wait(timeout=10)
            reports.append(run_cycle())
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert Chip.objects.filter(status=S.ACTIVE).count() == 3
    assert OrchestratorOperation.objects.filter(kind=Op.PROMOTION_READY_ACTIVE).count() == 3
    promoted = ChipTransition.objects.filter(transition="promote_to_active", actor_id="orchestrator")
    assert promoted.count() == 3 and promoted.values("chip").distinct().count() == 3
    assert sorted(r.ran for r in reports) in ([False, True], [True, True])


def test_salvy_down_the_cycle_still_runs_its_other_steps(pool_config, fake_salvy, fake_evolution, settings):
    pool_config(production_min=1, ready_min=0, warmup_buffer=2, provision_batch_max=2)
    ready = chip_in_state(status=S.READY, trust=90)
    fake_salvy.fail_next(100, status=503)

    report = run_cycle()

    assert not report.errors and report.steps["promote_active"] == 1 and report.steps["provision"] == 2
    assert Chip.objects.get(pk=ready.pk).status == S.ACTIVE
    from chipfarm.tasks import provision_chip

    chip_id = Chip.objects.filter(status=S.PROVISIONING).first().pk
    result = provision_chip.apply(args=[chip_id])  # runs in-process, its bounded retries included
    assert result.get() == "failed"
    alert = ChipAlert.objects.get(kind="provisioning_failed", chip_id=chip_id)
    assert "server" in alert.message
    assert Chip.objects.get(pk=chip_id).status == S.PROVISIONING


def test_slack_down_the_cycle_finishes_and_the_notification_is_retried(pool_config, fake_slack):
    pool_config(production_min=1, ready_min=0, warmup_buffer=0)
    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        chip_in_state(status=S.ACTIVE, trust=20)
        chip_in_state(status=S.READY, trust=95)
        fake_slack.fail_next(5, status=500)
        report = run_cycle()
        assert not report.errors and report.steps["replace"] == 1
        assert notifications_deliver()["failed"] == 1
        assert fake_slack.messages_to("/operations") == []
        clock.shift(timedelta(minutes=5))
        fake_slack.reset()
        assert notifications_deliver()["sent"] == 1
    assert len(fake_slack.messages_to("/operations")) == 1
    assert Notification.objects.get(channel="operations").attempts == 2


def test_stuck_provisioning_is_retired_and_its_line_cancelled(pool_config, fake_salvy, fake_evolution):
    from chipfarm.provisioning import chip_release, sweep_stuck_provisioning

    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        chip = Chip.objects.create(area_code="11")
        fake_salvy_line = fake_salvy  # the line was bought, the instance never created
        from chipfarm.client import SalvyClient

        with SalvyClient() as salvy:
            line = salvy.provision(area_code=11, name=f"chipfarm-{chip.pk}")
        Chip.objects.filter(pk=chip.pk).update(provider_line_id=line.id, phone=line.phone_number)
        clock.shift(timedelta(minutes=16))
        assert sweep_stuck_provisioning() == 1
        assert Chip.objects.get(pk=chip.pk).status == S.RETIRED
        report = run_cycle()
        assert report.steps["release"] == 1
        release = chip_release(chip_id=chip.pk)
    assert release.done and release.reason == "technical-issues"
    assert fake_salvy_line.canceled == [(line.id, "technical-issues")]


def test_a_quiet_cycle_runs_the_same_queries_at_100_and_5000_chips(pool_config):
    pool_config(production_min=2, production_max=50, ready_min=1, warmup_buffer=2)

    def seed(n: int) -> None:
        # Volume only: rows in stable states that no step acts on (healthy, young, trusted).
        now = timezone.now()
        Chip.objects.bulk_create(
            [Chip(area_code="11", status=state, trust_score=90, is_connected=True, warming_phase="growth",
                  warming_started_at=now, connection_changed_at=now)
             for i in range(n) for state in [(S.ACTIVE, S.READY, S.WARMING, S.DEGRADED, S.BANNED)[i % 5]]],
            batch_size=2000,
        )

    def quiet_cycle_queries() -> int:
        run_cycle()  # settles snapshots and alerts
        with CaptureQueriesContext(connection) as ctx:
            report = run_cycle()
        assert report.changes == 0, report.steps
        return len(ctx.captured_queries)

    seed(100)
    small = quiet_cycle_queries()
    seed(4900)
    assert Chip.objects.count() == 5000
    assert quiet_cycle_queries() == small
    assert PoolSnapshot.objects.count() == 1
