"""The chips admin through admin_client: buttons, bulk actions, alerts, groups, query counts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chips.models import Chip, ChipAlert
from chips.services import alert_raise
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
S = Chip.Status
CHANGELIST = reverse("admin:chips_chip_changelist")


def transition_url(chip: Chip, name: str) -> str:
    return reverse("admin:chips_chip_transition", args=[chip.pk, name])


def press_button(client, chip: Chip, transition: str, **data):
    """What the chip page's transition button does: a POST to the transition's URL."""
    return client.post(transition_url(chip, transition), data, follow=True)


def test_change_page_shows_operator_buttons_but_not_internal_ones_and_no_save_or_delete(admin_client):
    chip = chip_in_state(status=S.ACTIVE)
    page = admin_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert 'name="_fsm_transition_to" value="cool_down"' in page
    assert f'formaction="{transition_url(chip, "cool_down")}"' in page
    assert f'href="{transition_url(chip, "retire")}"' in page  # through the confirmation page
    assert ">Cool down<" in page and "Retire…" in page and ">cool_down<" not in page
    assert 'name="_save"' not in page and 'name="_continue"' not in page and "deletelink" not in page
    chip_pending = chip_in_state(status=S.PENDING)
    page = admin_client.get(reverse("admin:chips_chip_change", args=[chip_pending.pk])).content.decode()
    assert "start_activation" not in page  # run by the system, hidden from people


def test_transition_button_runs_the_transition_with_history(admin_client, admin_user):
    chip = chip_in_state(status=S.ACTIVE)
    response = press_button(admin_client, chip, "cool_down")
    assert response.status_code == 200
    assert "Cool down: done." in response.content.decode()
    chip.refresh_from_db()
    assert chip.status == S.COOLING
    row = chip.transitions.first()
    assert (row.transition, row.actor_kind, row.actor_id) == ("cool_down", "user", admin_user.username)


def test_transition_button_refusal_is_readable_and_changes_nothing(admin_client):
    chip = chip_in_state(status=S.WARMING, trust=10)
    text = press_button(admin_client, chip, "promote_to_ready").content.decode()
    assert "“Promote to ready” is not possible now: it needs trust of at least 85" in text
    assert "The chip is Warming; possible now: Mark banned, Retire." in text
    assert "promote_to_ready" not in text.split('class="messagelist"')[1].split("</ul>")[0]
    chip.refresh_from_db()
    assert chip.status == S.WARMING


@pytest.mark.parametrize("name", ["retire", "ban", "rewarm"])
def test_ban_retire_rewarm_ask_for_a_reason_that_lands_in_the_history(admin_client, admin_user, name):
    chip = chip_in_state(status=S.DEGRADED, is_connected=True)
    url = transition_url(chip, name)
    page = admin_client.get(url).content.decode()
    assert 'name="reason"' in page and "Degraded →" in page
    for blank in ["", "   "]:
        refused = admin_client.post(url, {"reason": blank})
        assert refused.status_code == 200 and "Say why" in refused.content.decode()
        assert Chip.objects.get(pk=chip.pk).status == S.DEGRADED
    admin_client.post(url, {"reason": "  number reported by the client  "}, follow=True)
    chip.refresh_from_db()
    assert chip.status == {"retire": S.RETIRED, "ban": S.BANNED, "rewarm": S.WARMING}[name]
    row = chip.transitions.first()
    assert (row.transition, row.reason, row.actor_id) == (name, "number reported by the client", admin_user.username)
    history = admin_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert "number reported by the client" in history and f"({Chip.transition_label(name)})" in history


def test_the_history_shows_labels_not_method_names(admin_client):
    chip = chip_in_state(status=S.DEGRADED)
    page = admin_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert "Active → Degraded (Degrade)" in page
    assert "active → degraded (degrade)" not in page


@pytest.mark.parametrize("name", ["made_up", "start_activation", "provisioned", "save", "delete", "_holds",
                                  "transition_label"])
def test_a_transition_url_that_is_not_an_operator_transition_is_a_404(admin_client, name):
    chip = chip_in_state(status=S.ACTIVE)
    assert admin_client.get(transition_url(chip, name)).status_code == 404
    assert admin_client.post(transition_url(chip, name), {"reason": "x"}).status_code == 404
    assert Chip.objects.get(pk=chip.pk).status == S.ACTIVE


def test_a_transition_url_of_a_missing_chip_is_a_404(admin_client):
    assert admin_client.get(reverse("admin:chips_chip_transition", args=[999_999, "retire"])).status_code == 404
    assert admin_client.get("/admin/chips/chip/not-a-number/transition/retire/").status_code == 404


def test_a_stale_confirmation_link_explains_what_is_possible_now(admin_client):
    chip = chip_in_state(status=S.RETIRED)
    response = admin_client.get(transition_url(chip, "ban"), follow=True)
    assert "“Mark banned” is not possible now: not from this state. The chip is Retired" in (
        response.content.decode())


def test_the_change_form_cannot_be_posted(admin_client):
    """The page is read-only: django-fsm's own path (posting the change form) is closed too."""
    chip = chip_in_state(status=S.ACTIVE)
    url = reverse("admin:chips_chip_change", args=[chip.pk])
    assert admin_client.post(url, {"_fsm_transition_to": "retire"}).status_code == 403
    assert admin_client.post(url, {"_fsm_transition_to": "made_up"}).status_code == 403
    assert Chip.objects.get(pk=chip.pk).status == S.ACTIVE


