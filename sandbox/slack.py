"""Fake Slack incoming webhooks: POST JSON on any path, answer 200 ``ok`` in plain text, record the message.

Any path is accepted so one fake stands for several webhook URLs (``<url>/alerts``, ``<url>/operations``, ...);
`messages` records ``(path, json)`` pairs. Errors mimic Slack: plain-text bodies (``invalid_payload`` for a body
that is not a JSON object with ``text`` or ``blocks``, ``rate_limited`` with ``Retry-After`` on 429).

HTTP controls under ``/__fake__/`` (JSON body = the method's keyword arguments):

====================================  ==============================================
``POST /__fake__/fail-next``          ``{"n": 1, "status": 500}``
``POST /__fake__/rate-limit-next``    ``{"n": 1, "retry_after": 1}``
``POST /__fake__/latency``            ``{"seconds": 0.5}``
``POST /__fake__/reset``              —
``GET  /__fake__/messages``           ``{"messages": [{"path", "json"}, ...]}``
====================================  ==============================================
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

__all__ = ["FakeSlack", "SlackMessage", "build_app", "main"]

DEFAULT_PORT = 8084
_ERRORS = {400: "invalid_payload", 403: "action_prohibited", 404: "no_service", 410: "channel_is_archived",
           429: "rate_limited"}


class SlackMessage(NamedTuple):
    path: str
    json: dict[str, Any]


class FakeSlack:
    """In-memory Slack webhook sink; thread-safe between uvicorn's thread and the test's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._messages: list[SlackMessage] = []
        # Each queued failure is (status, retry_after or None), consumed one per POST.
        self._failures: list[tuple[int, float | None]] = []
        self._latency = 0.0
        self.app = self._build_app()

    def reset(self) -> None:
        with self._lock:
            self._messages.clear()
            self._failures.clear()
            self._latency = 0.0

    def fail_next(self, n: int, status: int = 500) -> None:
        with self._lock:
            self._failures.extend([(int(status), None)] * int(n))

    def rate_limit_next(self, n: int, retry_after: float = 1) -> None:
        with self._lock:
            self._failures.extend([(429, float(retry_after))] * int(n))

    def set_latency(self, seconds: float) -> None:
        with self._lock:
            self._latency = max(0.0, float(seconds))

    @property
    def messages(self) -> list[SlackMessage]:
        with self._lock:
            return list(self._messages)

    def messages_to(self, path: str) -> list[dict[str, Any]]:
        """The payloads posted to one webhook path (e.g. ``"/alerts"``)."""
        return [m.json for m in self.messages if m.path == path]

    async def _webhook(self, request: Request) -> Response:
        with self._lock:
            latency = self._latency
            failure = self._failures.pop(0) if self._failures else None
        if latency:
            await asyncio.sleep(latency)
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
            return PlainTextResponse(_ERRORS.get(status, "internal_error"), status_code=status, headers=headers)
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return PlainTextResponse("invalid_payload", status_code=400)
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return PlainTextResponse("invalid_payload", status_code=400)
        with self._lock:
            self._messages.append(SlackMessage(path=request.url.path, json=payload))
        return PlainTextResponse("ok")

    async def _control(self, request: Request) -> Response:
        action = request.path_params["action"]
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
            if action == "fail-next":
                self.fail_next(int(body.get("n", 1)), int(body.get("status", 500)))
            elif action == "rate-limit-next":
                self.rate_limit_next(int(body.get("n", 1)), float(body.get("retry_after", 1)))
            elif action == "latency":
                self.set_latency(float(body.get("seconds", 0)))
            elif action == "reset":
                self.reset()
            elif action == "messages":
                return JSONResponse({"messages": [m._asdict() for m in self.messages]})
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


def build_app() -> Starlette:
    """A fresh fake's app; the FakeSlack itself is `app.state.fake`."""
    return FakeSlack().app


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.slack --port 8084`` then SLACK_WEBHOOK_URL=http://127.0.0.1:8084/alerts."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Fake Slack incoming webhooks (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(), host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
