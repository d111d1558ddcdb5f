"""What the HTTP benches share: a light keep-alive client, and the CPU each process group spent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter


class _Answer:
    def __init__(self, status_code: int, content: bytes) -> None:
        self.status_code, self.content = status_code, content

    def json(self):
        return json.loads(self.content)


class StdlibClient:
    """One keep-alive connection (http.client), with the two calls of httpx.Client the bench makes."""

    def __init__(self, base_url: str, timeout: float) -> None:
        import http.client
        from urllib.parse import urlsplit

        url = urlsplit(base_url)
        self.connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)

    def __enter__(self) -> StdlibClient:
        return self

    def __exit__(self, *exc) -> None:
        self.connection.close()

    def _send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> _Answer:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        return _Answer(response.status, response.read())

    def get(self, path: str) -> _Answer:
        return self._send("GET", path)

    def post(self, path: str, *, content: bytes, headers: dict) -> _Answer:
        return self._send("POST", path, content, headers)


def cpu_seconds(groups: dict[str, int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of each process group in `groups` (name → group id), of PostgreSQL's
    processes and of this process (the clients), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    spent = {name: 0.0 for name in (*groups, "postgresql")}
    by_group = {pgid: name for name, pgid in groups.items()}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        name = by_group.get(int(fields[2])) or ("postgresql" if cmdline.startswith(b"postgres") else None)
        if name is not None:
            spent[name] += seconds
    times = os.times()
    spent["clients"] = times.user + times.system
    return spent


def cpu_per_request(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {name: (after[name] - before[name]) / n for name in after}


def start_consumer(port: int, secret: str, log, cwd) -> subprocess.Popen:
    """The business app's end of the outbox (sandbox.consumer, verifying each delivery's signature), in a process
    and session of its own so that its CPU is counted apart."""
    cmd = [sys.executable, "-m", "sandbox.consumer", "--port", str(port), "--secret", secret, "--log-level", "warning"]
    return subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_told(*, started: float, timeout: float = 300.0) -> float:
    """--subscribed: seconds until every event recorded for the app has been delivered to it (or given up)."""
    from outbox.models import Delivery

    while Delivery.objects.filter(status=Delivery.Status.PENDING).exists():
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"deliveries still pending after {timeout:.0f} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def consumer_accepted(consumer_url: str) -> Counter:
    """--subscribed: how many times the consumer accepted each event (by its webhook-id)."""
    import httpx

    got = httpx.get(consumer_url + "/__fake__/received", timeout=30).json()["received"]
    return Counter(r["headers"].get("webhook-id") for r in got if r["status"] == 204)


def told_report(ids: Counter, expected: Counter) -> tuple[str, bool]:
    """--subscribed: what the app was told — events by type against the events applied, deliveries by status,
    and the distinct events the consumer accepted (`ids`: each once, by its webhook-id)."""
    from django.db.models import Count

    from outbox.models import Delivery, Event

    by_type = Counter(dict(Event.objects.order_by().values_list("type").annotate(n=Count("id"))))
    statuses = Counter(dict(Delivery.objects.order_by().values_list("status").annotate(n=Count("id"))))
    ok = (all(by_type[k] == v for k, v in expected.items()) and set(statuses) == {Delivery.Status.DELIVERED}
          and len(ids) == sum(by_type.values()) and max(ids.values(), default=1) == 1)
    return (f"told the app: events {dict(sorted(by_type.items()))} (expected {dict(sorted(expected.items()))}), "
            f"deliveries {dict(statuses)}, accepted by the consumer {len(ids)} distinct, "
            f"{sum(ids.values()) - len(ids)} twice"), ok
