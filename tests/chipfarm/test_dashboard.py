"""The admin pool dashboard: content, buttons, permissions, bounded queries at 10,000 chips."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from chipfarm.models import OrchestratorOperation, PoolSnapshot
from chips.models import Chip
from chips.services import alert_raise
from instances.models import RoutingPolicy
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
URL = reverse("admin:chipfarm_dashboard")


def test_dashboard_shows_counts_health_alerts_operations_and_chart(admin_client, pool_config):
    pool_config(production_min=2, ready_min=1, warmup_buffer=2)
    chip_in_state(status=Chip.Status.ACTIVE)
    chip_in_state(status=Chip.Status.WARMING)
    alert_raise(kind="banned", severity="critical", message="chip X banned")
    OrchestratorOperation.objects.create(kind="auto_provision", reason="warming buffer short")
    now = timezone.now()
    for hours in range(48):
        PoolSnapshot.objects.create(taken_at=now - timedelta(hours=hours), counts={"active": 1 + hours % 3},
                                    health="critical")

    page = admin_client.get(URL).content.decode()

    assert 'id="pool-health">CRITICAL' in page
    assert 'data-state="active"' in page and "chip X banned" in page and "warming buffer short" in page
    assert page.count("<polyline") >= 1 and "48 samples" in page
    assert admin_client.get(reverse("admin:index")).content.decode().count("dashboard-link") == 1


def test_dashboard_buttons_run_a_cycle_and_pause_resume(admin_client, pool_config):
    pool_config(production_min=1, ready_min=0, warmup_buffer=0)
    ready = chip_in_state(status=Chip.Status.READY, trust=90)
    response = admin_client.post(URL, {"action": "run_cycle"}, follow=True)
    assert "Cycle done" in response.content.decode()
    assert Chip.objects.get(pk=ready.pk).status == Chip.Status.ACTIVE

    admin_client.post(URL, {"action": "pause", "reason": "incident"})
    assert RoutingPolicy.load().is_paused
    assert "Sending is PAUSED" in admin_client.get(URL).content.decode()
    admin_client.post(URL, {"action": "resume"})
    assert not RoutingPolicy.load().is_paused


def test_viewers_see_the_dashboard_but_cannot_press_buttons(viewer_client):
    page = viewer_client.get(URL)
    assert page.status_code == 200 and "run-cycle" not in page.content.decode()
    assert viewer_client.post(URL, {"action": "pause", "reason": "x"}).status_code == 403
    assert not RoutingPolicy.load().is_paused


def test_dashboard_queries_are_bounded_at_10000_chips(admin_client, pool_config):
    pool_config()

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert admin_client.get(URL).status_code == 200
        return len(ctx.captured_queries)

    chip_in_state(status=Chip.Status.ACTIVE)
    few = queries()
    states = [Chip.Status.ACTIVE, Chip.Status.READY, Chip.Status.WARMING, Chip.Status.BANNED]
    Chip.objects.bulk_create([Chip(area_code="11", status=states[i % 4]) for i in range(10_000)], batch_size=5000)
    many = queries()
    assert many == few and many <= 15


def test_pool_configuration_is_validated(admin_client, pool_config):
    pool_config()
    url = reverse("admin:chipfarm_poolconfiguration_change", args=[1])
    data = {"production_min": 10, "production_max": 5, "ready_min": 2, "warmup_buffer": 4, "warmup_days": 21,
            "trust_min_for_ready": 60, "trust_degraded_threshold": 70, "disconnected_degrade_minutes": 30,
            "auto_provision": "on", "default_area_code": "11", "provision_batch_max": 3,
            "provision_daily_budget": 10}
    page = admin_client.post(url, data).content.decode()
    assert "cannot exceed the maximum" in page and "must be below the ready threshold" in page
    from chipfarm.models import PoolConfiguration

    assert PoolConfiguration.objects.get().production_min == 5