@pytest.mark.parametrize(
    ("action", "eligible", "ineligible", "target"),
    [
        ("bulk_promote_to_ready", dict(status=S.WARMING), dict(status=S.WARMING, trust=20), S.READY),
        ("bulk_promote_to_active", dict(status=S.READY), dict(status=S.WARMING), S.ACTIVE),
    ],
)
def test_bulk_actions_report_successes_and_why_others_failed(admin_client, action, eligible, ineligible, target):
    if action == "bulk_promote_to_ready":
        good = [chip_in_state(status=S.WARMING) for _ in range(2)]
        for chip in good:
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
    assert f"Chip {bad.pk} not changed: {bad}: “" in text and "is not possible now" in text
    assert Chip.objects.filter(pk__in=[c.pk for c in good], status=target).count() == 2
    assert Chip.objects.get(pk=bad.pk).status == bad_status


@pytest.mark.parametrize(
    ("action", "eligible", "ineligible", "target"),
    [
        ("bulk_rewarm", dict(status=S.DEGRADED, is_connected=True), dict(status=S.ACTIVE), S.WARMING),
        ("bulk_ban", dict(status=S.ACTIVE), dict(status=S.RETIRED), S.BANNED),
        ("bulk_retire", dict(status=S.ACTIVE), dict(status=S.RETIRED), S.RETIRED),
    ],
)
def test_bulk_ban_retire_rewarm_confirm_with_a_reason(admin_client, action, eligible, ineligible, target):
    good = [chip_in_state(**eligible) for _ in range(2)]
    bad = chip_in_state(**ineligible)
    selected = {"action": action, "_selected_action": [c.pk for c in [*good, bad]]}

    confirm = admin_client.post(CHANGELIST, selected)
    page = confirm.content.decode()
    assert confirm.status_code == 200 and 'name="reason"' in page and str(good[0]) in page
    assert not Chip.objects.filter(status=target, pk__in=[c.pk for c in good]).exists()  # nothing yet

    blank = admin_client.post(CHANGELIST, {**selected, "apply": "1", "reason": "  "})
    assert blank.status_code == 200 and "Say why" in blank.content.decode()
    assert not Chip.objects.filter(status=target, pk__in=[c.pk for c in good]).exists()

    response = admin_client.post(CHANGELIST, {**selected, "apply": "1", "reason": "batch 7 reported"}, follow=True)
    text = response.content.decode()
    assert "2 chips:" in text and f"Chip {bad.pk} not changed" in text
    assert Chip.objects.filter(pk__in=[c.pk for c in good], status=target).count() == 2
    assert {c.transitions.first().reason for c in Chip.objects.filter(pk__in=[c.pk for c in good])} == {
        "batch 7 reported"}
    assert Chip.objects.get(pk=bad.pk).status == ineligible["status"]


