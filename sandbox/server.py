"""Run a fake provider (an ASGI app) on loopback, in a background thread or in the foreground.

The fakes speak the outside systems' real HTTP contracts (../shared/contracts/) so the clients, the
tests, the benchmarks and `manage.py sandbox` exercise the same code paths as production.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeServer:
    """`with FakeServer(app) as server: httpx.get(server.url + "/...")` — uvicorn in a daemon thread."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int | None = None,
                 log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self.port = port or free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=self.port, log_level=log_level, access_log=False,
                           lifespan="off", timeout_keep_alive=30, backlog=4096)
        )
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> FakeServer:
        self._thread = threading.Thread(target=self._server.run, name=f"fake-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"fake server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
