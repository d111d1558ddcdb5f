"""Every transition of DESIGN §2: its allowed path, a forbidden source, and its guard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from chips.models import Chip, ChipTransition, WarmingPhase
from chips.services import Actor, chip_transition
from common.exceptions import InvalidInput, NotFound, TransitionNotAllowed
from tests.factories import chip_in_state, chip_walk

pytestmark = pytest.mark.django_db
S = Chip.Status
ACTOR = Actor.system("test")

# transition, a source it is allowed from, where it leads, facts its guard needs
ALLOWED = [
    ("provisioned", S.PROVISIONING, S.PENDING),
    ("start_activation", S.PENDING, S.ACTIVATING),
    ("activation_succeeded", S.ACTIVATING, S.WARMING),
    ("activation_failed", S.ACTIVATING, S.PENDING),
    ("promote_to_ready", S.WARMING, S.READY),
    ("promote_to_active", S.READY, S.ACTIVE),
    ("cool_down", S.ACTIVE, S.COOLING),
    ("resume", S.COOLING, S.ACTIVE),
    ("degrade", S.READY, S.DEGRADED),
    ("degrade", S.ACTIVE, S.DEGRADED),
    ("degrade", S.COOLING, S.DEGRADED),
    ("rewarm", S.DEGRADED, S.WARMING),
    *[("ban", s, S.BANNED) for s in Chip.LIVE_STATES],
    *[("retire", s, S.RETIRED) for s in S if s != S.RETIRED],
]

# transition, a source it must refuse
FORBIDDEN = [
    ("provisioned", S.PENDING),
    ("start_activation", S.WARMING),
    ("activation_succeeded", S.PENDING),
    ("activation_failed", S.WARMING),
    ("promote_to_ready", S.ACTIVE),
    ("promote_to_active", S.WARMING),
    ("cool_down", S.READY),
    ("resume", S.ACTIVE),
    ("degrade", S.WARMING),
    ("rewarm", S.ACTIVE),
    ("ban", S.PROVISIONING),
    ("ban", S.BANNED),
    ("retire", S.RETIRED),
]


def _prepare_guard(chip: Chip, transition: str) -> None:
    if transition == "provisioned":
        chip.phone, chip.provider_line_id, chip.instance_name = "+5511990000001", "line-1", "inst-1"
    elif transition == "promote_to_ready":
        chip.set_trust(90)
        chip.warming_phase = WarmingPhase.final()
        chip.warming_started_at = timezone.now() - timedelta(days=30)
    elif transition == "resume":
        chip.cooling_until = timezone.now() - timedelta(minutes=1)
    elif transition == "degrade":
        chip.set_trust(10)
    elif transition == "rewarm":
        chip.is_connected = True
    chip.save()


@pytest.mark.parametrize(("transition", "source", "target"), ALLOWED)
def test_allowed_path_moves_and_records_history(transition, source, target):
    chip = chip_in_state(status=source)
    _prepare_guard(chip, transition)
    before = chip.transitions.count()

    chip = chip_transition(chip=chip.pk, transition=transition, actor=Actor("user", "ana"),
                           reason="because")

    chip.refresh_from_db()
    assert chip.status == target
    assert chip.transitions.count() == before + 1
    row = chip.transitions.first()
    assert (row.source, row.target, row.transition) == (source, target, transition)
    assert (row.reason, row.actor_kind, row.actor_id) == ("because", "user", "ana")


@pytest.mark.parametrize(("transition", "source"), FORBIDDEN)
def test_forbidden_source_is_refused_and_changes_nothing(transition, source):
    chip = chip_in_state(status=source)
    if transition != "provisioned":
        _prepare_guard(chip, transition)
    history = chip.transitions.count()

    with pytest.raises(TransitionNotAllowed) as exc:
        chip_transition(chip=chip.pk, transition=transition, actor=ACTOR)

    assert exc.value.extra["state"] == source
    assert transition not in exc.value.extra["allowed"]
    assert f"The chip is {Chip.Status(source).label};" in exc.value.message
    chip.refresh_from_db()
    assert chip.status == source
    assert chip.transitions.count() == history


def test_the_status_cannot_be_assigned_directly():
    chip = chip_in_state(status=S.WARMING)
    with pytest.raises(AttributeError):
        chip.status = S.ACTIVE


def test_provisioned_needs_line_phone_and_instance():
    chip = Chip.objects.create(area_code="11")
    with pytest.raises(TransitionNotAllowed, match="needs a number, a line and a WhatsApp session"):
        chip_transition(chip=chip.pk, transition="provisioned", actor=ACTOR)


@pytest.mark.parametrize(
    ("trust", "days", "phase"),
    [(84, 30, WarmingPhase.OPERATION), (95, 20, WarmingPhase.OPERATION), (95, 30, WarmingPhase.PRE_OPERATION)],
)
def test_promote_to_ready_guard_needs_trust_days_and_final_phase(trust, days, phase):
    chip = chip_in_state(status=S.WARMING)
    chip.set_trust(trust)
    chip.warming_phase = phase
    chip.warming_started_at = timezone.now() - timedelta(days=days, hours=1)
    chip.save()
    with pytest.raises(TransitionNotAllowed):
        chip_transition(chip=chip.pk, transition="promote_to_ready", actor=ACTOR)


def test_promote_to_active_stops_at_production_max(settings):
    settings.MAX_CHIPS_ACTIVE = 2
    chip_in_state(status=S.ACTIVE)
    chip_in_state(status=S.ACTIVE)
    ready = chip_in_state(status=S.READY)
    with pytest.raises(TransitionNotAllowed):
        chip_transition(chip=ready.pk, transition="promote_to_active", actor=ACTOR)
    assert Chip.objects.filter(status=S.ACTIVE).count() == 2


def test_degrade_guard_trusted_connected_chip_is_refused():
    chip = chip_in_state(status=S.ACTIVE, trust=90, is_connected=True, connection_changed_at=timezone.now())
    with pytest.raises(TransitionNotAllowed):
        chip_transition(chip=chip.pk, transition="degrade", actor=ACTOR)


def test_degrade_allowed_when_disconnected_over_30_minutes():
    chip = chip_in_state(status=S.ACTIVE, trust=90, is_connected=False,
                         connection_changed_at=timezone.now() - timedelta(minutes=31))
    chip_transition(chip=chip.pk, transition="degrade", actor=ACTOR)
    chip.refresh_from_db()
    assert chip.status == S.DEGRADED and chip.degraded_at is not None


def test_rewarm_needs_a_connection_and_restarts_at_an_earlier_phase():
    chip = chip_in_state(status=S.DEGRADED, is_connected=False)
    with pytest.raises(TransitionNotAllowed):
        chip_transition(chip=chip.pk, transition="rewarm", actor=ACTOR)
    chip.is_connected = True
    chip.save()
    chip = chip_transition(chip=chip.pk, transition="rewarm", actor=ACTOR)
    assert chip.warming_phase == WarmingPhase.FIRST_CONTACTS


def test_resume_waits_for_cooling_until():
    chip = chip_in_state(status=S.COOLING, cooling_until=timezone.now() + timedelta(minutes=10))
    with pytest.raises(TransitionNotAllowed):
        chip_transition(chip=chip.pk, transition="resume", actor=ACTOR)


def test_activation_failed_counts_the_attempt_and_succeeded_starts_warming():
    chip = chip_in_state(status=S.ACTIVATING)
    chip = chip_transition(chip=chip.pk, transition="activation_failed", actor=ACTOR)
    assert chip.activation_attempts == 1
    chip = chip_walk(chip=chip, transitions=["start_activation", "activation_succeeded"])
    assert chip.warming_phase == WarmingPhase.REST
    assert chip.warming_started_at is not None and chip.is_connected


def test_operator_only_refuses_system_transitions():
    chip = chip_in_state(status=S.PENDING)
    with pytest.raises(TransitionNotAllowed, match="system"):
        chip_transition(chip=chip.pk, transition="start_activation", actor=ACTOR, operator_only=True)
    assert Chip.objects.get(pk=chip.pk).status == S.PENDING


def test_unknown_transition_and_unknown_chip():
    with pytest.raises(InvalidInput):
        chip_transition(chip=1, transition="fly", actor=ACTOR)
    with pytest.raises(NotFound):
        chip_transition(chip=999_999, transition="retire", actor=ACTOR)


def test_phone_is_unique_among_chips_that_are_not_retired():
    from django.db import IntegrityError, transaction

    first = chip_in_state(status=S.PENDING)
    other = Chip.objects.create(area_code="11")
    other.phone = first.phone
    with pytest.raises(IntegrityError), transaction.atomic():
        other.save()
    chip_transition(chip=first.pk, transition="retire", actor=ACTOR)
    other.save()  # the number is free again once its chip is retired
    assert ChipTransition.objects.filter(chip=first, transition="retire").exists()
