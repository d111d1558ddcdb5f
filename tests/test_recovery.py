"""When PostgreSQL drops every connection (a restart), the processes recover without being restarted."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from django.db import connection

from chips.models import Chip
from chips.tasks import chip_run_transition
from tests.factories import chip_in_state


def _drop_all_connections(dbname: str) -> int:
    """What a PostgreSQL restart does to our sessions: every backend of the database is terminated."""
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"],
                         dbname="postgres", autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [dbname],
        ).fetchall()
    return len(rows)


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_web_and_worker_recover_after_postgresql_drops_their_connections(live_server, api_key,
                                                                         celery_worker_queue):
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    headers = {"X-API-Key": api_key}
    with httpx.Client(base_url=live_server.url, timeout=10) as http:
        assert http.get("/api/v1/chips", headers=headers).status_code == 200
        assert chip_run_transition.apply_async(args=[chip.pk, "cool_down"], queue=celery_worker_queue).get(
            timeout=30) == Chip.Status.COOLING

        assert _drop_all_connections(connection.settings_dict["NAME"]) >= 1
        connection.close()  # this test's own session was dropped too

        # The next request and the next task reconnect by themselves (CONN_HEALTH_CHECKS; Celery's
        # Django fixup closes stale connections around each task).
        assert http.get("/health").status_code == 200
        assert http.get("/api/v1/chips", headers=headers).status_code == 200
        assert chip_run_transition.apply_async(args=[chip.pk, "ban"], queue=celery_worker_queue).get(
            timeout=30) == Chip.Status.BANNED
