"""A consumer of the pool's webhooks (the business app's side, for the demo and the tests).

It records every POST it gets (path, headers, exact body) and answers 204, or what it was told to answer for a
while (500 while "down", 410 to unsubscribe). With a secret it also verifies the Standard Webhooks signature
and answers 401 when it does not hold, as a real consumer must.

HTTP controls under ``/__fake__/`` (JSON body = the method's keyword arguments):

====================================  ===========================================================
``POST /__fake__/fail``               ``{"status": 500, "n": null}`` (null: until ``recover``)
``POST /__fake__/recover``            —
``POST /__fake__/latency``            ``{"seconds": 0.5}``
``POST /__fake__/reset``              —
``GET  /__fake__/received``           ``{"received": [{"path", "headers", "body", "status"}, ...]}``
====================================  ===========================================================
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["FakeConsumer", "Received", "main"]

logger = logging.getLogger("sandbox.consumer")


def _log_event(body: bytes, headers: dict[str, str], status: int) -> None:
    """What a newcomer watching `make run` sees: each event the business app would get."""
    try:
        event = json.loads(body)
        data = event.get("data") or {}
        summary = ", ".join(f"{k}={data[k]}" for k in ("status", "text", "to", "kind", "reason") if data.get(k))
        logger.info("consumer got %s %s (%s) -> %s", event.get("type"), headers.get("webhook-id"), summary, status)
    except (ValueError, AttributeError):
        logger.info("consumer got a non-JSON body -> %s", status)

DEFAULT_PORT = 8085


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what this consumer answered

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


class FakeConsumer:
    """In-memory webhook receiver; thread-safe between uvicorn's thread and the test's."""

    def __init__(self, *, secret: str | None = None) -> None:
        self.secret = secret
        self._lock = threading.Lock()
        self._received: list[Received] = []
        self._fail_status: int | None = None
        self._fail_left: int | None = None
        self._latency = 0.0
        # Bumped by reset(): a request still waiting out its latency then (its sender gave up) is not recorded
        # afterwards, so it never shows up among the next test's webhooks.
        self._generation = 0
        self.app = self._build_app()

    def reset(self) -> None:
        with self._lock:
            self._generation += 1
            self._received.clear()
            self._fail_status, self._fail_left, self._latency = None, None, 0.0
        self.secret = None

    def fail(self, status: int = 500, n: int | None = None) -> None:
        """Answer `status` to the next `n` webhooks (None: until `recover()`)."""
        with self._lock:
            self._fail_status, self._fail_left = int(status), None if n is None else int(n)

    def recover(self) -> None:
        with self._lock:
            self._fail_status, self._fail_left = None, None

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def accepted(self) -> list[Received]:
        """The webhooks this consumer answered with a 2xx."""
        return [r for r in self.received if 200 <= r.status < 300]

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            if self._fail_status is not None:
                status = self._fail_status
                if self._fail_left is not None:
                    self._fail_left -= 1
                    if self._fail_left <= 0:
                        self._fail_status, self._fail_left = None, None
                return status
        if self.secret:
            from standardwebhooks.webhooks import Webhook, WebhookVerificationError

            try:
                Webhook(self.secret).verify(body, headers)
            except (WebhookVerificationError, ValueError):
                return 401
        return 204

    async def _webhook(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            latency, generation = self._latency, self._generation
        if latency:
            await asyncio.sleep(latency)
            with self._lock:
                if generation != self._generation:  # reset meanwhile: a request of before, not kept
                    return Response(status_code=204)
        status = self._answer(headers, body)
        with self._lock:
            self._received.append(Received(path=request.url.path, headers=headers, body=body, status=status))
        _log_event(body, headers, status)
        return Response(status_code=status) if status == 204 else JSONResponse({"status": status}, status_code=status)

    async def _control(self, request: Request) -> Response:
        action = request.path_params["action"]
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
            if action == "fail":
                self.fail(int(body.get("status", 500)), body.get("n"))
            elif action == "recover":
                self.recover()
            elif action == "latency":
                self.set_latency(float(body.get("seconds", 0)))
            elif action == "reset":
                self.reset()
            elif action == "received":
                return JSONResponse({"received": [{**asdict(r), "body": r.body.decode("utf-8", "replace")}
                                                  for r in self.received]})
            else:
                return JSONResponse({"error": f"unknown control {action!r}"}, status_code=404)
        except (AttributeError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad control request: {exc!r}"}, status_code=400)
        return JSONResponse({"ok": True})

    def _build_app(self) -> Starlette:
        app = Starlette(routes=[
            Route("/__fake__/{action}", self._control, methods=["GET", "POST"]),
            Route("/{path:path}", self._webhook, methods=["POST"]),
        ])
        app.state.fake = self
        return app


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.consumer --port 8085 [--secret whsec_...]``, then subscribe http://127.0.0.1:8085/hooks."""
    import uvicorn

    parser = argparse.ArgumentParser(description="A webhook consumer that records what it gets (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--secret", default=None, help="verify signatures with this whsec_ secret")
    parser.add_argument("--log-level", default="info", help="uvicorn's (warning: no line per request)")
    args = parser.parse_args(argv)
    uvicorn.run(FakeConsumer(secret=args.secret).app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