def test_viewers_see_chips_but_cannot_act(viewer_client):
    chip = chip_in_state(status=S.ACTIVE)
    assert viewer_client.get(CHANGELIST).status_code == 200
    page = viewer_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert "_fsm_transition_to" not in page and "/transition/" not in page and 'name="_save"' not in page
    assert viewer_client.get(transition_url(chip, "retire")).status_code == 403
    assert viewer_client.post(transition_url(chip, "retire"), {"reason": "x"}).status_code == 403
    assert viewer_client.post(transition_url(chip, "cool_down")).status_code == 403
    viewer_client.post(CHANGELIST, {"action": "bulk_retire", "_selected_action": [chip.pk], "apply": "1",
                                    "reason": "x"})
    viewer_client.post(CHANGELIST, {"action": "bulk_promote_to_active", "_selected_action": [chip.pk]})
    assert Chip.objects.get(pk=chip.pk).status == S.ACTIVE
    assert not chip.transitions.filter(transition__in=["retire", "cool_down"]).exists()


def test_operators_can_act(operator_client):
    chip = chip_in_state(status=S.ACTIVE)
    operator_client.post(CHANGELIST, {"action": "bulk_retire", "_selected_action": [chip.pk], "apply": "1",
                                      "reason": "end of contract"})
    assert Chip.objects.get(pk=chip.pk).status == S.RETIRED
    other = chip_in_state(status=S.ACTIVE)
    press_button(operator_client, other, "ban", reason="WhatsApp banned it")
    assert Chip.objects.get(pk=other.pk).status == S.BANNED


def test_nobody_deletes_a_chip_from_the_admin(admin_client):
    chip = chip_in_state(status=S.ACTIVE)
    assert admin_client.post(reverse("admin:chips_chip_delete", args=[chip.pk]), {"post": "yes"}).status_code == 403
    assert 'value="delete_selected"' not in admin_client.get(CHANGELIST).content.decode()
    assert Chip.objects.filter(pk=chip.pk).exists()


def test_search_finds_a_number_however_it_is_typed(admin_client):
    chip = chip_in_state(status=S.ACTIVE)  # +55 11 9 0000000N
    other = chip_in_state(status=S.ACTIVE)
    digits = chip.phone[1:]
    typed = [f"+{digits[:2]} {digits[2:4]} {digits[4:8]}-{digits[8:]}", f"({digits[2:4]}) {digits[4:9]}-{digits[9:]}",
             digits, chip.phone]
    for term in typed:
        page = admin_client.get(CHANGELIST, {"q": term}).content.decode()
        assert f'value="{chip.pk}"' in page, term
        assert f'value="{other.pk}"' not in page, term


def test_chips_export_to_csv_streams_the_selection(viewer_client):
    chips = [chip_in_state(status=S.ACTIVE) for _ in range(3)]
    response = viewer_client.post(CHANGELIST, {"action": "export_csv", "_selected_action": [c.pk for c in chips[:2]]})
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode("utf-8-sig")
    lines = body.strip().splitlines()
    assert lines[0].startswith("id,phone,status,trust score")
    assert len(lines) == 3 and chips[0].phone in body and chips[2].phone not in body
    assert ",Active," in lines[1]


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

    assert ChipAdmin.inlines == [ChipTransitionInline, OpenAlertInline]  # chips' own, untouched by other apps
    assert type(admin.site._registry[Chip]) is PoolChipAdmin
    # The instance, capacity, trust and metrics are in the page's overview (chipfarm.chip_page), not inlines.
    assert PoolChipAdmin.inlines == [ChipTransitionInline, OpenAlertInline]
