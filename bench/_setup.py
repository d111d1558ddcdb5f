"""Shared set-up for the benchmark scripts: a dedicated, freshly migrated database.

Benchmarks never touch the demo or test databases: they use BENCH_DATABASE_URL (default
postgres://chipfarm:chipfarm@127.0.0.1:5432/chipfarm_bench), created and migrated on first use.
"""

from __future__ import annotations

import contextlib
import functools
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_DB = os.environ.get("BENCH_DATABASE_URL", "postgres://chipfarm:chipfarm@127.0.0.1:5432/chipfarm_bench")


def setup_django(*, flush: bool = True, database_url: str | None = None) -> None:
    """Django on the bench database (or `database_url`, another bench database), created and migrated."""
    import psycopg

    url = database_url or BENCH_DB
    name = url.rsplit("/", 1)[1]
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # As production runs: with DEBUG (the settings' default, for a developer's machine) Django's cursor records
    # and times every statement, which cost the route bench 40 % of its decisions a second.
    os.environ.setdefault("DEBUG", "false")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if flush:
        call_command("flush", interactive=False, verbosity=0)


def analyze() -> None:
    """Statistics for the planner once the bench's rows are in, as autovacuum gathers them in production (this
    machine's PostgreSQL runs with autovacuum off: without them the planner looked a contact's binding up through
    the index of a chip's current bindings, filtering each on the contact, instead of the contact's own index)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def median(values: list[float]) -> float:
    return statistics.median(values)


class QueryCounter:
    """Counts the SQL statements run on the calling thread's connection while `counting()` is active; the
    counts of every thread add up in `total` (benches print queries per operation)."""

    def __init__(self) -> None:
        import threading

        self.total = 0
        self._lock = threading.Lock()

    def _wrap(self, execute, sql, params, many, context):
        with self._lock:
            self.total += 1
        return execute(sql, params, many, context)

    def counting(self):
        from django.db import connection

        return connection.execute_wrapper(self._wrap)


class NullGateway:
    """A gateway (instances.gateway's interface) that accepts every send at once, in process: with it a bench
    measures the pool's own work (bench/warmer_dispatch.py --null-gateway), or puts a world behind the seam
    (bench/_pool_world.py)."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self._n = 0
        self._lock = threading.Lock()

    def send_text(self, name, *, number, text, delay_ms=None):
        from instances.gateway import SendResult

        with self._lock:
            self._n += 1
            self.texts.append(text)
            n = self._n
        return SendResult(message_id=f"NULL{n:012d}", remote_jid=f"{number}@s.whatsapp.net", status="PENDING",
                          raw={})

    def close(self) -> None:
        pass


class _Worker:
    """A bench thread that lives across rounds, with its own database connection, as an API or worker thread keeps
    its connection between requests (CONN_MAX_AGE): a round measures decisions on warm connections, not a new
    backend's first plans and caches."""

    def __init__(self) -> None:
        import queue

        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from django.db import connection

        while True:
            job = self.jobs.get()
            if job is None:
                connection.close()
                return
            job()


_workers: list[_Worker] = []


def run_threads(n_threads: int, work) -> tuple[float, list]:
    """Run work(i) in n threads, each with its own (already opened) connection; (seconds, results). Thread i is
    the same thread, with the same connection, in every call (`_Worker`)."""
    from django.db import connection

    while len(_workers) < n_threads:
        _workers.append(_Worker())
    results: list = [None] * n_threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads + 1)
    done = threading.Barrier(n_threads + 1)

    def target(i: int) -> None:
        try:
            connection.ensure_connection()  # connecting is not part of the measurement
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)
            barrier.abort()
        finally:
            with contextlib.suppress(threading.BrokenBarrierError):
                done.wait()

    for i in range(n_threads):
        _workers[i].jobs.put(functools.partial(target, i))
    with contextlib.suppress(threading.BrokenBarrierError):  # a worker failed: its error is raised below
        barrier.wait()
    started = time.perf_counter()
    with contextlib.suppress(threading.BrokenBarrierError):
        done.wait()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed, results

