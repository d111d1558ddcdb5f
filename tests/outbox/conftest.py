"""The outbox's fixtures: a real consumer on loopback (sandbox.consumer), endpoints subscribed to it, the API."""

from __future__ import annotations

import json

import pytest

from outbox import services
from outbox.models import Endpoint


@pytest.fixture(scope="session")
def _consumer_server():
    from sandbox.consumer import FakeConsumer
    from sandbox.server import FakeServer

    fake = FakeConsumer()
    server = FakeServer(fake.app).start()
    yield fake, server
    server.stop()


@pytest.fixture
def consumer(_consumer_server):
    """The test consumer (records what it gets, can be told to fail), reset for each test."""
    fake, server = _consumer_server
    fake.reset()
    fake.url = f"{server.url}/hooks"
    return fake


@pytest.fixture
def endpoint(consumer) -> Endpoint:
    """An enabled endpoint subscribed to every event, pointing at the test consumer."""
    return services.endpoint_create(url=consumer.url, event_types=["*"], description="test consumer")


@pytest.fixture
def api_client(client, api_key):
    """The Django test client with a valid X-API-Key on every call, JSON in and out, every method."""

    class Api:
        def _call(self, method: str, path: str, data=None, **kw):
            body = json.dumps(data) if data is not None and not isinstance(data, (str, bytes)) else data
            return getattr(client, method)(path, data=body, content_type="application/json",
                                           headers={"X-API-Key": api_key, **kw.pop("headers", {})}, **kw)

        def get(self, path, **kw):
            return client.get(path, headers={"X-API-Key": api_key}, **kw)

        def post(self, path, data=None, **kw):
            return self._call("post", path, data, **kw)

        def patch(self, path, data=None, **kw):
            return self._call("patch", path, data, **kw)

        def delete(self, path, **kw):
            return client.delete(path, headers={"X-API-Key": api_key}, **kw)

    return Api()


@pytest.fixture
def broker_down():
    """The Celery broker unreachable (a closed port), as during a Redis outage; restored afterwards."""
    from config.celery import app

    def drop_connections() -> None:
        # Only this app's handles: kombu keeps one pool per broker URL, so the real one is picked up again.
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.broker_url
    drop_connections()
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    yield
    drop_connections()
    app.conf.broker_url = saved
