"""The growing new-contact allowance: part of the one caps rule (Python and SQL agree at every step), climbed by the
cycle after clean days in production, dropped by a restriction or a rest, restarted when a chip enters production
again; the step and its reason are visible."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine

from chipfarm.models import OrchestratorOperation
from chipfarm.orchestrator import run_cycle
from chips.models import Chip
from chips.services import Actor, chip_transition
from instances.caps import caps_annotations, caps_in_effect
from instances.models import ChipCapacity, DeliveryEvent
from instances.restriction import chip_restrict
from instances.services import send_success_observed
from tests.factories import chip_in_state
from tests.instances.conftest import BUSINESS_TIME, production_chip

pytestmark = pytest.mark.django_db
NOW = BUSINESS_TIME
S = Chip.Status


@pytest.fixture
def pool(pool_config, settings):
    settings.MAX_CHIPS_ACTIVE = 100
    return pool_config(production_min=0, production_max=100, ready_min=0, warmup_buffer=0, auto_provision=False)


def clean_day(chip: Chip, *, until=NOW, sends: int = 30) -> None:
    """Sends in the three hours before `until`, each delivered and a reply to each."""
    for i in range(sends):
        at = until - timedelta(hours=3, seconds=i)
        key = f"C{chip.pk}-{at:%d%H}-{i}"
        send_success_observed(chip_id=chip.pk, message_id=key, now=at)
        DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.DELIVERED, message_id=key,
                                     occurred_at=at + timedelta(seconds=20))
        DeliveryEvent.objects.create(chip=chip, kind=DeliveryEvent.Kind.INBOUND, occurred_at=at + timedelta(minutes=1))


def test_the_ladder_is_one_rule_in_python_and_sql(settings):
    settings.MAX_CHIPS_ACTIVE = 100
    steps = {None: 20, 0: 20, 1: 40, 2: 80, 7: 80}
    chips = {}
    for step in steps:
        chip = chip_in_state(status=S.ACTIVE)
        if step is not None:
            ChipCapacity.objects.create(chip=chip, allowance_step=step)
        chips[chip.pk] = step
    overridden = chip_in_state(status=S.COOLING)
    ChipCapacity.objects.create(chip=overridden, allowance_step=2, max_new_contacts_per_day=7)
    warming = chip_in_state(status=S.WARMING)
    ChipCapacity.objects.create(chip=warming, allowance_step=2)  # a warming chip follows its phase, not the ladder
    sql = dict(Chip.objects.annotate(**caps_annotations()).values_list("pk", "cap_new_contacts_per_day"))
    for chip in Chip.objects.select_related("capacity"):
        capacity = ChipCapacity.objects.filter(chip=chip).first()
        assert sql[chip.pk] == caps_in_effect(chip, capacity).new_contacts_per_day, chip.pk
        if chip.pk in chips:
            assert sql[chip.pk] == steps[chips[chip.pk]]
    assert sql[overridden.pk] == 7


def test_an_empty_ladder_is_the_flat_setting(settings):
    settings.NEW_CONTACT_ALLOWANCE_STEPS = []
    chip = chip_in_state(status=S.ACTIVE)
    assert caps_in_effect(chip).new_contacts_per_day == settings.MAX_NEW_CONTACTS_PER_DAY == 40


def test_the_cycle_climbs_a_step_after_clean_days_in_production_and_shows_why(pool, api):
    with time_machine.travel(NOW - timedelta(days=8), tick=False):
        clean, quiet = production_chip(), production_chip()
    with time_machine.travel(NOW - timedelta(days=2), tick=False):
        young = production_chip()
    with time_machine.travel(NOW, tick=False) as clock:
        clean_day(clean)
        clean_day(young)
        report = run_cycle(now=NOW)
        assert report.steps["allowance"] == 1 and not report.errors
        capacity = ChipCapacity.objects.get(chip=clean)
        assert capacity.allowance_step == 1 and "7 clean days" in capacity.allowance_reason
        assert caps_in_effect(clean, capacity).new_contacts_per_day == 40
        (op,) = OrchestratorOperation.objects.filter(kind="allowance_step", chip=clean)
        assert (op.metadata["step"], op.metadata["allowance"]) == (2, 40)
        body = api.get(f"/api/v1/chips/{clean.pk}").json()
        assert body["capacity"]["new_contacts_step"] == 2 and body["capacity"]["new_contacts_per_day"] == 40
        assert "7 clean days" in body["capacity"]["new_contacts_reason"]
        # No evidence of delivery (quiet), or too young: they wait. And the climbed chip waits 7 days more.
        assert ChipCapacity.objects.get(chip=quiet).allowance_step == 0
        assert ChipCapacity.objects.get(chip=young).allowance_step == 0
        assert run_cycle(now=NOW + timedelta(minutes=1)).steps["allowance"] == 0
        week = NOW + timedelta(days=7, hours=1)
        clock.move_to(week)
        clean_day(clean, until=week)
        run_cycle(now=week)
        assert ChipCapacity.objects.get(chip=clean).allowance_step == 2


def test_a_restriction_takes_a_step_down_and_says_so(pool):
    with time_machine.travel(NOW, tick=False):
        chip = production_chip()
        ChipCapacity.objects.filter(chip=chip).update(allowance_step=2)
        assert chip_restrict(chip=chip, now=NOW, evidence=[("5511900000001", NOW)], coded=True)
    capacity = ChipCapacity.objects.get(chip=chip)
    assert capacity.allowance_step == 1 and "reach-out restriction" in capacity.allowance_reason
    assert caps_in_effect(chip, capacity).new_contacts_per_day == 40


def test_a_chip_that_enters_production_again_starts_from_the_first_step(pool):
    with time_machine.travel(NOW - timedelta(days=30), tick=False):
        chip = production_chip()
        ChipCapacity.objects.filter(chip=chip).update(allowance_step=2, allowance_changed_at=NOW - timedelta(days=30))
    with time_machine.travel(NOW, tick=False):
        chip_transition(chip=chip.pk, transition="ban", actor=Actor.system("t"))  # not production: left alone
        assert run_cycle(now=NOW).steps["allowance"] == 0
        again = production_chip()
        ChipCapacity.objects.filter(chip=again).update(allowance_step=2,
                                                       allowance_changed_at=NOW - timedelta(days=30))
        Chip.objects.filter(pk=again.pk).update(active_at=NOW - timedelta(hours=1))
        assert run_cycle(now=NOW).steps["allowance"] == 1
    capacity = ChipCapacity.objects.get(chip=again)
    assert capacity.allowance_step == 0 and capacity.allowance_reason == "entered production"
