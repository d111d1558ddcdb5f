"""A fake Evolution API 2.3.7 server (Starlette): the contract in ../shared/contracts/, quirks included.

Beyond the routes (:mod:`.api`) and the world (:mod:`.world`), it reproduces what the first build's fake did not:
``messages.update`` errors carry no error code; ``fetchInstances`` keeps the last final close's code; webhooks can
be lost; delete of an open instance logs out first (a 401 close the pool caused); a dead-socket instance reports
``open``, fails sends with "Connection Closed" and refuses delete with 400; a deleted instance answers 404 on every
route; QR codes live 45 s and rotate; an instance that cannot reach WhatsApp says ``close`` while it floods
``connecting`` events.

Driving it:

* Python: ``fake = FakeEvolution(); server = FakeServer(fake.app).start(); fake.server_url = server.url`` then the
  controls (``link``, ``scan``, ``close``, ``kill_socket``, ``restrict``, ``inbound``, ``ack``, ``qr``,
  ``drop_webhooks``, ``forget``, ``set_latency``, ``fail_next``, ...); inspect ``sent_messages``, ``deliveries``,
  ``requests``. Call them from any thread except the server's own event loop.
* HTTP (another process, e.g. ``manage.py sandbox``): the same controls under ``/__fake__/`` (no apikey).
* Standalone: ``python -m sandbox.evolution --port 8081`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.evolution.api import ApiMixin
from sandbox.evolution.controls import ControlsMixin
from sandbox.evolution.hooks import WebhookMixin
from sandbox.evolution.model import ApiError, FakeInstance, Unknown, copy, not_found
from sandbox.evolution.world import WorldMixin


class FakeEvolution(ControlsMixin, ApiMixin, WorldMixin, WebhookMixin):
    """In-memory Evolution API 2.3.7. ``.app`` is the Starlette app; every control is a thread-safe method and an
    HTTP route under ``/__fake__/``. ``webhook_url`` is the global fallback, used only for instances without an
    (enabled) per-instance webhook."""

    def __init__(self, api_key: str = "dev-evolution-key", webhook_url: str | None = None, *,
                 server_url: str = "http://127.0.0.1:8081", auto_qr: bool = False) -> None:
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.server_url = server_url          # set it to FakeServer.url: it goes into envelopes' server_url
        self.auto_qr = auto_qr                # a new socket produces its first QR at once
        self.wall_clock = time.time
        self.hang_seconds = 30.0              # how long a fail_next(status="timeout") call hangs (cut by reset)
        self._lock = threading.RLock()
        self._generation = 0
        self._in_flight = 0
        self._init_hooks()
        self._reset_state()
        self.app = Starlette(routes=self._real_routes() + self._control_routes(),
                             exception_handlers={404: self._route_not_found, 405: self._route_not_found})
        self.app.state.fake = self

    def _reset_state(self) -> None:
        self._init_world()
        self._drop, self._drop_events = 0, None
        self._instances: dict[str, FakeInstance] = {}
        self._latency = 0.0
        self._failures: collections.deque[tuple[int | str, str | None]] = collections.deque()
        self._sent: list[dict[str, Any]] = []
        self._sent_by_id: dict[str, dict[str, Any]] = {}
        self._deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=50_000)
        self._requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=100_000)
        self._route_counts: collections.Counter[str] = collections.Counter()
        self._peak = self._in_flight
        self._not_on_whatsapp: set[str] = set()

    # ------------------------------------------------------------------------------------- inspection

    @property
    def sent_messages(self) -> list[dict[str, Any]]:
        """Every accepted sendText: ``{instance, number, text, key_id, remote_jid, delay, message_id}``."""
        with self._lock:
            return [dict(m) for m in self._sent]

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """Every webhook delivery: ``{url, event, instance, status_code, attempts, error, headers, payload}``
        (``status_code`` None when no HTTP answer was obtained, or when the delivery was dropped)."""
        with self._lock:
            return [dict(d) for d in self._deliveries]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every real-route request that reached the fake: ``{method, path, route, instance, status}``."""
        with self._lock:
            return [dict(r) for r in self._requests]

    def request_count(self, route: str | None = None, instance: str | None = None) -> int:
        """How many real-route calls arrived (route names: create, connect, connectionState, fetchInstances,
        restart, logout, delete, setWebhook, findWebhook, sendText)."""
        with self._lock:
            if instance is None:
                return sum(self._route_counts.values()) if route is None else self._route_counts[route]
            return sum(1 for r in self._requests
                       if r["instance"] == instance and (route is None or r["route"] == route))

    @property
    def peak_in_flight(self) -> int:
        with self._lock:
            return self._peak

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def instance_info(self, name: str) -> dict[str, Any]:
        """A snapshot: the fetchInstances row plus ``state`` (live), ``webhook`` (stored row or None), ``qr``."""
        with self._lock:
            inst = self._get(name)
            return {**inst.row(), "state": inst.state, "webhook": copy(inst.webhook), "qr": inst.qr_object(),
                    "socket_dead": inst.socket_dead}

    def instance_names(self) -> list[str]:
        with self._lock:
            return list(self._instances)

    # ------------------------------------------------------------------------------------- controls

    def reset(self) -> None:
        """Forget everything; hanging calls are released."""
        with self._lock:
            self._generation += 1
            self._reset_state()

    def reset_stats(self) -> None:
        """Clear request/delivery logs and the in-flight peak, keep instances and messages."""
        with self._lock:
            self._deliveries.clear()
            self._requests.clear()
            self._route_counts.clear()
            self._peak = self._in_flight

    def set_latency(self, seconds: float) -> None:
        """Every real route sleeps this long first (asyncio.sleep: concurrent calls overlap)."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, n: int, status: int | str = 500, *, route: str | None = None) -> None:
        """The next ``n`` real-route calls (optionally only those of ``route``) fail with ``status`` and a body of
        that route's kind: 200 answers ``{"error": true, "message": "[object Object]"}``, 500 "Connection Closed",
        503 ``["Error: Service Unavailable"]``; ``0``/``"timeout"`` hangs for ``hang_seconds`` (until reset)."""
        with self._lock:
            for _ in range(int(n)):
                self._failures.append((status, route))

    def mark_not_on_whatsapp(self, *numbers: str) -> None:
        """sendText to these numbers answers 400 with ``[{jid, exists: false, number}]``."""
        with self._lock:
            self._not_on_whatsapp.update("".join(ch for ch in n if ch.isdigit()) for n in numbers)

    def forget(self, name: str) -> None:
        """The instance vanishes behind the pool's back (deleted elsewhere, Evolution's database lost): no webhook;
        every per-instance route answers 404 and fetchInstances no longer lists it (field notes §2)."""
        with self._lock:
            self._get(name)
            self._instances.pop(name)

    def add_instances(self, names: Iterable[str], state: str = "open") -> None:
        """Bulk-create instances (no webhook, no events) for benchmarks; existing names are left alone."""
        with self._lock:
            for i, name in enumerate(names):
                if name in self._instances:
                    continue
                inst = FakeInstance.new(name)
                inst.state = inst.db_status = state
                if state == "open":
                    inst.owner_jid = f"5511{900000000 + i % 100000000:09d}@s.whatsapp.net"
                    inst.profile_name = name
                    inst.ever_open = True
                self._instances[name] = inst

    # ------------------------------------------------------------------------------------- real routes

    def _real_routes(self) -> list[Route]:
        def r(path: str, route: str, handler: Callable[[Request], Awaitable[Response]], method: str) -> Route:
            return Route(path, self._wrap(route, handler), methods=[method])

        return [
            Route("/", self._welcome, methods=["GET"]),
            r("/instance/create", "create", self._create, "POST"),
            r("/instance/connect/{instance}", "connect", self._connect, "GET"),
            r("/instance/connectionState/{instance}", "connectionState", self._connection_state, "GET"),
            r("/instance/fetchInstances", "fetchInstances", self._fetch_instances, "GET"),
            r("/instance/restart/{instance}", "restart", self._restart, "POST"),
            r("/instance/logout/{instance}", "logout", self._logout, "DELETE"),
            r("/instance/delete/{instance}", "delete", self._delete, "DELETE"),
            r("/webhook/set/{instance}", "setWebhook", self._set_webhook, "POST"),
            r("/webhook/find/{instance}", "findWebhook", self._find_webhook, "GET"),
            r("/message/sendText/{instance}", "sendText", self._send_text, "POST"),
        ]

    def _wrap(self, route: str, handler: Callable[[Request], Awaitable[Response]]
              ) -> Callable[[Request], Awaitable[Response]]:
        """Accounting (requests, in-flight peak), injected latency and queued failures around a real route."""

        async def endpoint(request: Request) -> Response:
            record = {"method": request.method, "path": request.url.path, "route": route,
                      "instance": request.path_params.get("instance") or request.query_params.get("instanceName"),
                      "status": None}
            with self._lock:
                self._in_flight += 1
                self._peak = max(self._peak, self._in_flight)
                self._requests.append(record)
                self._route_counts[route] += 1
                generation = self._generation
                latency = self._latency
                failure = self._take_failure(route)
            try:
                if latency:
                    await self._sleep(latency, generation)
                try:
                    if failure is not None:
                        response = await self._failure_response(failure, record["instance"], generation)
                    else:
                        response = await handler(request)
                except ApiError as exc:
                    response = exc.response()
                record["status"] = response.status_code
                return response
            finally:
                with self._lock:
                    self._in_flight -= 1

        return endpoint

    def _take_failure(self, route: str) -> int | str | None:
        for i, (status, only) in enumerate(self._failures):
            if only is None or only == route:
                del self._failures[i]
                return status
        return None

    async def _sleep(self, seconds: float, generation: int) -> None:
        """Sleep, but wake up early when reset() happens (so stopped tests do not leave calls hanging)."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0 and generation == self._generation:
            await asyncio.sleep(min(remaining, 0.05))

    async def _failure_response(self, status: int | str, name: str | None, generation: int) -> Response:
        if status in (0, "timeout"):
            await self._sleep(self.hang_seconds, generation)
            raise ApiError(500, "Connection Closed")
        code = int(status)
        if code == 200:
            return JSONResponse({"error": True, "message": "[object Object]"})
        if code == 401:
            raise ApiError(401, "Unauthorized")
        if code == 404:
            raise not_found(name or "")
        if code == 500:
            raise ApiError(500, "Connection Closed")
        if code == 503:
            raise ApiError(503, ["Error: Service Unavailable"])
        raise ApiError(code, ["Error: simulated failure"])

    async def _route_not_found(self, request: Request, exc: HTTPException) -> Response:
        return ApiError(404, [f"Cannot {request.method} {request.url.path}"]).response()


