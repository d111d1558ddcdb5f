"""GET /api/v1/pool and GET /health/chips, and the management commands."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from chipfarm.models import OrchestratorOperation
from chips.models import Chip
from instances.services import sending_pause
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db


def test_pool_api_counts_targets_deficits_health_and_paused(api, client, pool_config):
    pool_config(production_min=2, ready_min=1, warmup_buffer=3)
    chip_in_state(status=Chip.Status.ACTIVE)
    chip_in_state(status=Chip.Status.WARMING)
    chip_in_state(status=Chip.Status.PENDING)
    sending_pause(reason="night", by="ana")
    assert client.get("/api/v1/pool").status_code == 401
    body = api.get("/api/v1/pool").json()
    assert body["counts"]["active"] == 1 and body["counts"]["pending"] == 1
    assert body["health"] == "critical"
    assert body["deficits"] == {"production": 1, "ready": 1, "warming": 1}
    assert body["pipeline"] == 1 and body["paused"] is True and body["paused_reason"] == "night"
    assert body["targets"]["production_min"] == 2


def test_health_chips_is_public_and_503_when_critical(client, pool_config):
    pool_config(production_min=1, ready_min=0, warmup_buffer=0)
    response = client.get("/health/chips")
    assert response.status_code == 503 and response.json()["health"] == "critical"
    chip_in_state(status=Chip.Status.ACTIVE)
    response = client.get("/health/chips")
    assert response.status_code == 200 and response.json()["counts"]["active"] == 1


def test_pool_status_command_prints_a_table(pool_config):
    pool_config(production_min=1)
    chip_in_state(status=Chip.Status.ACTIVE)
    out = StringIO()
    call_command("pool_status", stdout=out)
    text = out.getvalue()
    assert "active              1  >= 1, <= " in text
    assert "health: ATTENTION (ready 0 < ready minimum 2" in text
    assert "deficits: production 0, ready 2, warming 4; pipeline 0" in text


def test_run_orchestrator_once_and_provision_chips(pool_config):
    pool_config(production_min=0, ready_min=0, warmup_buffer=0)
    out = StringIO()
    call_command("run_orchestrator", "--once", stdout=out)
    assert "cycle:" in out.getvalue()
    out = StringIO()
    call_command("provision_chips", "--count", "2", "--area-code", "21", stdout=out)
    assert Chip.objects.filter(status=Chip.Status.PROVISIONING, area_code="21").count() == 2
    assert OrchestratorOperation.objects.filter(kind="auto_provision").count() == 2
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("provision_chips", "--count", "1", "--area-code", "1")


def test_tasks_for_a_chip_that_no_longer_exists_do_nothing():
    from chipfarm.tasks import provision_chip, release_chip

    assert provision_chip.run(987654) == "gone"
    assert release_chip.run(987654) is False
