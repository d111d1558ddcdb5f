"""Shared fixtures: real PostgreSQL (pytest-django's test database), real Redis, a real Celery worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.contrib.auth.models import Group

from chipfarm.models import ApiKey

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def api_key(db) -> str:
    _key, raw = ApiKey.issue(name=f"test-{uuid.uuid4().hex[:8]}")
    return raw


@pytest.fixture
def api(client, api_key):
    """The Django test client with a valid X-API-Key on every call."""

    class Api:
        def get(self, path, **kw):
            return client.get(path, headers={"X-API-Key": api_key}, **kw)

        def post(self, path, data=None, **kw):
            return client.post(path, data=data, content_type="application/json",
                               headers={"X-API-Key": api_key}, **kw)

    return Api()


@pytest.fixture
def operator_client(client, django_user_model):
    user = django_user_model.objects.create_user("operator", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Operators"))
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(client, django_user_model):
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="Viewers"))
    client.force_login(user)
    return client


@pytest.fixture(scope="session")
def celery_worker_queue(django_db_setup, django_db_blocker):
    """A real `celery worker` process on the test database and a queue of its own.

    Tests that use it must commit their data (`django_db(transaction=True)`) for the worker to see it.
    """
    from django.conf import settings
    from django.db import connection

    queue = f"chipfarm-test-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
    }
    log = open(ROOT / f".pytest-celery-{queue}.log", "w")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "--pool=solo",
         "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO", "-n", f"{queue}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    from config.celery import app

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited with {proc.returncode}; see {log.name}")
        replies = app.control.ping(destination=[f"{queue}@{os.uname().nodename}"], timeout=1.0)
        if replies:
            break
    else:
        proc.kill()
        raise RuntimeError("celery worker did not answer a ping within 60 s")
    assert settings.CELERY_BROKER_URL
    yield queue
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    Path(log.name).unlink(missing_ok=True)


@pytest.fixture(scope="session")
def _evolution_server():
    from chipfarm.sandbox.evolution import FakeEvolution
    from chipfarm.sandbox.server import FakeServer

    fake = FakeEvolution(api_key="test-evolution-key")
    server = FakeServer(fake.app).start()
    fake.server_url = server.url
    yield fake, server
    server.stop()


@pytest.fixture
def fake_evolution(_evolution_server, settings):
    """The project's fake Evolution API on loopback, reset for each test; settings point at it."""
    fake, server = _evolution_server
    fake.reset()
    settings.EVOLUTION_API_URL = server.url
    settings.EVOLUTION_API_KEY = fake.api_key
    return fake


@pytest.fixture(scope="session")
def _salvy_server():
    from chipfarm.sandbox.salvy import FakeSalvy
    from chipfarm.sandbox.server import FakeServer

    fake = FakeSalvy(token="test-salvy-token")
    server = FakeServer(fake.app).start()
    yield fake, server
    server.stop()
    fake.close()


@pytest.fixture
def fake_salvy(_salvy_server, settings):
    """The project's fake Salvy on loopback, reset for each test; settings point at it."""
    fake, server = _salvy_server
    fake.reset()
    settings.SALVY_API_URL = server.url
    settings.SALVY_API_TOKEN = fake.token
    return fake


@pytest.fixture(scope="session")
def _slack_server():
    from chipfarm.sandbox.server import FakeServer
    from chipfarm.sandbox.slack import FakeSlack

    fake = FakeSlack()
    server = FakeServer(fake.app).start()
    yield fake, server
    server.stop()


@pytest.fixture
def fake_slack(_slack_server, settings):
    """A fake Slack: the alerts webhook at /alerts, the operations webhook at /operations."""
    fake, server = _slack_server
    fake.reset()
    settings.SLACK_WEBHOOK_URL = f"{server.url}/alerts"
    settings.SLACK_OPERATIONS_WEBHOOK_URL = f"{server.url}/operations"
    return fake
