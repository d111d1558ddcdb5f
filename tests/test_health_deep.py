"""GET /health/deep: DB, Redis, beat heartbeat and orchestrator cycle ages; 503 naming what failed."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from chips.models import Chip
from config.celery import app
from config.heartbeat import LAST_TICK_KEY, heartbeat
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
URL = "/health/deep"
CYCLE_KEY = "orchestrator:last_cycle"
DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def dead_redis(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": DEAD_REDIS}}


def _record(key: str, age: timedelta) -> None:
    cache.set(key, (timezone.now() - age).isoformat(), timeout=None)


def test_all_checks_pass(client, isolated_cache):
    _record(LAST_TICK_KEY, timedelta(seconds=20))
    _record(CYCLE_KEY, timedelta(seconds=50))

    response = client.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "beat", "orchestrator"}
    assert all(check["ok"] is True for check in body["checks"].values())
    assert 19 <= body["checks"]["beat"]["age_seconds"] <= 25
    assert body["checks"]["orchestrator"]["max_age_seconds"] == 300
    assert response["Cache-Control"] == "no-store"


def test_a_stale_beat_tick_fails_and_is_named(client, isolated_cache):
    _record(LAST_TICK_KEY, timedelta(minutes=10))
    _record(CYCLE_KEY, timedelta(seconds=5))

    response = client.get(URL)

    assert response.status_code == 503
    body = response.json()
    assert (body["status"], body["failed"]) == ("error", ["beat"])
    assert body["checks"]["beat"]["ok"] is False and "more than 180 s" in body["checks"]["beat"]["error"]
    assert body["checks"]["orchestrator"]["ok"] is True


def test_a_cycle_never_recorded_fails(client, isolated_cache):
    _record(LAST_TICK_KEY, timedelta(seconds=5))

    body = client.get(URL).json()

    assert body["failed"] == ["orchestrator"]
    assert body["checks"]["orchestrator"]["error"] == "never recorded"


def test_thresholds_come_from_settings(client, isolated_cache, settings):
    settings.BEAT_MAX_AGE_SECONDS = 900
    settings.CYCLE_MAX_AGE_SECONDS = 30
    _record(LAST_TICK_KEY, timedelta(minutes=10))
    _record(CYCLE_KEY, timedelta(seconds=60))

    body = client.get(URL).json()

    assert body["failed"] == ["orchestrator"]
    assert body["checks"]["beat"]["ok"] is True


def test_with_redis_down_deep_health_names_redis_fast_and_reads_still_work(client, api, dead_redis):
    chip_in_state(status=Chip.Status.WARMING)

    started = time.monotonic()
    response = client.get(URL)
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["failed"] == ["redis"]
    assert body["checks"]["redis"]["ok"] is False and body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True
    # The ages live in Redis: reported as not checked rather than waited on.
    assert body["checks"]["beat"]["ok"] is None and body["checks"]["orchestrator"]["ok"] is None
    assert elapsed < 2.5
    # Liveness, API key authentication and the chips list never touch Redis.
    assert client.get("/health").status_code == 200
    listed = api.get("/api/v1/chips")
    assert listed.status_code == 200
    assert [c["status"] for c in listed.json()["items"]] == ["warming"]


def test_deep_health_needs_no_auth_and_only_get(client, isolated_cache):
    assert client.get(URL).status_code in (200, 503)
    assert client.post(URL).status_code == 405


def test_the_heartbeat_task_records_the_tick(isolated_cache):
    value = heartbeat()

    assert cache.get(LAST_TICK_KEY) == value
    assert timezone.now() - datetime.fromisoformat(value) < timedelta(seconds=5)


def test_beat_queues_the_heartbeat_every_30_seconds_and_workers_know_it():
    entry = app.conf.beat_schedule["beat-heartbeat"]
    assert (entry["task"], entry["schedule"]) == ("config.heartbeat", 30.0)
    assert "config.heartbeat" in app.tasks
