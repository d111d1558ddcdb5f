"""The reserve sized by what really happens (chipfarm.forecast): from a recorded history of bans and degradations and
of lead times, the dashboard's forecast, and auto_reserve raising the targets within the budget, recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from chipfarm.dashboard import dashboard_context
from chipfarm.forecast import reserve_forecast
from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chipfarm.orchestrator import run_cycle
from chips.demo import PATHS
from chips.models import Chip
from tests.factories import chip_in_state, chip_walk
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db
NOW = BUSINESS_TIME
S = Chip.Status


def days_ago(n: float):
    return time_machine.travel(NOW - timedelta(days=n), tick=False)


@pytest.fixture
def history(pool_config, settings):
    """30 days of a pool: 6 production chips banned and 2 degraded, and a chip bought 28 days ago that became ready
    5 days ago (1 day to activate, 22 warming). Today: 5 active, that 1 ready."""
    settings.MAX_CHIPS_ACTIVE = 100
    config = pool_config(production_min=5, production_max=100, ready_min=2, warmup_buffer=4, auto_provision=False)
    for n in (25, 20, 15, 10, 5, 2):
        with days_ago(n):
            chip_in_state(status=S.BANNED)  # banned while warming: not a production loss
            lost = chip_in_state(status=S.ACTIVE)
            chip_walk(chip=lost, transitions=["ban"])
    for n in (3, 1):
        with days_ago(n):
            chip_in_state(status=S.DEGRADED)
    with days_ago(28):
        bought = Chip.objects.create(area_code="11")
        chip_walk(chip=bought, transitions=["provisioned", "start_activation"])
    with days_ago(27):
        chip_walk(chip=bought, transitions=["activation_succeeded"])
    with days_ago(5):
        chip_walk(chip=bought, transitions=["promote_to_ready"])
    with time_machine.travel(NOW - timedelta(hours=1), tick=False):
        for _ in range(5):
            chip_in_state(status=S.ACTIVE)
    assert PATHS[S.ACTIVE][-1] == "promote_to_active"
    # The factory walks a chip from purchase to production in an instant: only `bought` has a real lead time, so the
    # others are numbers the company owns (no purchase to measure).
    Chip.objects.exclude(pk=bought.pk).update(source=Chip.Source.OWN)
    return config


def test_with_a_history_of_bans_the_dashboard_shows_the_computed_reserve(history):
    with time_machine.travel(NOW, tick=False):
        forecast = reserve_forecast(now=NOW)
        section = dashboard_context(now=NOW)["forecast"]
    assert section["summary"] == forecast.message
    assert {"label": "Keep ready", "value": "4 (now 1)"} in section["rows"]
    assert (forecast.bans, forecast.degradations, forecast.worst_week) == (6, 2, 4)
    assert forecast.losses_per_week == pytest.approx(8 / 30 * 7, abs=0.01)
    assert (forecast.activation_days, forecast.warming_days, forecast.lead_days) == (1.0, 22.0, 23.0)
    assert (forecast.active, forecast.ready, forecast.production_min) == (5, 1, 5)
    # (5 - 5 + 1) / (8/30 a day) = 3.75 days; keep the worst week (4) ready and ceil(8/30 × 23) = 7 warming.
    assert (forecast.runs_short_in_days, forecast.keep_ready, forecast.keep_warming) == (3, 4, 7)
    assert forecast.message == "At this rate (1.9 lost a week) production runs short in 3 days; keep 4 ready and " \
                               "7 warming."
    # Within the default budget (12): ready 2 → 4, warming 4 → 7 would be suggested.
    assert (forecast.suggested_ready_min, forecast.suggested_warmup_buffer) == (4, 7)


def test_auto_reserve_raises_the_targets_within_the_budget_and_records_it(history):
    PoolConfiguration.objects.update(auto_reserve=True, reserve_budget=9)
    with time_machine.travel(NOW, tick=False):
        report = run_cycle(now=NOW)
        assert report.steps["reserve"] == 1 and not report.errors
        config = PoolConfiguration.load()
        assert (config.ready_min, config.warmup_buffer) == (4, 5)  # ready first, then what the budget leaves
        (op,) = OrchestratorOperation.objects.filter(kind=OrchestratorOperation.Kind.RESERVE_TARGETS)
        assert op.metadata["before"] == {"ready_min": 2, "warmup_buffer": 4}
        assert op.metadata["after"] == {"ready_min": 4, "warmup_buffer": 5}
        assert op.metadata["forecast"]["keep_warming"] == 7 and "ready_min 2 → 4" in op.reason
        assert "budget (9)" in reserve_forecast(now=NOW).message
        # At the budget: nothing more, and nothing recorded again.
        assert run_cycle(now=NOW + timedelta(minutes=1)).steps["reserve"] == 0
    assert OrchestratorOperation.objects.filter(kind=OrchestratorOperation.Kind.RESERVE_TARGETS).count() == 1


def test_auto_reserve_never_lowers_targets_and_is_off_by_default(history):
    with time_machine.travel(NOW, tick=False):
        assert run_cycle(now=NOW).steps["reserve"] == 0  # off
        PoolConfiguration.objects.update(auto_reserve=True, ready_min=6, warmup_buffer=9)
        assert run_cycle(now=NOW + timedelta(minutes=1)).steps["reserve"] == 0
    config = PoolConfiguration.load()
    assert (config.ready_min, config.warmup_buffer) == (6, 9)


def test_without_losses_the_forecast_says_the_targets_stand(pool_config):
    pool_config()
    forecast = reserve_forecast(now=NOW)
    assert forecast.runs_short_in_days is None and (forecast.keep_ready, forecast.keep_warming) == (0, 0)
    assert forecast.lead_samples == 0 and forecast.warming_days == 21.0  # the configured warm-up days
    assert "the reserve targets stand" in forecast.message
