"""Fake VPS chip activator speaking contracts/chip-activator.md (``X-API-Key``, Portuguese field names).

Jobs advance on *status polls* instead of wall-clock time so tests run in milliseconds and deterministically:

- a job is ``queued`` until its first poll; every non-final poll answers ``running``;
- in the default mode the N-th poll (N = `succeed_after`, default 3; 0 or 1 = the first poll) answers ``success``;
- `fail_at(step, screenshot_path)`: the N-th poll answers ``failed`` with that ``step`` and ``screenshot_path``;
- `hang()`: ``running`` forever (the caller's own 10-minute give-up is what gets tested).

A mode is sticky and applies to jobs submitted after it is set (a job keeps the mode it was born with) until
another mode or `reset()`. `queue_full(n)` makes the next n submits answer 503, the activator's "retry later".
Error bodies are FastAPI-style ``{"detail": "..."}`` (the real service's framework is not documented).

HTTP controls under ``/__fake__/`` (JSON body = the method's keyword arguments):

=================================  ===========================================================
``POST /__fake__/succeed-after``   ``{"polls": 2}``
``POST /__fake__/fail-at``         ``{"step": "sms_code", "screenshot_path": "/shots/1.png"}``
``POST /__fake__/hang``            —
``POST /__fake__/queue-full``      ``{"times": 2}``
``POST /__fake__/health``          ``{"status": "degraded"}``
``POST /__fake__/latency``         ``{"seconds": 0.5}``
``POST /__fake__/fail-next``       ``{"n": 1, "status": 500}``
``POST /__fake__/reset``           —
``GET  /__fake__/jobs``            every job, oldest first
=================================  ===========================================================
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["ActivationJob", "FakeActivator", "build_app", "main"]

DEFAULT_API_KEY = "dev-activator-key"
DEFAULT_PORT = 8083
DEFAULT_POLLS = 3

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class ActivationJob:
    """One submitted activation and the mode it was born with (`outcome`: success | failed | hang)."""

    id: str
    numero: str
    codigo_sms: str
    evolution_qr_url: str
    polls: int = 0
    status: str = "queued"
    outcome: str = "success"
    finish_after: int = DEFAULT_POLLS
    step: str | None = None
    screenshot_path: str | None = None
    submitted_at: float = field(default_factory=time.monotonic)
    fetched: list[dict[str, Any]] = field(default_factory=list)  # what it got from evolution_qr_url (scan mode)

    def as_status(self) -> dict[str, Any]:
        messages = {
            "queued": "Na fila de ativação",
            "running": "Ativando número no emulador",
            "success": "Número ativado e conectado à Evolution",
            "failed": f"Falha na etapa {self.step}",
        }
        return {
            "status": self.status,
            "message": messages.get(self.status, self.status),
            "tempo_segundos": int(time.monotonic() - self.submitted_at),
            "step": self.step if self.status == "failed" else None,
            "screenshot_path": self.screenshot_path if self.status == "failed" else None,
        }


def _detail(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class FakeActivator:
    """In-memory activator; thread-safe between uvicorn's thread (the app) and the test's (controls)."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, scan_via: str | None = None) -> None:
        self.api_key = api_key
        #: Scan mode: the base URL of the fake Evolution's controls. A job that would succeed first fetches its
        #: `evolution_qr_url` (the PNG, then the JSON with the pairing code) and "scans" only the code it got there,
        #: as the emulator's camera would; anything wrong on the way fails the job at step "qr_scan".
        self.scan_via = scan_via
        self._lock = threading.Lock()
        self._jobs: dict[str, ActivationJob] = {}
        self._mode: dict[str, Any] = {}
        self._queue_full = 0
        self._health = "healthy"
        self._latency = 0.0
        self._failures: list[int] = []
        self.reset()
        self.app = self._build_app()

    # --- controls -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self._jobs.clear()
            self._mode = {"outcome": "success", "finish_after": DEFAULT_POLLS, "step": None, "screenshot_path": None}
            self._queue_full = 0
            self._health = "healthy"
            self._latency = 0.0
            self._failures.clear()

    def succeed_after(self, polls: int) -> None:
        """New jobs answer ``success`` on their `polls`-th status poll (``running`` before)."""
        with self._lock:
            self._mode = {"outcome": "success", "finish_after": max(1, int(polls)), "step": None,
                          "screenshot_path": None}

    def fail_at(self, step: str, screenshot_path: str) -> None:
        """New jobs answer ``failed`` at `step` with `screenshot_path`, on the poll they would have succeeded."""
        with self._lock:
            self._mode = {**self._mode, "outcome": "failed", "step": step, "screenshot_path": screenshot_path}

    def hang(self) -> None:
        """New jobs stay ``running`` forever."""
        with self._lock:
            self._mode = {**self._mode, "outcome": "hang", "step": None, "screenshot_path": None}

    def queue_full(self, times: int) -> None:
        """The next `times` submits answer 503 (queue full)."""
        with self._lock:
            self._queue_full = max(0, int(times))

    def set_health(self, status: str) -> None:
        with self._lock:
            self._health = status

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([int(status)] * int(n))

    @property
    def jobs(self) -> list[ActivationJob]:
        """Snapshots of every job, oldest first."""
        with self._lock:
            return [replace(job) for job in self._jobs.values()]

    # --- API ------------------------------------------------------------------------------------------------

    def _guard(self, handler: Handler, *, auth: bool = True) -> Handler:
        async def endpoint(request: Request) -> Response:
            with self._lock:
                latency = self._latency
                failure = self._failures.pop(0) if self._failures else None
            if latency:
                await asyncio.sleep(latency)
            if failure is not None:
                return _detail(failure, "injected failure (fake)")
            if auth and request.headers.get("x-api-key") != self.api_key:
                return _detail(401, "Invalid or missing API key")
            return await handler(request)

        return endpoint

    async def _health_route(self, request: Request) -> Response:
        with self._lock:
            running = sum(1 for j in self._jobs.values() if j.status in ("queued", "running"))
            return JSONResponse({"status": self._health, "queue_size": running, "emulator": "fake"})

    async def _queue_route(self, request: Request) -> Response:
        with self._lock:
            queued = [j for j in self._jobs.values() if j.status == "queued"]
            running = [j for j in self._jobs.values() if j.status == "running"]
            current = running[0] if running else None
            return JSONResponse({
                "size": len(queued) + len(running),
                "items": [{"activation_id": j.id, "numero": j.numero, "status": j.status} for j in queued],
                "current": {"activation_id": current.id, "numero": current.numero, "status": current.status}
                if current else None,
            })

    async def _submit(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _detail(422, "body must be JSON")
        if not isinstance(body, dict):
            return _detail(422, "body must be an object")
        numero, codigo, qr_url = body.get("numero"), body.get("codigo_sms"), body.get("evolution_qr_url")
        if not (isinstance(numero, str) and numero.isdigit() and len(numero) in (10, 11)):
            return _detail(422, "numero must be the national number (10-11 digits, no +55)")
        if not (isinstance(codigo, str) and codigo.strip()):
            return _detail(422, "codigo_sms is required")
        if not (isinstance(qr_url, str) and qr_url.strip()):
            return _detail(422, "evolution_qr_url is required")
        with self._lock:
            if self._queue_full > 0:
                self._queue_full -= 1
                return _detail(503, "Fila cheia, tente novamente mais tarde", {"Retry-After": "10"})
            job = ActivationJob(id=str(uuid.uuid4()), numero=numero, codigo_sms=codigo, evolution_qr_url=qr_url,
                                outcome=self._mode["outcome"], finish_after=self._mode["finish_after"],
                                step=self._mode["step"], screenshot_path=self._mode["screenshot_path"])
            self._jobs[job.id] = job
        return JSONResponse({"activation_id": job.id, "status": job.status}, status_code=202)

    async def _status(self, request: Request) -> Response:
        with self._lock:
            job = self._jobs.get(request.path_params["activation_id"])
            if job is None:
                return _detail(404, "Activation not found")
            finishing = False
            if job.status not in ("success", "failed"):
                job.polls += 1
                if job.outcome != "hang" and job.polls >= job.finish_after:
                    finishing = job.outcome == "success" and self.scan_via is not None
                    job.status = "running" if finishing else job.outcome
                else:
                    job.status = "running"
        if finishing:
            failure = await self._scan(job)
            with self._lock:
                if failure:
                    job.status, job.step, job.screenshot_path = "failed", "qr_scan", "/shots/qr_scan.png"
                    job.fetched.append({"error": failure})
                else:
                    job.status = "success"
        with self._lock:
            return JSONResponse(job.as_status())

    async def _scan(self, job: ActivationJob) -> str | None:
        """Fetch the link (PNG, then JSON) and scan the code it gave; the reason it failed, or None."""
        import httpx

        async with httpx.AsyncClient(timeout=10) as http:
            try:
                png = await http.get(job.evolution_qr_url)
                if png.status_code != 200 or png.headers.get("content-type") != "image/png":
                    return f"QR link answered {png.status_code} {png.headers.get('content-type')}"
                answer = await http.get(job.evolution_qr_url, headers={"Accept": "application/json"})
                if answer.status_code != 200:
                    return f"QR link answered {answer.status_code}"
                body = answer.json()
                job.fetched.append({"png_bytes": len(png.content), **body})
                scanned = await http.post(f"{self.scan_via.rstrip('/')}/__fake__/scan-code",
                                          json={"code": body.get("code"), "number": f"55{job.numero}"})
            except (httpx.HTTPError, ValueError) as exc:
                return f"QR link unreachable: {exc!r}"
        if scanned.status_code != 200:
            return f"WhatsApp refused the scanned code ({scanned.status_code})"
        return None

    # --- HTTP controls --------------------------------------------------------------------------------------

    @staticmethod
    def _control(action: Callable[[dict[str, Any]], Any]) -> Handler:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else {}
                if not isinstance(body, dict):
                    raise ValueError("control body must be an object")
                result = action(body)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"bad control request: {exc!r}"}, status_code=400)
            return JSONResponse(result if result is not None else {"ok": True})

        return endpoint

    def _build_app(self) -> Starlette:
        g, c = self._guard, self._control

        async def not_found(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            return _detail(status, "Not Found" if status == 404 else "Method Not Allowed")

        routes = [
            Route("/health", g(self._health_route, auth=False), methods=["GET"]),
            Route("/queue", g(self._queue_route), methods=["GET"]),
            Route("/activate", g(self._submit), methods=["POST"]),
            Route("/activate/{activation_id}", g(self._status), methods=["GET"]),
            Route("/__fake__/succeed-after", c(lambda b: self.succeed_after(int(b["polls"]))), methods=["POST"]),
            Route("/__fake__/fail-at", c(lambda b: self.fail_at(str(b["step"]), str(b["screenshot_path"]))),
                  methods=["POST"]),
            Route("/__fake__/hang", c(lambda b: self.hang()), methods=["POST"]),
            Route("/__fake__/queue-full", c(lambda b: self.queue_full(int(b.get("times", 1)))), methods=["POST"]),
            Route("/__fake__/health", c(lambda b: self.set_health(str(b["status"]))), methods=["POST"]),
            Route("/__fake__/latency", c(lambda b: self.set_latency(float(b.get("seconds", 0)))), methods=["POST"]),
            Route("/__fake__/fail-next", c(lambda b: self.fail_next(int(b.get("n", 1)), int(b.get("status", 500)))),
                  methods=["POST"]),
            Route("/__fake__/reset", c(lambda b: self.reset()), methods=["POST"]),
            Route("/__fake__/jobs", c(lambda b: {"jobs": [asdict(j) for j in self.jobs]}), methods=["GET"]),
        ]
        app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
        app.state.fake = self
        return app


def build_app(api_key: str = DEFAULT_API_KEY, *, scan_via: str | None = None) -> Starlette:
    """A fresh fake's app; the FakeActivator itself is `app.state.fake`."""
    return FakeActivator(api_key=api_key, scan_via=scan_via).app


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.activator --port 8083`` (foreground)."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Fake VPS chip activator (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.api_key), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
