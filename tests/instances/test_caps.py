"""Caps in effect (instances.caps): one status-aware rule for the reservation, the candidate query, the admin and
the API. A warming chip's caps are its phase's plan (never written into its capacity row); a production chip's
are the operator's override or the settings; a promotion changes them by itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chips.models import Chip, WarmingPhase
from chips.services import Actor, chip_transition
from instances.caps import NO_CAPS, Caps, caps_annotations, caps_in_effect, production_defaults
from instances.models import ChipCapacity, ContactBinding
from instances.routing import RoutingRefused, capacity_reserve, contact_route
from instances.services import instance_register
from tests.factories import chip_in_state
from tests.instances.conftest import BUSINESS_TIME
from warmer.models import PhasePlan, WarmingAction
from warmer.services import phase_plans, warming_plan_day

pytestmark = pytest.mark.django_db
S = Chip.Status
ACTOR = Actor.system("test")
# The walk starts on a Monday three weeks and a day before BUSINESS_TIME (a Tuesday, 10:00 in São Paulo).
WALK_START = BUSINESS_TIME - timedelta(days=22)


def contact(n: int) -> str:
    return f"+55219{n:08d}"


def plan_caps(phase: str) -> Caps:
    plan = next(p for p in phase_plans() if p.phase == phase)
    return Caps(per_hour=plan.messages_per_hour, per_day=plan.messages_per_day,
                new_contacts_per_day=plan.new_peers_per_day)


def overrides(chip: Chip) -> tuple:
    return tuple(ChipCapacity.objects.filter(chip=chip)
                 .values_list("max_per_hour", "max_per_day", "max_new_contacts_per_day").first() or ())


def test_a_chip_warmed_through_every_phase_and_promoted_routes_up_to_the_production_hourly_cap(settings):
    settings.MAX_CHIPS_ACTIVE = 10
    assert settings.MAX_MSGS_PER_HOUR == 20  # the default the issue names
    # The whole hourly cap for follow-ups here (their default share is half of it: tests/instances/test_kinds.py).
    settings.KIND_HOURLY_SHARE = {**settings.KIND_HOURLY_SHARE, "follow_up": 100}
    with time_machine.travel(WALK_START, tick=False) as clock:
        chip = chip_in_state(status=S.WARMING)
        peer = chip_in_state(status=S.WARMING)
        instance_register(chip=chip)
        seen: set[str] = set()
        for day in range(22):
            today = WALK_START + timedelta(days=day)
            # a trusted chip that talks every day (no idle restart): the planner moves it along its ramp
            Chip.objects.filter(pk=chip.pk).update(trust_score=95)
            WarmingAction.objects.create(chip=chip, peer=peer, kind="initiate", text=f"Oi {day}",
                                         day=today.date(), due_at=today, status="sent", done_at=today)
            warming_plan_day()
            chip.refresh_from_db()
            seen.add(chip.warming_phase)
            assert caps_in_effect(chip, ChipCapacity.objects.filter(chip=chip).first()) == plan_caps(
                chip.warming_phase)
            assert overrides(chip) in ((), (None, None, None))  # the planner wrote no caps
            clock.shift(timedelta(days=1))
        assert seen == set(WarmingPhase.values)

        chip_transition(chip=chip.pk, transition="promote_to_ready", actor=ACTOR)
        chip = chip_transition(chip=chip.pk, transition="promote_to_active", actor=ACTOR)
    assert caps_in_effect(chip) == production_defaults()

    with time_machine.travel(BUSINESS_TIME, tick=False):
        decisions = [contact_route(contact=contact(n)) for n in range(20)]
        assert {d.chip_id for d in decisions} == {chip.pk}
        with pytest.raises(RoutingRefused) as refused:
            contact_route(contact=contact(20))
    assert refused.value.code == "no_capacity"
    assert ChipCapacity.objects.get(chip=chip).hour_count == 20


def test_a_chip_planned_in_its_first_phase_and_promoted_gets_the_production_caps(settings):
    settings.MAX_CHIPS_ACTIVE = 10
    with time_machine.travel(BUSINESS_TIME - timedelta(hours=3), tick=False):
        chip = chip_in_state(status=S.WARMING)
        warming_plan_day()
        assert caps_in_effect(chip) == plan_caps(WarmingPhase.REST)  # 1 / h, 6 / day
        Chip.objects.filter(pk=chip.pk).update(trust_score=95, warming_phase=WarmingPhase.final(),
                                               warming_started_at=BUSINESS_TIME - timedelta(days=30))
        chip_transition(chip=chip.pk, transition="promote_to_ready", actor=ACTOR)
        chip = chip_transition(chip=chip.pk, transition="promote_to_active", actor=ACTOR)
    # 20 new contacts: the first step of the growing allowance (NEW_CONTACT_ALLOWANCE_STEPS)
    assert caps_in_effect(chip, ChipCapacity.objects.filter(chip=chip).first()) == Caps(20, 100, 20)


def test_an_operator_override_survives_a_planner_run_and_applies_once_in_production():
    with time_machine.travel(BUSINESS_TIME - timedelta(hours=3), tick=False):
        chip = chip_in_state(status=S.WARMING)
        capacity = ChipCapacity.objects.create(chip=chip, max_per_hour=7, max_per_day=30)
        warming_plan_day()
        capacity.refresh_from_db()
        assert (capacity.max_per_hour, capacity.max_per_day, capacity.max_new_contacts_per_day) == (7, 30, None)
        chip.refresh_from_db()
        assert caps_in_effect(chip, capacity) == plan_caps(chip.warming_phase)  # not in production yet
        chip = chip_in_state(status=S.ACTIVE)
        ChipCapacity.objects.create(chip=chip, max_per_hour=7, max_per_day=30)
    assert caps_in_effect(chip, ChipCapacity.objects.get(chip=chip)) == Caps(7, 30, 20)


def test_a_warming_chips_caps_follow_its_phase_and_the_reservation_holds_them_without_writing_caps():
    with time_machine.travel(BUSINESS_TIME, tick=False):
        chip = chip_in_state(status=S.WARMING)
        for plan in phase_plans():
            Chip.objects.filter(pk=chip.pk).update(warming_phase=plan.phase)
            chip.refresh_from_db()
            assert caps_in_effect(chip) == plan_caps(plan.phase)
        Chip.objects.filter(pk=chip.pk).update(warming_phase=WarmingPhase.REST)
        # the rest phase allows one message an hour: the reservation (the warmer's path) holds it
        assert capacity_reserve(chip_id=chip.pk) is True
        assert capacity_reserve(chip_id=chip.pk) is False
        # the phase plan is read when asked: an operator's change to it applies at once
        PhasePlan.objects.filter(phase=WarmingPhase.REST).update(messages_per_day=60)
        assert capacity_reserve(chip_id=chip.pk) is True
    assert overrides(chip) == (None, None, None)


def test_the_sql_rule_and_the_python_rule_agree_for_every_status_phase_and_override(settings):
    settings.MAX_CHIPS_ACTIVE = 100
    chips = [chip_in_state(status=status) for status in S]
    for phase in WarmingPhase.values:
        chips.append(chip_in_state(status=S.WARMING, warming_phase=phase))
    for n, chip in enumerate(chips):
        if n % 3 == 0:
            ChipCapacity.objects.create(chip=chip, max_per_hour=3 + n, max_per_day=None, max_new_contacts_per_day=n)
        elif n % 3 == 1:
            ChipCapacity.objects.create(chip=chip)
    rows = Chip.objects.filter(pk__in=[c.pk for c in chips]).select_related("capacity").annotate(
        **caps_annotations())
    checked = 0
    for row in rows:
        python = caps_in_effect(row, getattr(row, "capacity", None))
        assert (row.cap_per_hour, row.cap_per_day, row.cap_new_contacts_per_day) == (
            python.per_hour, python.per_day, python.new_contacts_per_day), (row.status, row.warming_phase)
        checked += 1
    assert checked == len(chips)
    assert caps_in_effect(chip_in_state(status=S.DEGRADED)) == NO_CAPS


def test_binding_ttl_days_setting_makes_bindings_expire_after_that_many_days(settings, make_production_chip):
    settings.BINDING_TTL_DAYS = 7
    with time_machine.travel(BUSINESS_TIME, tick=False):
        make_production_chip(per_hour=50)
        first = contact_route(contact=contact(1))
    binding = ContactBinding.objects.get(pk=first.binding_id)
    assert binding.expires_at == BUSINESS_TIME + timedelta(days=7)
    with time_machine.travel(BUSINESS_TIME + timedelta(days=6), tick=False):
        assert contact_route(contact=contact(1)).binding == "sticky"  # and the TTL runs again from here
    with time_machine.travel(BUSINESS_TIME + timedelta(days=6 + 7), tick=False):
        again = contact_route(contact=contact(1))
    assert again.binding == "moved"
    assert ContactBinding.objects.get(pk=again.binding_id).move_reason == "binding expired"


def test_the_chip_api_shows_the_caps_in_effect_and_they_change_with_promotion(api, settings):
    settings.MAX_CHIPS_ACTIVE = 10
    chip = chip_in_state(status=S.READY)
    body = api.get(f"/api/v1/chips/{chip.pk}").json()
    final = plan_caps(WarmingPhase.final())
    assert (body["capacity"]["per_hour"], body["capacity"]["per_day"]) == (final.per_hour, final.per_day)
    chip_transition(chip=chip.pk, transition="promote_to_active", actor=ACTOR)
    body = api.get(f"/api/v1/chips/{chip.pk}").json()
    assert body["capacity"] == {
        "per_hour": 20, "per_day": 100, "new_contacts_per_day": 20, "used_this_hour": 0, "used_today": 0,
        "restricted_until": None,
        "kinds": {"prospecting": {"per_hour": 5, "used_this_hour": 0, "min_trust": 80},
                  "follow_up": {"per_hour": 10, "used_this_hour": 0, "min_trust": 60},
                  "reply": {"per_hour": 20, "used_this_hour": 0, "min_trust": 40}},
        "new_contacts_step": 1, "new_contacts_steps": [20, 40, 80], "new_contacts_reason": "entered production"}


def test_the_capacity_admin_shows_usage_against_the_caps_in_effect(admin_client, settings):
    settings.MAX_CHIPS_ACTIVE = 10
    warming = chip_in_state(status=S.WARMING)
    active = chip_in_state(status=S.ACTIVE)
    ChipCapacity.objects.create(chip=warming, max_per_hour=9)
    ChipCapacity.objects.create(chip=active, max_per_hour=9)
    page = admin_client.get(reverse("admin:instances_chipcapacity_changelist")).content.decode()
    rest = plan_caps(WarmingPhase.REST)
    assert f"0 / {rest.per_hour}" in page and f"0 / {rest.per_day}" in page  # the warming chip: its phase
    assert "0 / 9" in page and "0 / 100" in page  # the active chip: its override, the default day cap
    page = admin_client.get(reverse("admin:chips_chip_change", args=[active.pk])).content.decode()
    assert '<td class="usage-figure">0 / 9</td>' in page and '<td class="usage-figure">0 / 100</td>' in page


def test_the_capacity_changelist_query_count_does_not_grow_with_chips(admin_client, settings):
    settings.MAX_CHIPS_ACTIVE = 100
    url = reverse("admin:instances_chipcapacity_changelist")

    def add(n: int) -> None:
        for i in range(n):
            ChipCapacity.objects.create(chip=chip_in_state(status=(S.ACTIVE, S.WARMING, S.READY)[i % 3]))

    def count_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(url).status_code == 200
        return len(ctx.captured_queries)

    add(3)
    few = count_queries()
    add(12)
    assert count_queries() == few


def test_every_binding_takes_the_policy_rows_ttl_which_the_setting_only_seeds(settings, make_production_chip):
    from instances.inbound import _relation
    from instances.models import RoutingPolicy

    settings.BINDING_TTL_DAYS = 7
    with time_machine.travel(BUSINESS_TIME, tick=False):
        chip = make_production_chip(per_hour=50)
        assert RoutingPolicy.load().binding_ttl_days == 7  # a new policy row starts from the setting
        RoutingPolicy.objects.filter(pk=1).update(binding_ttl_days=3)  # then the operator's value holds
        settings.BINDING_TTL_DAYS = 30
        routed = contact_route(contact=contact(2))
        _relation(contact(3), chip, BUSINESS_TIME)  # a contact who wrote first
    assert ContactBinding.objects.get(pk=routed.binding_id).expires_at == BUSINESS_TIME + timedelta(days=3)
    assert ContactBinding.objects.get(contact=contact(3)).expires_at == BUSINESS_TIME + timedelta(days=3)


def test_the_sql_and_python_new_contact_counts_agree_on_any_buckets(make_production_chip):
    """…and the pick's room for a new contact agrees with them: the all-bucket total it tries first
    (`new_contact_total`) is never below the rolling count, so a stale bucket never blocks a chip nor lets it
    pass its cap."""
    import random

    from instances.caps import epoch_hour, new_contacts_annotation, new_contacts_used
    from instances.models import NEW_CONTACT_BUCKETS
    from instances.reservations import room

    rng = random.Random(7)
    chip = make_production_chip()
    capacity = ChipCapacity.objects.get(chip=chip)
    for trial in range(40):
        now = BUSINESS_TIME + timedelta(hours=rng.randrange(0, 200), minutes=rng.randrange(60))
        hour = epoch_hour(now)
        # Buckets written at any hour up to 60 before now (some in the window, some stale), or never.
        capacity.new_contact_hours = [rng.choice([0, hour - rng.randrange(0, 60)]) for _ in range(NEW_CONTACT_BUCKETS)]
        capacity.new_contact_counts = [rng.randrange(0, 9) for _ in range(NEW_CONTACT_BUCKETS)]
        used = new_contacts_used(capacity, now)
        capacity.max_new_contacts_per_day = used + rng.choice([0, 1, 2])  # at the cap, or under it
        capacity.save(update_fields=["new_contact_hours", "new_contact_counts", "max_new_contacts_per_day"])
        in_sql = (ChipCapacity.objects.filter(pk=capacity.pk).annotate(n=new_contacts_annotation(now))
                  .values_list("n", flat=True).get())
        assert in_sql == used, trial
        capacity.refresh_from_db(fields=["new_contact_total"])
        assert capacity.new_contact_total == sum(capacity.new_contact_counts) >= used, trial
        has_room = room(now, new_contact=True).filter(pk=capacity.pk).exists()
        assert has_room == (used < capacity.max_new_contacts_per_day), trial


def test_a_new_contacts_reservation_keeps_the_total_of_the_buckets(make_production_chip):
    """The all-bucket total is written by the reservation itself (no trigger, no generated column): whatever the
    buckets held, and whichever bucket the hour reuses, it is their sum after every new contact."""
    import random

    from instances.caps import epoch_hour
    from instances.models import NEW_CONTACT_BUCKETS
    from instances.reservations import capacity_take_on

    rng = random.Random(11)
    chip = make_production_chip()
    capacity = ChipCapacity.objects.get(chip=chip)
    capacity.max_per_hour = capacity.max_per_day = capacity.max_new_contacts_per_day = 10**6
    start = epoch_hour(BUSINESS_TIME)
    capacity.new_contact_hours = [rng.choice([0, start - rng.randrange(0, 60)]) for _ in range(NEW_CONTACT_BUCKETS)]
    capacity.new_contact_counts = [rng.randrange(0, 9) for _ in range(NEW_CONTACT_BUCKETS)]
    capacity.save()
    taken = 0
    for step in range(60):  # an hour at a time, sometimes skipping some: buckets of this round and stale ones
        now = BUSINESS_TIME + timedelta(hours=step + rng.choice([0, 0, 3]), minutes=rng.randrange(60))
        for _ in range(rng.randrange(1, 4)):
            taken += len(capacity_take_on(chip.pk, now, new_contact=True, statuses=None, connected=False))
        capacity.refresh_from_db()
        assert capacity.new_contact_total == sum(max(n, 0) for n in capacity.new_contact_counts), step
    assert taken > 60


def test_an_operators_edit_of_a_capacity_keeps_the_reservations_made_meanwhile(admin_client, admin_user, rf,
                                                                                settings):
    """The admin writes only the fields the operator changed: a reservation made between the page's read of the
    row and its save is not written back over."""
    from django.contrib import admin as django_admin
    from django.forms.models import model_to_dict

    settings.MAX_CHIPS_ACTIVE = 10
    capacity = ChipCapacity.objects.create(chip=chip_in_state(status=S.ACTIVE), max_per_hour=9)
    model_admin = django_admin.site._registry[ChipCapacity]
    request = rf.post("/")
    request.user = admin_user
    stale = ChipCapacity.objects.get(pk=capacity.pk)  # the row as the form read it…
    ChipCapacity.objects.filter(pk=capacity.pk).update(hour_count=5, day_count=5)  # …and a reservation since
    form_class = model_admin.get_form(request, stale, change=True)
    data = {k: ("" if v is None else v) for k, v in model_to_dict(stale, fields=form_class.base_fields).items()}
    form = form_class(data={**data, "max_per_hour": 12}, instance=stale)
    assert form.is_valid(), form.errors
    model_admin.save_model(request, form.save(commit=False), form, change=True)
    capacity.refresh_from_db()
    assert (capacity.max_per_hour, capacity.hour_count, capacity.day_count) == (12, 5, 5)

    # Through the admin itself: the change is saved.
    url = reverse("admin:instances_chipcapacity_change", args=[capacity.pk])
    other = chip_in_state(status=S.ACTIVE)
    response = admin_client.post(url, {**data, "max_per_hour": 15, "chip": other.pk})  # the chip is not editable
    assert response.status_code == 302, response.content[:500]
    capacity.refresh_from_db()
    assert (capacity.max_per_hour, capacity.hour_count) == (15, 5)
    assert not ChipCapacity.objects.filter(chip=other).exists()
