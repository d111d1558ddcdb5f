"""When PostgreSQL drops every connection (a restart), the processes recover without being restarted."""

from __future__ import annotations

import httpx
import psycopg
import pytest
from django.db import connection

from chips.models import Chip
from chips.tasks import chip_run_transition
from tests.factories import chip_in_state


def _admin(dbname: str | None = None):
    """A connection of our own, beside Django's (to the test database unless `dbname`)."""
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"],
                           dbname=dbname or db["NAME"], autocommit=True)


def _drop_all_connections(dbname: str) -> int:
    """What a PostgreSQL restart does to our sessions: every backend of the database is terminated, and gone
    before the server takes connections again (the shutdown waits for them: so does this, up to 5 s each)."""
    with _admin("postgres") as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s "
            "AND pid <> pg_backend_pid()",
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

        # The next request and the next task reconnect by themselves (CONN_HEALTH_CHECKS: the worker's kept
        # connection is checked before each task's first query, as a request's is).
        assert http.get("/health").status_code == 200
        assert http.get("/api/v1/chips", headers=headers).status_code == 200
        assert chip_run_transition.apply_async(args=[chip.pk, "ban"], queue=celery_worker_queue).get(
            timeout=30) == Chip.Status.BANNED


def _worker_sessions(queue: str) -> set[tuple[int, object]]:
    """(pid, backend_start) of the sessions of the test worker serving `queue` (tests.celery_worker names them)."""
    with _admin() as admin:
        return set(admin.execute(
            "SELECT pid, backend_start FROM pg_stat_activity WHERE application_name = %s", [queue]).fetchall())


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_the_worker_keeps_its_database_connection_from_one_task_to_the_next(celery_worker_queue):
    """Celery's Django fixup used to close the connection after every task: each task paid a new PostgreSQL
    session before its first query (config.celery sets CELERY_DB_REUSE_MAX)."""
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    with _admin() as admin:  # the worker's next task starts a session: its CONN_MAX_AGE cannot end between the two
        admin.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE application_name = %s",
                      [celery_worker_queue])
    served = []
    for transition, status in (("cool_down", Chip.Status.COOLING), ("ban", Chip.Status.BANNED)):
        assert chip_run_transition.apply_async(args=[chip.pk, transition], queue=celery_worker_queue).get(
            timeout=30) == status
        served.append(_worker_sessions(celery_worker_queue))
    assert len(served[0]) == 1 and served[1] == served[0]


@pytest.mark.django_db(transaction=True)
def test_after_a_task_that_failed_its_session_is_closed_and_what_it_held_released():
    """A kept connection would keep a session-level advisory lock a time limit cut off before its release."""
    from config.celery import _close_old_connections

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(74211)")
    session = connection.connection.info.backend_pid
    _close_old_connections(sender=chip_run_transition, state="SUCCESS")
    assert connection.connection is not None and connection.connection.info.backend_pid == session
    _close_old_connections(sender=chip_run_transition, state="FAILURE")
    assert connection.connection is None
    with _admin() as admin:
        assert admin.execute("SELECT pg_try_advisory_lock(74211)").fetchone()[0]


# --- the health check of a reused connection (common.postgresql) -------------------------------------------

def _next_request_first_query(monkeypatch) -> tuple[int, int]:
    """What a request does to the connection at its start (Django's request_started), then its first query:
    returns (how many times Django's `SELECT 1` check ran, the server process that answered)."""
    from django.db import close_old_connections

    checks = []
    real = connection.is_usable
    monkeypatch.setattr(connection, "is_usable", lambda: checks.append(1) or real())
    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    monkeypatch.undo()
    return len(checks), pid


def _wait_until_readable(timeout: float = 5.0) -> None:
    import select
    import time

    deadline = time.monotonic() + timeout
    while not select.select([connection.connection.pgconn.socket], [], [], 0.05)[0]:
        assert time.monotonic() < deadline, "the server's close never reached the socket"


@pytest.mark.django_db(transaction=True)
def test_a_reused_connection_the_server_said_nothing_on_is_not_asked_select_1(monkeypatch):
    with connection.cursor() as cursor:  # the previous request
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    assert connection.health_check_enabled
    assert _next_request_first_query(monkeypatch) == (0, pid)  # Django's backend: (1, pid)


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_closed_is_checked_and_replaced_before_the_first_query(monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    with _admin() as admin:  # what a restart, pg_terminate_backend or idle_session_timeout does
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    _wait_until_readable()
    checks, new_pid = _next_request_first_query(monkeypatch)
    assert checks == 1 and new_pid != pid  # the request's own query ran on a new connection, no error


@pytest.mark.django_db(transaction=True)
def test_a_connection_with_something_to_read_gets_the_full_check_and_is_kept(monkeypatch):
    with connection.cursor() as cursor:
        cursor.execute("LISTEN chipfarm_test_channel")
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    with _admin() as admin:
        admin.execute("NOTIFY chipfarm_test_channel")
    _wait_until_readable()
    assert _next_request_first_query(monkeypatch) == (1, pid)  # alive: Django's SELECT 1 answered, kept
    with connection.cursor() as cursor:
        cursor.execute("UNLISTEN *")


@pytest.mark.django_db(transaction=True)
def test_a_prepared_statement_first_on_a_closed_connection_runs_on_a_new_one():
    """common.statements runs on the psycopg cursor itself (no Django cursor): it gets the same check."""
    from django.db import close_old_connections

    from common.statements import Statement

    backend_pid = Statement("SELECT pg_backend_pid()")
    (pid,) = backend_pid.fetchone([])
    with _admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    _wait_until_readable()
    close_old_connections()  # the next request starts
    (new_pid,) = backend_pid.fetchone([])  # before: psycopg.OperationalError (the server closed the connection)
    assert new_pid != pid
