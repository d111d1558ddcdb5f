"""The pool brain's early warning (chipfarm.brain, instances.health_signals): a chip getting into trouble is watched,
rested (cool_down, growing with repeats) and resumed by the cycle, and stopped (degraded, replaced) after repeated
rests; a healthy chip beside it is untouched; every decision is an operation naming its figures."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.test import override_settings

from chipfarm.brain import chip_health_summary
from chipfarm.models import ChipHealth, OrchestratorOperation
from chipfarm.orchestrator import run_cycle
from chips.models import Chip, ChipAlert, ChipTransition
from instances.gateway import GatewayError
from instances.health_signals import ChipFigures, WindowFigures, assess, chip_figures, thresholds
from instances.models import ChipCapacity, ContactBinding, DeliveryEvent
from instances.routing import contact_route
from instances.services import send_failure_observed, send_success_observed
from tests.factories import chip_in_state
from tests.instances.conftest import BUSINESS_TIME, production_chip

pytestmark = pytest.mark.django_db
S = Chip.Status
Op = OrchestratorOperation.Kind
NOW = BUSINESS_TIME


@pytest.fixture
def clock():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def pool(pool_config, settings):
    settings.MAX_CHIPS_ACTIVE = 100
    return pool_config(production_min=0, production_max=100, ready_min=0, warmup_buffer=0, auto_provision=False)


def traffic(chip: Chip, *, sent: int, failed: int, at, replies: int | None = None, delivered: int | None = None
            ) -> None:
    """What every sender reports through instances.services (the send hooks), and the receipts and answers the
    gateway's webhooks record: `sent` accepted sends (delivered unless told), `failed` gateway failures spread among
    them, `replies` inbound messages (default: a third of the sends)."""
    delivered = sent if delivered is None else delivered
    total = sent + failed
    every = total // failed if failed else 0
    s = 0
    for i in range(total):
        moment = at + timedelta(seconds=i)
        if every and i % every == every - 1 and failed:
            failed -= 1
            send_failure_observed(chip_id=chip.pk, error=GatewayError("server", status_code=503), now=moment)
            continue
        key = f"M{chip.pk}-{at:%H%M}-{i}"
        send_success_observed(chip_id=chip.pk, message_id=key, now=moment)
        if s < delivered:
            DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.DELIVERED, message_id=key,
                                         occurred_at=moment + timedelta(seconds=30))
        s += 1
    for i in range((sent // 3) if replies is None else replies):
        DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.INBOUND, message_id=f"IN{chip.pk}-{i}",
                                     occurred_at=at + timedelta(minutes=1))


def ops(chip: Chip, kind: str) -> list[OrchestratorOperation]:
    return list(OrchestratorOperation.objects.filter(chip=chip, kind=kind).order_by("id"))


def test_the_figures_over_the_hour_and_the_day_come_from_one_grouped_query(pool, clock, django_assert_num_queries):
    chip = production_chip()
    traffic(chip, sent=30, failed=10, at=NOW - timedelta(hours=5))    # the day only
    traffic(chip, sent=18, failed=2, at=NOW - timedelta(minutes=40))  # the hour (and the day)
    with django_assert_num_queries(2):
        figures = chip_figures(now=NOW)[chip.pk]
    assert (figures.hour.attempted, figures.hour.failed, figures.hour.failed_share) == (20, 2, 10.0)
    assert (figures.day.attempted, figures.day.failed, figures.day.failed_share) == (60, 12, 20.0)
    assert figures.day.delivered_share == 100.0  # 48 delivered of the 48 sends older than 15 minutes
    assert figures.day.reply_rate == pytest.approx(100 * (10 + 6) / 48, abs=0.1)


def test_a_window_with_too_few_sends_says_nothing_and_the_levels_follow_the_thresholds():
    limits = thresholds()
    assert (limits.failed_share, limits.delivered_share, limits.reply_rate) == ((5, 10, 20), (90, 80, 60), 20)

    def level(**hour) -> str:
        return assess(ChipFigures(chip_id=1, hour=WindowFigures(**hour)), limits).level

    assert level(attempted=9, sent=5, failed=4, replies=3) == "ok"  # 9 < EARLY_WARNING_MIN_SENDS
    assert level(attempted=100, sent=96, failed=4, replies=30) == "ok"
    assert level(attempted=100, sent=95, failed=5, replies=30) == "watch"
    assert level(attempted=100, sent=90, failed=10, replies=30) == "rest"
    assert level(attempted=100, sent=80, failed=20, replies=30) == "stop"
    day = WindowFigures(attempted=100, sent=100, delivered=70, settled=100, replies=30)
    verdict = assess(ChipFigures(chip_id=1, day=day), limits)
    assert verdict.level == "rest" and "delivered 70.0% of 100 sends" in verdict.reasons[0]


def test_one_or_two_unlucky_messages_are_a_watch_never_a_rest():
    """In a window of 10 sends one failure is already 10 % (rest) and two are 20 % (stop): a healthy chip losing 2 %
    of its messages would be rested every few days and stopped within a week (bench/pool_simulation.py found it).
    A rest or a stop needs EARLY_WARNING_MIN_FAILURES bad messages; fewer are a watch."""
    limits = thresholds()
    assert limits.min_failures == 3

    def verdict(**day):
        return assess(ChipFigures(chip_id=1, day=WindowFigures(**day)), limits)

    one = verdict(attempted=10, sent=9, failed=1, replies=3)
    assert one.level == "watch"
    assert "failed 10.0% of 10 sends in the last 24 h" in one.reasons[0] and "a rest needs 3" in one.reasons[0]
    assert verdict(attempted=10, sent=8, failed=2, replies=3).level == "watch"  # 20 %, two messages
    assert verdict(attempted=10, sent=7, failed=3, replies=3).level == "stop"   # 30 %, three: the evidence is there
    assert verdict(attempted=20, sent=17, failed=3, replies=6).level == "rest"  # 15 %
    # The delivered share too (it binds once EARLY_WARNING_MIN_SENDS is lowered): two undelivered of five.
    with override_settings(EARLY_WARNING_MIN_SENDS=5):
        few = assess(ChipFigures(chip_id=1, day=WindowFigures(attempted=5, sent=5, delivered=3, settled=5,
                                                              replies=2)), thresholds())
    assert few.level == "watch" and "delivered 60.0% of 5 sends" in few.reasons[0]


def test_a_healthy_chip_with_one_failed_send_is_watched_and_a_troubled_one_stopped(pool, clock):
    unlucky, troubled = production_chip(), production_chip()
    traffic(unlucky, sent=9, failed=1, at=NOW - timedelta(minutes=50))    # 10 % of 10: one message
    traffic(troubled, sent=9, failed=3, at=NOW - timedelta(minutes=50))   # 25 % of 12: three

    run_cycle(now=NOW)

    unlucky.refresh_from_db()
    troubled.refresh_from_db()
    assert unlucky.status == S.ACTIVE and ChipHealth.objects.get(chip=unlucky).level == "watch"
    assert not ops(unlucky, Op.HEALTH_REST) and not ops(unlucky, Op.HEALTH_STOP)
    assert troubled.status == S.DEGRADED and ops(troubled, Op.HEALTH_STOP)


def test_a_chip_crossing_the_rest_threshold_rests_resumes_and_is_stopped_after_repeated_rests(pool, clock):
    troubled, healthy = production_chip(), production_chip()
    ready = chip_in_state(status=S.READY, trust=95)
    ChipCapacity.objects.filter(chip=troubled).update(allowance_step=1)
    for n in range(3):  # the troubled chip's contacts, handed over when it is stopped
        contact_route(contact=f"+5511977770{n:03d}")
    ContactBinding.objects.update(chip=troubled)
    traffic(troubled, sent=34, failed=6, at=NOW - timedelta(minutes=50))  # 15 % failed in the hour: rest (>= 10)
    traffic(healthy, sent=40, failed=0, at=NOW - timedelta(minutes=50))

    report = run_cycle(now=NOW)

    assert report.steps["early_warning"] == 1 and not report.errors
    troubled.refresh_from_db()
    assert troubled.status == S.COOLING and troubled.cooling_until == NOW + timedelta(minutes=60)
    (rest,) = ops(troubled, Op.HEALTH_REST)
    assert "failed 15.0% of 40 sends in the last hour" in rest.reason
    assert rest.metadata["figures"]["hour"]["failed_share"] == 15.0 and rest.metadata["minutes"] == 60
    assert rest.metadata["thresholds"]["failed_share"] == [5, 10, 20]
    assert ChipTransition.objects.filter(chip=troubled, transition="cool_down", actor_id="orchestrator").exists()
    capacity = ChipCapacity.objects.get(chip=troubled)
    assert capacity.allowance_step == 0 and "rested" in capacity.allowance_reason  # a step down
    assert capacity.signals_since == NOW + timedelta(minutes=60)  # judged afresh after the rest
    assert ChipAlert.objects.open().get(dedup_key=f"early_warning:{troubled.pk}").severity == "warning"

    # Still resting a minute before cooling_until; the cycle resumes it once it has passed.
    assert run_cycle(now=NOW + timedelta(minutes=59)).steps["resume"] == 0
    clock.move_to(NOW + timedelta(minutes=61))
    report = run_cycle(now=NOW + timedelta(minutes=61))
    assert report.steps["resume"] == 1
    troubled.refresh_from_db()
    assert troubled.status == S.ACTIVE and troubled.cooling_until is None
    assert ops(troubled, Op.RESUME)

    # In trouble again after the rest: a second rest, twice as long.
    second = NOW + timedelta(minutes=62)
    traffic(troubled, sent=34, failed=6, at=second)
    clock.move_to(second + timedelta(minutes=5))
    run_cycle(now=second + timedelta(minutes=5))
    troubled.refresh_from_db()
    assert troubled.status == S.COOLING
    assert [op.metadata["minutes"] for op in ops(troubled, Op.HEALTH_REST)] == [60, 120]

    # After the second rest, the third time it needs one it is stopped: degraded and replaced by the ready chip.
    third = troubled.cooling_until + timedelta(minutes=1)
    clock.move_to(third)
    run_cycle(now=third)
    traffic(troubled, sent=34, failed=6, at=third + timedelta(minutes=1))
    clock.move_to(third + timedelta(minutes=6))
    report = run_cycle(now=third + timedelta(minutes=6))

    troubled.refresh_from_db()
    assert troubled.status == S.DEGRADED and troubled.stop_requested_at is None  # the degrade consumed the stop
    (stop,) = ops(troubled, Op.HEALTH_STOP)
    assert "needs a rest again after 2 rests in 7 days" in stop.reason and stop.metadata["rests"] == 2
    degrade = ChipTransition.objects.get(chip=troubled, transition="degrade")
    assert degrade.reason.startswith("early warning stop:")
    (replace,) = ops(troubled, Op.AUTO_REPLACE)
    assert replace.target_chip_id == ready.pk
    assert set(ContactBinding.objects.current().values_list("chip_id", flat=True)) == {ready.pk}
    assert ChipHealth.objects.get(chip=troubled).level == "stop"

    # The healthy chip beside it: never touched.
    healthy.refresh_from_db()
    assert healthy.status == S.ACTIVE
    assert not OrchestratorOperation.objects.filter(chip=healthy).exists()
    assert not ChipHealth.objects.filter(chip=healthy).exclude(level="ok").exists()


def test_figures_past_the_stop_threshold_stop_the_chip_at_once(pool, clock):
    chip = production_chip()
    traffic(chip, sent=30, failed=10, at=NOW - timedelta(minutes=30))  # 25 %: stop
    run_cycle(now=NOW)
    chip.refresh_from_db()
    assert chip.status == S.DEGRADED
    assert "failed 25.0% of 40 sends" in ops(chip, Op.HEALTH_STOP)[0].reason
    # No ready chip to replace it: the existing critical alert says so.
    assert ChipAlert.objects.open().filter(dedup_key="pool:no_ready_chip").exists()


def test_watch_raises_a_warning_and_clears_when_the_figures_recover(pool, clock):
    chip = production_chip()
    traffic(chip, sent=38, failed=2, at=NOW - timedelta(minutes=40))  # 5 %: watch
    assert run_cycle(now=NOW).steps["early_warning"] == 1
    chip.refresh_from_db()
    assert chip.status == S.ACTIVE
    (watch,) = ops(chip, Op.HEALTH_WATCH)
    assert watch.metadata["level"] == "watch" and "failed 5.0% of 40 sends in the last hour" in watch.reason
    alert = ChipAlert.objects.open().get(dedup_key=f"early_warning:{chip.pk}")
    assert "getting into trouble" in alert.message
    assert run_cycle(now=NOW + timedelta(minutes=1)).steps["early_warning"] == 0  # no change, no work

    # Two hours later the bad hour is out of the hourly window and the day is clean enough: back to ok.
    later = NOW + timedelta(hours=2)
    clock.move_to(later)
    traffic(chip, sent=160, failed=0, at=later - timedelta(minutes=50))
    assert run_cycle(now=later).steps["early_warning"] == 1
    assert ops(chip, Op.HEALTH_CLEAR) and ChipHealth.objects.get(chip=chip).level == "ok"
    assert not ChipAlert.objects.open().filter(dedup_key=f"early_warning:{chip.pk}").exists()


def test_the_early_warning_can_be_switched_off(pool, clock, settings):
    settings.EARLY_WARNING_ENABLED = False
    chip = production_chip()
    traffic(chip, sent=30, failed=10, at=NOW - timedelta(minutes=30))
    assert run_cycle(now=NOW).steps["early_warning"] == 0
    chip.refresh_from_db()
    assert chip.status == S.ACTIVE


def test_the_chip_page_figures_levels_and_thresholds(pool, clock, api):
    chip = production_chip()
    traffic(chip, sent=34, failed=6, at=NOW - timedelta(minutes=50))
    summary = chip_health_summary(chip, now=NOW)
    assert (summary["level"], summary["assessed_level"]) == ("ok", "rest")  # not acted on yet
    assert summary["figures"]["hour"]["failed_share"] == 15.0
    assert summary["thresholds"]["failed_share"] == (5, 10, 20)
    assert summary["circuit"]["state"] == "closed" and summary["allowance"]["step"] == 1
    assert summary["next_rest_minutes"] == 60

    run_cycle(now=NOW)
    body = api.get(f"/api/v1/chips/{chip.pk}").json()
    assert body["health"]["level"] == "rest" and body["health"]["rests_recent"] == 1
    assert body["health"]["next_rest_minutes"] == 120
    # Its figures now count from the end of the rest: what put it there is not judged twice.
    assert body["health"]["figures"]["hour"]["attempted"] == 0
    assert body["health"]["figures"]["since"].startswith((NOW + timedelta(minutes=60)).isoformat()[:16])
