"""One home per lifecycle rule: for each promotion / degrade / resume rule, chips across its boundary values (trust,
days, phase, connection, time) and the transition guard and the orchestrator's cycle agree on every one of them
(and with the rule as DESIGN §2 states it)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
import time_machine

from chipfarm.models import OrchestratorOperation
from chipfarm.orchestrator import run_cycle
from chips.models import Chip, ChipTransition, WarmingPhase
from chips.services import Actor, chip_allowed_transitions, chip_transition
from common.exceptions import TransitionNotAllowed
from tests.factories import chip_in_state
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db
S = Chip.Status
NOW = BUSINESS_TIME
SECOND = timedelta(seconds=1)
THRESHOLDS = dict(warmup_days=21, trust_min_for_ready=85, trust_degraded_threshold=50,
                  disconnected_degrade_minutes=30)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def guard_allows(chip: Chip, transition: str) -> bool:
    chip.refresh_from_db()
    return transition in chip_allowed_transitions(chip=chip, now=NOW)


def make(status: str, **facts) -> Chip:
    chip = chip_in_state(status=status)
    Chip.objects.filter(pk=chip.pk).update(**facts)  # plain facts; the status only ever moved by transitions
    chip.refresh_from_db()
    return chip


def verdicts(chips: list[tuple[Chip, bool]], transition: str, target: str) -> None:
    """The guard's verdict before the cycle, the cycle's deed, and the rule as stated: all equal, per chip."""
    before = {chip.pk: guard_allows(chip, transition) for chip, _ in chips}
    report = run_cycle(now=NOW)
    assert report.ran and not report.errors, report.errors
    after = dict(Chip.objects.filter(pk__in=before).values_list("pk", "status"))
    for chip, expected in chips:
        done = after[chip.pk] == target
        assert before[chip.pk] == done == expected, (chip.pk, transition, before[chip.pk], done, expected)
    assert any(expected for _, expected in chips) and not all(expected for _, expected in chips)


def test_promote_to_ready_guard_and_cycle_agree_across_trust_days_phase_and_connection(pool_config, frozen):
    pool_config(production_min=0, production_max=100, ready_min=0, warmup_buffer=0, **THRESHOLDS)
    chips = []
    for trust, age, phase, connected in itertools.product(
        [84, 85, 86], [timedelta(days=21) - SECOND, timedelta(days=21), timedelta(days=21) + SECOND],
        [WarmingPhase.PRE_OPERATION, WarmingPhase.OPERATION], [True, False],
    ):
        chip = make(S.WARMING, trust_score=trust, warming_started_at=NOW - age, warming_phase=phase,
                    is_connected=connected, connection_changed_at=NOW - timedelta(hours=2))
        chips.append((chip, trust >= 85 and age >= timedelta(days=21) and phase == WarmingPhase.OPERATION))
    verdicts(chips, "promote_to_ready", S.READY)


def test_promote_to_active_guard_and_cycle_agree_across_trust_and_connection(pool_config, frozen):
    pool_config(production_min=100, production_max=100, ready_min=0, warmup_buffer=0, **THRESHOLDS)
    chips = []
    for trust, (connected, since) in itertools.product(
        [49, 50, 51],
        [(True, timedelta(hours=2)), (False, timedelta(minutes=5)), (False, timedelta(minutes=31))],
    ):
        chip = make(S.READY, trust_score=trust, is_connected=connected, connection_changed_at=NOW - since)
        chips.append((chip, connected and trust >= 50))
    verdicts(chips, "promote_to_active", S.ACTIVE)


def test_promote_to_active_guard_and_cycle_agree_on_production_max(pool_config, frozen):
    pool_config(production_min=3, production_max=3, ready_min=0, warmup_buffer=0, **THRESHOLDS)
    for _ in range(2):
        make(S.ACTIVE, trust_score=95)
    ready = [make(S.READY, trust_score=90 + n) for n in range(3)]
    assert all(guard_allows(chip, "promote_to_active") for chip in ready)  # room for one: each may take it
    report = run_cycle(now=NOW)
    assert report.steps["promote_active"] == 1
    assert Chip.objects.filter(status=S.ACTIVE).count() == 3
    promoted = Chip.objects.get(pk=ready[-1].pk)  # the best trust first
    assert promoted.status == S.ACTIVE
    assert not any(guard_allows(chip, "promote_to_active") for chip in ready[:-1])  # and now no room


def test_degrade_guard_and_cycle_agree_across_state_trust_and_time_disconnected(pool_config, frozen, settings):
    settings.MAX_CHIPS_ACTIVE = 200
    pool_config(production_min=0, production_max=200, ready_min=0, warmup_buffer=0, **THRESHOLDS)
    chips = []
    connections = [(True, timedelta(hours=2)), (False, timedelta(minutes=30) - SECOND),
                   (False, timedelta(minutes=30)), (False, timedelta(minutes=30) + SECOND)]
    for status, trust, (connected, since) in itertools.product(
        [S.READY, S.ACTIVE, S.COOLING, S.WARMING], [49, 50, 51], connections,
    ):
        chip = make(status, trust_score=trust, is_connected=connected, connection_changed_at=NOW - since)
        too_long = not connected and since > timedelta(minutes=30)
        chips.append((chip, status != S.WARMING and (trust < 50 or too_long)))
    verdicts(chips, "degrade", S.DEGRADED)


def test_resume_guard_and_cycle_agree_across_cooling_until(pool_config, frozen):
    pool_config(production_min=0, production_max=100, ready_min=0, warmup_buffer=0, **THRESHOLDS)
    chips = []
    for until in [NOW - SECOND, NOW, NOW + SECOND, None]:
        chip = make(S.COOLING, trust_score=90, cooling_until=until)
        chips.append((chip, until is None or until <= NOW))
    verdicts(chips, "resume", S.ACTIVE)


def test_a_cooled_chip_is_active_again_after_one_cycle_once_cooling_until_passed(pool_config, frozen):
    pool_config(production_min=0, ready_min=0, warmup_buffer=0)
    chip = chip_in_state(status=S.ACTIVE)
    chip_transition(chip=chip.pk, transition="cool_down", actor=Actor.system("router"),
                    params={"until": NOW + timedelta(minutes=10)})

    assert run_cycle(now=NOW + timedelta(minutes=9)).steps["resume"] == 0
    assert Chip.objects.get(pk=chip.pk).status == S.COOLING

    frozen.shift(timedelta(minutes=11))
    report = run_cycle()
    assert report.steps["resume"] == 1 and not report.errors
    chip.refresh_from_db()
    assert chip.status == S.ACTIVE and chip.cooling_until is None
    row = chip.transitions.first()
    assert (row.transition, row.source, row.target, row.actor_id) == ("resume", S.COOLING, S.ACTIVE, "orchestrator")
    assert "cooling over" in row.reason
    assert OrchestratorOperation.objects.filter(kind=OrchestratorOperation.Kind.RESUME, chip_id=chip.pk).exists()


def test_guards_judge_at_the_callers_now_and_default_to_the_wall_clock(frozen):
    chip = chip_in_state(status=S.COOLING)
    Chip.objects.filter(pk=chip.pk).update(cooling_until=NOW + timedelta(minutes=10))
    with pytest.raises(TransitionNotAllowed):
        chip_transition(chip=chip.pk, transition="resume", actor=Actor.system("t"))
    chip = chip_transition(chip=chip.pk, transition="resume", actor=Actor.system("t"),
                           now=NOW + timedelta(minutes=10))
    assert chip.status == S.ACTIVE
    assert ChipTransition.objects.filter(chip=chip, transition="resume").count() == 1
