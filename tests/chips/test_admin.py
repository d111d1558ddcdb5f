"""The chips admin through admin_client: buttons, bulk actions, alerts, groups, query counts."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chips.models import Chip, ChipAlert
from chips.services import alert_raise
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
S = Chip.Status
CHANGELIST = reverse("admin:chips_chip_changelist")
HIDDEN_INPUT = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"[^>]*>')


def press_button(client, chip: Chip, transition: str):
    """Post the change form as a browser does when the transition button is pressed: with the hidden
    inline management fields of the page."""
    url = reverse("admin:chips_chip_change", args=[chip.pk])
    page = client.get(url).content.decode()
    data = {k: v for k, v in HIDDEN_INPUT.findall(page) if k != "csrfmiddlewaretoken"}
    data["_fsm_transition_to"] = transition
    return client.post(url, data, follow=True)


def test_change_page_shows_operator_buttons_but_not_internal_ones(admin_client):
    chip = chip_in_state(status=S.ACTIVE)
    page = admin_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert 'value="cool_down"' in page and 'name="_fsm_transition_to"' in page
    assert 'value="retire"' in page
    chip_pending = chip_in_state(status=S.PENDING)
    page = admin_client.get(reverse("admin:chips_chip_change", args=[chip_pending.pk])).content.decode()
    assert 'value="start_activation"' not in page  # run by the system, hidden from people


def test_transition_button_runs_the_transition_with_history(admin_client, admin_user):
    chip = chip_in_state(status=S.ACTIVE)
    response = press_button(admin_client, chip, "cool_down")
    assert response.status_code == 200
    chip.refresh_from_db()
    assert chip.status == S.COOLING
    row = chip.transitions.first()
    assert (row.transition, row.actor_kind, row.actor_id) == ("cool_down", "user", admin_user.username)


def test_transition_button_refusal_is_reported_and_changes_nothing(admin_client):
    chip = chip_in_state(status=S.WARMING, trust=10)
    response = press_button(admin_client, chip, "promote_to_ready")
    text = response.content.decode()
    assert "Cannot promote_to_ready" in text
    chip.refresh_from_db()
    assert chip.status == S.WARMING


@pytest.mark.parametrize(
    ("action", "eligible", "ineligible", "target"),
    [
        ("bulk_promote_to_ready", dict(status=S.WARMING), dict(status=S.WARMING, trust=20), S.READY),
        ("bulk_promote_to_active", dict(status=S.READY), dict(status=S.WARMING), S.ACTIVE),
        ("bulk_rewarm", dict(status=S.DEGRADED, is_connected=True), dict(status=S.ACTIVE), S.WARMING),
        ("bulk_retire", dict(status=S.ACTIVE), dict(status=S.RETIRED), S.RETIRED),
    ],
)
def test_bulk_actions_report_successes_and_why_others_failed(admin_client, action, eligible, ineligible, target):
    if action == "bulk_promote_to_ready":
        good = [chip_in_state(status=S.WARMING) for _ in range(2)]
        for chip in good:  # walk them to the final phase with trust, then back is not possible: set facts
            from datetime import timedelta

            from django.utils import timezone

            chip.set_trust(92)
            chip.warming_phase = "operation"
            chip.warming_started_at = timezone.now() - timedelta(days=25)
            chip.save()
    else:
        good = [chip_in_state(**eligible) for _ in range(2)]
    bad = chip_in_state(**ineligible)
    bad_status = bad.status

    response = admin_client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [c.pk for c in [*good, bad]]},
        follow=True,
    )

    text = response.content.decode()
    assert "2 chips:" in text
    assert f"Chip {bad.pk} not changed" in text
    assert Chip.objects.filter(pk__in=[c.pk for c in good], status=target).count() == 2
    assert Chip.objects.get(pk=bad.pk).status == bad_status


def test_viewers_see_chips_but_cannot_act(viewer_client):
    chip = chip_in_state(status=S.ACTIVE)
    assert viewer_client.get(CHANGELIST).status_code == 200
    page = viewer_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert "_fsm_transition_to" not in page
    press_button(viewer_client, chip, "retire")
    viewer_client.post(CHANGELIST, {"action": "bulk_retire", "_selected_action": [chip.pk]})
    assert Chip.objects.get(pk=chip.pk).status == S.ACTIVE


def test_operators_can_act(operator_client):
    chip = chip_in_state(status=S.ACTIVE)
    operator_client.post(CHANGELIST, {"action": "bulk_retire", "_selected_action": [chip.pk]})
    assert Chip.objects.get(pk=chip.pk).status == S.RETIRED


def test_changelist_query_count_does_not_grow_with_chips(admin_client):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = admin_client.get(CHANGELIST + "?status=active")
            assert response.status_code == 200
        return len(ctx.captured_queries)

    for _ in range(10):
        chip_in_state(status=S.ACTIVE)
    ten = count_queries()
    Chip.objects.bulk_create([Chip(area_code="21") for _ in range(190)])  # cheap rows for volume
    for _ in range(5):
        chip_in_state(status=S.ACTIVE)
    assert count_queries() == ten
    # and with 200 rows listed on one page, unfiltered
    with CaptureQueriesContext(connection) as ctx:
        admin_client.get(CHANGELIST + "?all=")
    assert len(ctx.captured_queries) == ten


def test_alerts_changelist_and_acknowledge_action(admin_client, admin_user):
    chip = chip_in_state(status=S.ACTIVE)
    alert, created = alert_raise(kind="disconnected", severity="warning", message="offline", chip=chip)
    again, created_again = alert_raise(kind="disconnected", severity="critical", message="still", chip=chip)
    assert created and not created_again and again.pk == alert.pk and again.occurrences == 2

    url = reverse("admin:chips_chipalert_changelist")
    assert "still" in admin_client.get(url).content.decode()
    admin_client.post(url, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)
    alert.refresh_from_db()
    assert alert.acknowledged_by == admin_user and alert.acknowledged_at is not None
    # once acknowledged, the same condition opens a new alert
    _new, created = alert_raise(kind="disconnected", severity="warning", message="again", chip=chip)
    assert created and ChipAlert.objects.count() == 2


def test_the_chip_page_is_composed_by_the_pool_app_and_no_app_changes_another_apps_admin():
    from django.contrib import admin

    from chipfarm.admin import PoolChipAdmin
    from chips.admin import ChipAdmin, ChipTransitionInline, OpenAlertInline
    from instances.admin import ChipCapacityInline, InstanceInline
    from warmer.admin import DailyMetricsInline

    assert ChipAdmin.inlines == [ChipTransitionInline, OpenAlertInline]  # chips' own, untouched by other apps
    assert type(admin.site._registry[Chip]) is PoolChipAdmin
    assert PoolChipAdmin.inlines == [ChipTransitionInline, OpenAlertInline, InstanceInline, ChipCapacityInline,
                                     DailyMetricsInline]