def build_app(api_key: str | None = None, webhook_url: str | None = None, *, server_url: str | None = None,
              auto_qr: bool = False) -> Starlette:
    """A ready ASGI app (``app.state.fake`` is the :class:`FakeEvolution`). Defaults come from the environment
    (``EVOLUTION_API_KEY``, ``EVOLUTION_WEBHOOK_URL``) so ``manage.py sandbox`` can pass settings through."""
    fake = FakeEvolution(
        api_key=api_key or os.environ.get("EVOLUTION_API_KEY", "dev-evolution-key"),
        webhook_url=webhook_url if webhook_url is not None else (os.environ.get("EVOLUTION_WEBHOOK_URL") or None),
        server_url=server_url or "http://127.0.0.1:8081",
        auto_qr=auto_qr,
    )
    return fake.app


def main(argv: list[str] | None = None) -> None:
    """Run the fake in the foreground: ``python -m sandbox.evolution --port 8081``."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Fake Evolution API 2.3.7 on loopback")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--api-key", default=None, help="global apikey (default $EVOLUTION_API_KEY or dev key)")
    parser.add_argument("--webhook-url", default=None, help="global fallback webhook URL")
    parser.add_argument("--auto-qr", action="store_true", help="connect produces a QR at once")
    args = parser.parse_args(argv)
    app = build_app(args.api_key, args.webhook_url, server_url=f"http://{args.host}:{args.port}",
                    auto_qr=args.auto_qr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="off",
                backlog=4096)


__all__ = ["FakeEvolution", "Unknown", "build_app", "main"]
