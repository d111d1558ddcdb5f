"""Fixtures for activation: the fake activator and fake Salvy on loopback, signed Salvy deliveries, a recorder of
the tasks sent to the broker, an in-process runner for them on a frozen clock, and a Celery worker of our own that
can reach the fake activator."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import time_machine
from django.utils import timezone

from activation import services
from activation.models import ActivationJob
from activation.signing import signed_headers
from chips.models import Chip
from sandbox.activator import FakeActivator
from sandbox.salvy import FakeSalvy
from sandbox.server import FakeServer
from tests.factories import PATHS, chip_in_state, chip_walk

ROOT = Path(__file__).resolve().parents[2]
ACTIVATOR_KEY = "test-activator-key"
SALVY_TOKEN = "test-salvy-token"
SALVY_SECRET = "whsec_" + base64.b64encode(b"test-salvy-webhook-secret").decode()
EVOLUTION_URL = "http://evolution.test"
URL = "/webhooks/salvy"
# A Tuesday afternoon in UTC; the clock is frozen there and moved by hand.
START = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


# --- the fakes ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def _activator_server():
    fake = FakeActivator(api_key=ACTIVATOR_KEY)
    with FakeServer(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake_activator(_activator_server, settings) -> FakeActivator:
    """The fake VPS activator on loopback, reset for each test; settings point at it."""
    fake, server = _activator_server
    fake.reset()
    settings.CHIP_ACTIVATOR_URL = server.url
    settings.CHIP_ACTIVATOR_API_KEY = ACTIVATOR_KEY
    settings.EVOLUTION_API_URL = EVOLUTION_URL
    return fake


@pytest.fixture(scope="session")
def _salvy_server():
    fake = FakeSalvy(token=SALVY_TOKEN, webhook_secret=SALVY_SECRET)
    with FakeServer(fake.app) as server:
        yield fake, server
    fake.close()


@pytest.fixture
def fake_salvy(_salvy_server, settings) -> FakeSalvy:
    """The fake Salvy on loopback, reset, delivering nowhere until a test sets `webhook_url`."""
    fake, server = _salvy_server
    fake.reset()
    fake.webhook_url = None
    settings.SALVY_API_URL = server.url
    settings.SALVY_API_TOKEN = SALVY_TOKEN
    settings.SALVY_WEBHOOK_SECRET = SALVY_SECRET
    return fake


@pytest.fixture
def make_salvy_chip(fake_salvy, _salvy_server) -> Callable[..., Chip]:
    """A line bought from the fake Salvy and a chip for it, walked to `status` through real transitions."""
    url = _salvy_server[1].url

    def _make(status: str = Chip.Status.PENDING) -> Chip:
        response = httpx.post(f"{url}/api/v2/virtual-phone-accounts", json={"areaCode": 11, "name": "pool"},
                              headers={"Authorization": f"Bearer {SALVY_TOKEN}"}, timeout=5)
        response.raise_for_status()
        line = response.json()
        chip = Chip.objects.create(area_code="11", phone=line["phoneNumber"], provider_line_id=line["id"])
        chip.instance_name = f"chip-{chip.pk}"
        chip.save()
        return chip_walk(chip=chip, transitions=PATHS[status])

    return _make


# --- Salvy deliveries -----------------------------------------------------------------------------------------

def sms_envelope(chip: Chip | None = None, *, sms_id: str | None = None, code: str | None = "123456",
                 text: str | None = None, line_id: str | None = None, phone: str | None = None) -> dict[str, Any]:
    """An `sms.received` envelope shaped like contracts/evolution-and-salvy.md §7.3."""
    if text is None:
        text = f"Seu código do WhatsApp: {code[:3]}-{code[3:]}. Não compartilhe." if code else "Promoção!"
    return {
        "type": "sms.received",
        "timestamp": timezone.now().isoformat(),
        "data": {
            "id": sms_id or str(uuid.uuid4()),
            "virtualPhoneAccountId": line_id if line_id is not None else (chip.provider_line_id if chip else ""),
            "receivedAt": timezone.now().isoformat(),
            "originPhoneNumber": "23456",
            "destinationPhoneNumber": phone if phone is not None else (chip.phone if chip else ""),
            "message": text,
            "detections": {"whatsapp": {"verificationCode": code}} if code else {},
        },
    }


@pytest.fixture
def salvy(client, settings, django_capture_on_commit_callbacks):
    """POST signed Salvy deliveries to /webhooks/salvy with the Django test client.

    On-commit callbacks run (they queue tasks, which `sent_tasks` records), as they would after a real commit.
    """
    settings.SALVY_WEBHOOK_SECRET = SALVY_SECRET

    class Salvy:
        def post(self, envelope: dict[str, Any] | None = None, *, body: bytes | None = None,
                 svix_id: str | None = None, secret: str = SALVY_SECRET, timestamp: int | None = None,
                 headers: dict[str, str] | None = None):
            raw = body if body is not None else json.dumps(envelope).encode()
            msg_id = svix_id or f"msg_{uuid.uuid4().hex}"
            sent_headers = headers if headers is not None else signed_headers(secret, msg_id, raw,
                                                                               timestamp=timestamp)
            with django_capture_on_commit_callbacks(execute=True):
                return client.post(URL, data=raw, content_type="application/json", headers=sent_headers)

    return Salvy()


@pytest.fixture
def pending_chip(db) -> Chip:
    return chip_in_state(status=Chip.Status.PENDING)


# --- the broker boundary --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SentTask:
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    countdown: float | None
    sent_at: datetime
    options: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def sent_tasks(monkeypatch) -> list[SentTask]:
    """Every task sent to the broker, recorded here instead of published (nothing reaches Redis).

    `Celery.send_task` is the boundary between this process and the others: activation queues its own next step
    there (by name, after commit) and asks chipfarm to cancel a Salvy line (`chipfarm.cancel_line`, an app it may
    not import). Recording at that boundary lets a test assert what was asked of whom, with which countdown, and
    run the steps itself (TaskRunner). Our database, our services and the activator's HTTP stay real.
    """
    from config.celery import app

    sent: list[SentTask] = []

    def send_task(name: str, args: Any = None, kwargs: Any = None, countdown: float | None = None,
                  **options: Any) -> None:
        sent.append(SentTask(name, tuple(args or ()), dict(kwargs or {}), countdown, timezone.now(), options))

    monkeypatch.setattr(app, "send_task", send_task)
    return sent


# The services the activation tasks call (activation/tasks.py: one service per task).
RUNNABLE: dict[str, Callable[..., str]] = {
    services.SUBMIT_TASK: lambda job_id: services.job_submit(job_id=job_id),
    services.POLL_TASK: lambda job_id: services.job_poll(job_id=job_id),
}


class TaskRunner:
    """A worker without Celery: runs the recorded activation tasks in order, each by calling the service its task
    calls, after moving the frozen clock to when the task was due (sent at + countdown)."""

    def __init__(self, sent: list[SentTask], traveller: time_machine.Traveller, capture) -> None:
        self.sent = sent
        self.traveller = traveller
        self.capture = capture
        self.cursor = 0
        self.ran: list[tuple[SentTask, str]] = []

    def pending(self) -> list[SentTask]:
        return [task for task in self.sent[self.cursor:] if task.name in RUNNABLE]

    def drop_pending(self) -> list[SentTask]:
        """Lose the queued tasks, as a worker that dies with them does."""
        lost = self.pending()
        self.cursor = len(self.sent)
        return lost

    def run_next(self) -> tuple[str, str]:
        while self.sent[self.cursor].name not in RUNNABLE:
            self.cursor += 1
        task = self.sent[self.cursor]
        self.cursor += 1
        due = task.sent_at + timedelta(seconds=task.countdown or 0)
        if due > timezone.now():
            self.traveller.move_to(due)
        with self.capture(execute=True):
            result = RUNNABLE[task.name](*task.args, **task.kwargs)
        self.ran.append((task, result))
        return task.name, result

    def run_until_idle(self, limit: int = 200) -> list[tuple[str, str]]:
        results = []
        while self.pending():
            assert len(results) < limit, f"more than {limit} tasks: {results[-5:]}"
            results.append(self.run_next())
        return results


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


@pytest.fixture
def runner(sent_tasks, clock, django_capture_on_commit_callbacks) -> TaskRunner:
    return TaskRunner(sent_tasks, clock, django_capture_on_commit_callbacks)


@pytest.fixture
def start_activation(salvy, sent_tasks, fake_activator):
    """Deliver a WhatsApp code for `chip` and return its queued job."""

    def _start(chip: Chip, **envelope: Any) -> ActivationJob:
        response = salvy.post(sms_envelope(chip, **envelope))
        assert response.status_code == 200, response.content
        assert response.json()["status"] == "job_created", response.json()
        return ActivationJob.objects.get(pk=response.json()["job_id"])

    return _start


# --- a Celery worker that reaches the fake activator ----------------------------------------------------------

@pytest.fixture(scope="session")
def activation_worker(django_db_setup, django_db_blocker, tmp_path_factory, _salvy_server, _evolution_server,
                      live_server):
    """A real `celery worker` process on the test database, on a queue of its own, configured (through its
    environment, as in production) to call a fake activator started here.

    The shared `celery_worker_queue` worker is already running with the default activator URL; this one is
    started the same way with CHIP_ACTIVATOR_URL / CHIP_ACTIVATOR_API_KEY added. Tests that use it must commit
    their data (`django_db(transaction=True)`).
    """
    from tests.celery_worker import celery_worker

    # Scan mode: the fake activator fetches the pool's link (served by live_server) and scans what it got there.
    fake = FakeActivator(api_key=ACTIVATOR_KEY, scan_via=_evolution_server[1].url)
    server = FakeServer(fake.app).start()
    env = {
        "CHIP_ACTIVATOR_URL": server.url,
        "CHIP_ACTIVATOR_API_KEY": ACTIVATOR_KEY,
        # Provisioning in the worker buys from the fake Salvy and creates instances on the fake Evolution.
        "SALVY_API_URL": _salvy_server[1].url,
        "SALVY_API_TOKEN": SALVY_TOKEN,
        "EVOLUTION_API_URL": _evolution_server[1].url,
        "EVOLUTION_API_KEY": _evolution_server[0].api_key,
        # The links the worker hands to the activator point at the pool the test serves.
        "PUBLIC_BASE_URL": live_server.url,
        "EVOLUTION_WEBHOOK_URL": f"{live_server.url}/webhooks/evolution",
    }
    try:
        with celery_worker(prefix="chipfarm-activation-test", log_dir=tmp_path_factory.mktemp("celery"),
                           extra_env=env) as (queue, log_path):
            yield SimpleNamespace(queue=queue, fake=fake, url=server.url, log=log_path,
                                  evolution_url=_evolution_server[1].url)
    finally:
        server.stop()


@pytest.fixture
def routed_to_worker(activation_worker):
    """Tasks this process queues without naming a queue (the webhook's on-commit submit) go to `activation_worker`'s
    queue, as `apply_async(queue=...)` would; the worker's own follow-ups go there already (its default queue)."""
    from config.celery import app

    previous = app.conf.task_default_queue
    app.conf.task_default_queue = activation_worker.queue
    yield activation_worker.queue
    app.conf.task_default_queue = previous
