"""What every activation service shares: the task names, queueing a task after commit, the activator client.

Tasks are queued by name (`current_app.send_task`) after commit: our own, so the services need not import the
tasks module that imports them, and chipfarm's `cancel_line`, which activation may not import (DESIGN §11).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction

from activation.client import ActivatorClient

SUBMIT_TASK = "activation.submit_job"
POLL_TASK = "activation.poll_job"
SWEEP_TASK = "activation.sweep_jobs"
# Owned by chipfarm (it holds the Salvy client); sent by name because activation may not import it.
CANCEL_LINE_TASK = "chipfarm.cancel_line"
CANCEL_LINE_REASON = "technical-issues"

# No task waits longer than this in the broker: Redis redelivers unacked messages after its visibility
# timeout, and a worker restart must not strand a job for long. Longer waits are due-at rows (STYLE).
MAX_COUNTDOWN = 60


def send_on_commit(name: str, *, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None,
                   countdown: int | None = None) -> None:
    """Queue the task `name` once the surrounding transaction commits (at once outside one).

    `robust`: a broker outage after the commit is logged, not raised. The committed job keeps its due-at, so
    the sweep re-queues it; the webhook still answers 2xx instead of making Salvy redeliver a handled SMS.
    """
    if countdown is not None and not 0 <= countdown <= MAX_COUNTDOWN:
        raise ValueError(f"countdown {countdown} s is outside 0..{MAX_COUNTDOWN} s")

    def send() -> None:
        current_app.send_task(name, args=args, kwargs=kwargs, countdown=countdown)

    transaction.on_commit(send, robust=True)


_clients: dict[tuple[str, str, float], ActivatorClient] = {}
_clients_lock = threading.Lock()


def activator_client() -> ActivatorClient:
    """The process's activator client for the current settings (httpx clients are thread-safe).

    Building one costs ~70 ms (httpx loads a TLS context), more than the poll it makes; its pooled connection is
    reused by the next submit or poll. Created lazily, so each forked worker process gets its own.
    """
    key = (str(settings.CHIP_ACTIVATOR_URL), str(settings.CHIP_ACTIVATOR_API_KEY),
           float(settings.HTTP_TIMEOUT_SECONDS))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            _clients.clear()  # settings changed (tests): the old client is dropped, not closed under a user
            client = _clients[key] = ActivatorClient(base_url=key[0], api_key=key[1], timeout=key[2])
        return client
