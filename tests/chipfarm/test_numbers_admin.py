"""The admin side of numbers by hand (W2 3/7): add an own number, link it live, buy lines, retry or cancel."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from chipfarm.models import OrchestratorOperation, PoolConfiguration
from chips.models import Chip
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db


def test_an_operator_adds_a_number_and_links_it_from_the_admin(world, operator_client):
    world.fake.auto_qr = True
    page = operator_client.get(reverse("admin:chips_chip_changelist")).content.decode()
    assert "Add a number I own" in page

    response = operator_client.post(reverse("admin:chips_chip_add_own"), {"phone": "(61) 98765-4321"})
    chip = Chip.objects.get(phone="+5561987654321")
    assert response.status_code == 302 and chip.status == "pending" and chip.source == "own"
    change = operator_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert 'id="link-chip"' in change

    started = operator_client.post(reverse("admin:chips_chip_link", args=[chip.pk]))
    assert started.status_code == 302
    assert 'id="qr"' in operator_client.get(started["Location"]).content.decode()
    status = operator_client.get(reverse("admin:chips_chip_link_status", args=[chip.pk])).json()
    assert status["state"] == "connecting" and status["code"].startswith("2@") and len(status["pairing_code"]) == 8
    assert operator_client.get(status["qr"])["Content-Type"] == "image/png"

    world.fake.scan(chip.instance_name, status["code"], chip.phone.lstrip("+"))
    world.relay()

    assert operator_client.get(reverse("admin:chips_chip_link_status", args=[chip.pk])).json()["state"] == "linked"
    chip.refresh_from_db()
    assert chip.status == "warming"
    page = operator_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()
    assert 'id="link-chip"' not in page


def test_a_duplicate_number_in_the_admin_form_says_why_and_writes_nothing(world, operator_client):
    operator_client.post(reverse("admin:chips_chip_add_own"), {"phone": "61987654321"})
    page = operator_client.post(reverse("admin:chips_chip_add_own"), {"phone": "+55 61 98765-4321"})
    assert page.status_code == 200 and "already in the pool" in page.content.decode()
    assert Chip.objects.count() == 1


def test_a_viewer_cannot_add_or_link(world, viewer_client):
    assert viewer_client.get(reverse("admin:chips_chip_add_own")).status_code == 403
    chip = world.chip()
    assert viewer_client.post(reverse("admin:chips_chip_link", args=[chip.pk])).status_code == 403


def test_lines_are_bought_from_the_dashboard_within_the_budget(operator_client, django_capture_on_commit_callbacks):
    config = PoolConfiguration.defaults()
    config.provision_daily_budget = 4
    config.save()
    url = reverse("admin:chipfarm_dashboard")
    assert "4 left in today" in operator_client.get(url).content.decode()

    with django_capture_on_commit_callbacks(execute=False):
        operator_client.post(url, {"action": "buy_lines", "count": "3", "area_code": "21"})
    over = operator_client.post(url, {"action": "buy_lines", "count": "2"}, follow=True).content.decode()

    assert Chip.objects.filter(area_code="21").count() == 3 and Chip.objects.count() == 3
    assert "allows 1 more line" in over
    assert set(OrchestratorOperation.objects.filter(kind="manual_provision").values_list("actor", flat=True)) == {
        "operator"}


def test_an_operator_retries_or_cancels_a_stuck_pipeline_chip(operator_client, fake_salvy):
    orphan = chip_in_state(status=Chip.Status.ACTIVATING)
    stuck = chip_in_state(status=Chip.Status.PENDING)
    url = reverse("admin:chips_chip_changelist")
    with time_machine.travel(timezone.now() + timedelta(minutes=5)):
        operator_client.post(url, {"action": "retry_pipeline", "_selected_action": [orphan.pk]})
        operator_client.post(url, {"action": "cancel_pipeline", "_selected_action": [stuck.pk]})
    orphan.refresh_from_db()
    stuck.refresh_from_db()
    assert (orphan.status, stuck.status) == ("pending", "retired")


@pytest.mark.parametrize("lost", ["logged_out", "vanished"])
def test_a_chip_that_lost_its_link_is_relinked_from_the_admin_and_routes_again(world, operator_client, lost,
                                                                               business_hours):
    from instances.health import instances_check
    from instances.routing import RoutingRefused, contact_route

    world.fake.auto_qr = True
    chip = world.chip()
    if lost == "logged_out":
        world.fake.close(chip.instance_name, 401)
        world.relay()
    else:
        world.fake.forget(chip.instance_name)
        instances_check()
    with pytest.raises(RoutingRefused):
        contact_route(contact="+5511988880001")
    assert 'id="link-chip"' in operator_client.get(reverse("admin:chips_chip_change", args=[chip.pk])).content.decode()

    operator_client.post(reverse("admin:chips_chip_link", args=[chip.pk]))
    status = operator_client.get(reverse("admin:chips_chip_link_status", args=[chip.pk])).json()
    world.fake.scan(chip.instance_name, status["code"], chip.phone.lstrip("+"))
    world.relay()

    assert contact_route(contact="+5511988880001").chip_id == chip.pk


def test_a_degraded_chip_relinked_from_the_admin_rewarms_with_a_history_row(world, operator_client):
    from chips.models import ChipTransition
    from tests.factories import chip_walk

    world.fake.auto_qr = True
    chip = world.chip()
    world.fake.close(chip.instance_name, 401)  # logged out
    world.relay()
    chip = chip_walk(chip=Chip.objects.get(pk=chip.pk), transitions=["degrade"])
    assert chip.status == "degraded" and not chip.is_connected

    operator_client.post(reverse("admin:chips_chip_link", args=[chip.pk]))
    status = operator_client.get(reverse("admin:chips_chip_link_status", args=[chip.pk])).json()
    world.fake.scan(chip.instance_name, status["code"], chip.phone.lstrip("+"))
    world.relay()

    chip.refresh_from_db()
    assert chip.status == "warming" and chip.is_connected and chip.warming_phase == "first_contacts"
    row = ChipTransition.objects.filter(chip=chip).order_by("-created_at", "-id").first()
    assert (row.source, row.target, row.transition, row.actor_kind, row.actor_id, row.reason) == (
        "degraded", "warming", "rewarm", "system", "link", "re-linked")


def test_the_link_page_shows_until_when_the_link_is_good_and_says_expired_once_it_is(world, operator_client):
    from django.utils import formats

    from instances.models import InstanceLink

    world.fake.auto_qr = True
    chip = world.chip()
    world.fake.close(chip.instance_name, 401)
    world.relay()
    operator_client.post(reverse("admin:chips_chip_link", args=[chip.pk]))
    link = InstanceLink.objects.get(instance__chip=chip, ended_at__isnull=True)
    page_url = reverse("admin:chips_chip_link", args=[chip.pk])
    status_url = reverse("admin:chips_chip_link_status", args=[chip.pk])
    until = formats.date_format(timezone.localtime(link.expires_at), "SHORT_DATETIME_FORMAT")
    assert timezone.localtime(link.expires_at).tzname() in ("-03", "BRT")  # the admin's São Paulo time

    page = operator_client.get(page_url).content.decode()
    assert 'data-state="connecting"' in page
    assert f'<span id="link-expiry" class="help">This link is valid until {until} (São Paulo time).</span>' in page
    assert operator_client.get(status_url).json()["expiry"] == f"This link is valid until {until} (São Paulo time)."

    with time_machine.travel(link.expires_at + timedelta(seconds=1)):
        page = operator_client.get(page_url).content.decode()
        status = operator_client.get(status_url).json()

    assert 'data-state="expired"' in page and ">expired</span>" in page
    expired = f"This link expired at {until} (São Paulo time); start a new one."
    assert f'<span id="link-expiry" class="help">{expired}</span>' in page
    assert status["state"] == "expired" and status["expiry"].startswith(f"This link expired at {until}")
    assert InstanceLink.objects.get(pk=link.pk).end_reason == "expired"
