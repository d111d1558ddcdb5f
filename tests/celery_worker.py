"""Start a real `celery worker` process on the test database, on a queue of its own (tests' shared helper)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def celery_worker(*, prefix: str, log_dir: Path, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, Path]]:
    """Yield (queue, log path) once the worker answers a ping; stop it afterwards.

    The worker reads its settings from the environment, as in production: the test database's URL, its own
    default queue, plus `extra_env` (e.g. a fake provider's URL). Tests that use it must commit their data.
    """
    from django.db import connection

    from config.celery import app

    queue = f"{prefix}-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_TASK_DEFAULT_QUEUE": queue,
        "PGAPPNAME": queue,  # libpq names the worker's sessions after its queue (pg_stat_activity.application_name)
        **(extra_env or {}),
    }
    log_path = log_dir / f"{queue}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queue, "--pool=solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO", "-n", f"{queue}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while not app.control.ping(destination=[f"{queue}@{os.uname().nodename}"], timeout=1.0):
                if proc.poll() is not None:
                    raise RuntimeError(f"celery worker exited with {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RuntimeError("celery worker did not answer a ping within 60 s")
            yield queue, log_path
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
