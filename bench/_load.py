"""What the HTTP benches share: a light keep-alive client, and the CPU each process group spent."""

from __future__ import annotations

import json
import os


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
