"""Shared fixtures: real PostgreSQL (pytest-django's test database), real Redis, a real Celery worker."""

from __future__ import annotations

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

        def delete(self, path, **kw):
            return client.delete(path, headers={"X-API-Key": api_key}, **kw)

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


@pytest.fixture
def isolated_cache(settings):
    """A key prefix of this test's own on the real Redis: no other test sees or changes its keys (counters start at
    zero and stay private); they are deleted afterwards."""
    import uuid

    from django.core.cache import cache

    prefix = f"chipfarm-test-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": prefix}}
    yield prefix
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture(autouse=True)
def _fresh_send_circuits():
    """Send circuits live in Redis, outside the test database's rollback: each test starts with none."""
    from django.core.cache import cache

    from instances import circuit

    circuit._skip_until = 0.0
    circuit.gates_forget()
    yield
    circuit.gates_forget()
    try:
        client = cache._cache.get_client(write=True)
        for key in client.scan_iter(cache.make_key("circuit:*")):
            client.delete(key)
    except Exception:  # a test that pointed the cache at a dead Redis: nothing was written
        pass


@pytest.fixture(autouse=True)
def _no_pool_known_full():
    """What a process knows of a full pool (instances.pool_full) is about its own moment and hour: a test's
    decisions never skip a pick because another test filled its pool."""
    from instances.pool_full import pool_room_changed

    pool_room_changed()
    yield
    pool_room_changed()


@pytest.fixture(autouse=True)
def _no_drain_known_queued():
    """What a process knows of queued drains (instances.inbox) is about the drains of its own moment: a test's
    events never count on a drain another test queued (to a worker that may be gone)."""
    from instances import inbox

    inbox._covered_until.clear()
    yield
    inbox._covered_until.clear()


@pytest.fixture(scope="session")
def celery_worker_queue(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real `celery worker` process on the test database and a queue of its own.

    Tests that use it must commit their data (`django_db(transaction=True)`) for the worker to see it.
    """
    from tests.celery_worker import celery_worker

    with celery_worker(prefix="chipfarm-test", log_dir=tmp_path_factory.mktemp("celery")) as (queue, _log):
        yield queue


@pytest.fixture(scope="session")
def _evolution_server():
    from sandbox.evolution import FakeEvolution
    from sandbox.server import FakeServer

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
    from sandbox.salvy import FakeSalvy
    from sandbox.server import FakeServer

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
    from sandbox.server import FakeServer
    from sandbox.slack import FakeSlack

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


# The gateway's world (chips with real instances on the fake Evolution, webhooks relayed into the app) and
# business-hours time, for every test package.
from tests.instances.conftest import _sink_server, business_hours, world  # noqa: E402, F401
