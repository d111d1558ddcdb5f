"""Fake Salvy: the §7.2 virtual-phone-account API plus Svix-signed `sms.received` webhooks (§7.3).

Runs as a Starlette app (`FakeSalvy().app`, served by `FakeServer` in tests or `main()` in the foreground). It
speaks the v2 paths with Salvy's shapes: ``Authorization: Bearer <token>`` (401 otherwise), error bodies
``{"code", "message", "publicDetails"}``, account and SMS objects as documented, bare-array lists.

Behaviours chosen where the docs are silent (assumptions to confirm against the live API):

- a provision in a DDD without stock is 422 ``area_code_unavailable``; a malformed body is 400 ``bad_request``;
- DELETE accepts ``reason`` from the JSON body or the query string and answers 204; cancelling a line twice is
  409 ``already_canceled``;
- phone numbers are ``+55<DDD>9 and eight digits``, unique for the fake's lifetime (the counter survives `reset()` and
  starts at a random offset, so a restarted sandbox does not hand out numbers a database already holds).

Test controls (ours, never Salvy's) are Python methods and, for other processes, HTTP routes under ``/__fake__/``
whose JSON body holds the method's keyword arguments:

======================================  =====================================================================
``POST /__fake__/stock``                ``{"area_code": 11, "available": false}`` → `set_stock`
``POST /__fake__/latency``              ``{"seconds": 0.5}`` → `set_latency` (API routes only)
``POST /__fake__/fail-next``            ``{"n": 2, "status": 500}`` → `fail_next`
``POST /__fake__/sms``                  ``{"line_id", "text", "code", "sms_id", "svix_id", "times"}`` → `deliver_sms`
``POST /__fake__/webhook``              ``{"url": "http://..." | null, "secret": "whsec_..."?}`` → where to deliver
``POST /__fake__/reset``                → `reset`
``GET  /__fake__/state``                lines, inboxes, canceled, deliveries, stock
======================================  =====================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from activation.signing import signed_headers

__all__ = ["DEFAULT_AREA_CODES", "DEFAULT_WEBHOOK_SECRET", "DeliveredSms", "FakeSalvy", "WebhookDelivery",
           "build_app", "main"]

DEFAULT_TOKEN = "dev-salvy-token"
DEFAULT_WEBHOOK_SECRET = "whsec_ZGV2LXNhbHZ5LXdlYmhvb2stc2VjcmV0"  # base64("dev-salvy-webhook-secret")
DEFAULT_PORT = 8082
#: DDD → in stock. One DDD out of stock by default so `available=true` filtering is observable.
DEFAULT_AREA_CODES: dict[int, bool] = {11: True, 21: True, 31: True, 41: True, 51: True, 61: True, 71: True,
                                       81: True, 19: False}
SMS_ORIGIN = "23456"  # a short code, like the one in Salvy's webhook example
PREFIX = "/api/v2/virtual-phone-accounts"

_ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
                422: "unprocessable_entity", 429: "too_many_requests", 500: "internal_server_error",
                502: "bad_gateway", 503: "service_unavailable", 504: "gateway_timeout"}
_CANCEL_REASONS = ("unnecessary", "whatsapp-ban", "technical-issues", "company-canceled")

Handler = Callable[[Request], Awaitable[Response]]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, code: str | None = None, message: str = "", details: dict[str, Any] | None = None) -> Response:
    return JSONResponse({"code": code or _ERROR_CODES.get(status, "error"), "message": message or code or "error",
                         "publicDetails": details or {}}, status_code=status)


@dataclass(frozen=True)
class WebhookDelivery:
    """One POST the fake made to the webhook URL. `status_code` is None when the receiver could not be reached."""

    svix_id: str | None
    sms_id: str | None
    url: str
    status_code: int | None
    error: str | None = None


@dataclass(frozen=True)
class DeliveredSms:
    """What `deliver_sms` did: the inbox object, the webhook envelope, the svix-id and each attempt's status."""

    sms: dict[str, Any]
    envelope: dict[str, Any]
    svix_id: str
    status_codes: list[int | None] = field(default_factory=list)


class FakeSalvy:
    """In-memory Salvy. State is guarded by a lock: the app runs on uvicorn's thread, controls on the test's."""

    def __init__(self, token: str = DEFAULT_TOKEN, webhook_url: str | None = None,
                 webhook_secret: str = DEFAULT_WEBHOOK_SECRET) -> None:
        self.token = token
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self._lock = threading.Lock()
        self._number_counter = random.randrange(10_000_000, 80_000_000)
        self._lines: dict[str, dict[str, Any]] = {}
        self._inbox: dict[str, list[dict[str, Any]]] = {}
        self._canceled: list[tuple[str, str]] = []
        self._deliveries: list[WebhookDelivery] = []
        self._stock: dict[int, bool] = {}
        self._latency = 0.0
        self._failures: list[int] = []
        # One pooled client for webhook POSTs (thread-safe); a fresh client per delivery costs ~0.1 s of TLS setup.
        self._http = httpx.Client(timeout=15.0)
        self.reset()
        self.app = self._build_app()

    def close(self) -> None:
        """Release the webhook HTTP client (the app itself holds no resources)."""
        self._http.close()

    # --- controls -------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget lines, SMS, cancellations, deliveries and injected faults; restore the default stock."""
        with self._lock:
            self._lines.clear()
            self._inbox.clear()
            self._canceled.clear()
            self._deliveries.clear()
            self._stock = dict(DEFAULT_AREA_CODES)
            self._latency = 0.0
            self._failures.clear()

    def set_stock(self, area_code: int, available: bool) -> None:
        with self._lock:
            self._stock[int(area_code)] = bool(available)

    def set_latency(self, seconds: float) -> None:
        """Delay every API answer (not the controls) — to push a client past its timeout."""
        with self._lock:
            self._latency = max(0.0, float(seconds))

    def fail_next(self, n: int, status: int = 500) -> None:
        """The next `n` API requests answer `status` with an error body, before auth is even looked at."""
        with self._lock:
            self._failures.extend([int(status)] * int(n))

    @property
    def lines(self) -> dict[str, dict[str, Any]]:
        """Account objects by id (copies), in creation order."""
        with self._lock:
            return {k: dict(v) for k, v in self._lines.items()}

    @property
    def canceled(self) -> list[tuple[str, str]]:
        """``(line_id, reason)`` for every successful cancel, in order."""
        with self._lock:
            return list(self._canceled)

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries)

    def inbox(self, line_id: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(sms) for sms in self._inbox.get(line_id, [])]

    def deliver_sms(self, line_id: str, text: str, code: str | None = None, *, sms_id: str | None = None,
                    svix_id: str | None = None, times: int = 1) -> DeliveredSms:
        """An SMS arrives on `line_id`: store it in the inbox and POST `sms.received` to `webhook_url`.

        The POST is made `times` times with the same svix-id (as Svix does on retries: fresh timestamp and
        signature each attempt), synchronously, before this returns; each status lands in `deliveries`. With no
        `webhook_url` the SMS is only stored (the inbox-polling fallback). A repeated `sms_id` is not stored twice.
        Raises KeyError for an unknown line.
        """
        with self._lock:
            line = self._lines.get(line_id)
            if line is None:
                raise KeyError(f"unknown line {line_id!r}")
            now = _now_iso()
            inbox = self._inbox.setdefault(line_id, [])
            sms = next((s for s in inbox if sms_id and s["id"] == sms_id), None)
            if sms is None:
                sms = {
                    "id": sms_id or str(uuid.uuid4()),
                    "receivedAt": now,
                    "originPhoneNumber": SMS_ORIGIN,
                    "destinationPhoneNumber": line["phoneNumber"],
                    "message": text,
                    "detections": {"whatsapp": {"verificationCode": code}} if code else {},
                }
                inbox.append(sms)
            sms = dict(sms)
        envelope = {
            "type": "sms.received",
            "timestamp": now,
            "data": {
                "id": sms["id"],
                "virtualPhoneAccountId": line_id,
                "receivedAt": sms["receivedAt"],
                "originPhoneNumber": sms["originPhoneNumber"],
                "destinationPhoneNumber": sms["destinationPhoneNumber"],
                "message": sms["message"],
                "detections": sms["detections"],
            },
        }
        msg_id = svix_id or f"msg_{uuid.uuid4().hex}"
        result = DeliveredSms(sms=sms, envelope=envelope, svix_id=msg_id)
        if self.webhook_url:
            body = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            for _ in range(max(1, int(times))):
                headers = {"content-type": "application/json", "user-agent": "Svix-Webhooks/1.0 (fake-salvy)",
                           **signed_headers(self.webhook_secret, msg_id, body)}
                result.status_codes.append(self._post_webhook(body, headers, sms_id=sms["id"]))
        return result

    def send_raw_webhook(self, body: bytes, headers: Mapping[str, str]) -> int | None:
        """POST arbitrary bytes and headers to `webhook_url` (forged/stale signatures); returns the status."""
        if not self.webhook_url:
            raise RuntimeError("FakeSalvy.webhook_url is not set")
        return self._post_webhook(body, dict(headers), sms_id=None)

    def _post_webhook(self, body: bytes, headers: dict[str, str], *, sms_id: str | None) -> int | None:
        url = str(self.webhook_url)
        svix_id = next((v for k, v in headers.items() if k.lower() == "svix-id"), None)
        status: int | None = None
        error: str | None = None
        try:
            status = self._http.post(url, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            error = repr(exc)
        with self._lock:
            self._deliveries.append(WebhookDelivery(svix_id=svix_id, sms_id=sms_id, url=url, status_code=status,
                                                    error=error))
        return status

    # --- API ------------------------------------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            with self._lock:
                latency = self._latency
                failure = self._failures.pop(0) if self._failures else None
            if latency:
                await asyncio.sleep(latency)
            if failure is not None:
                return _error(failure, message="injected failure (fake)")
            if request.headers.get("authorization") != f"Bearer {self.token}":
                return _error(401, "unauthorized", "Invalid or missing API key")
            return await handler(request)

        return endpoint

    async def _area_codes(self, request: Request) -> Response:
        wanted = request.query_params.get("available")
        with self._lock:
            items = [{"areaCode": ddd, "available": ok} for ddd, ok in sorted(self._stock.items())]
        if wanted in ("true", "false"):
            items = [item for item in items if item["available"] == (wanted == "true")]
        return JSONResponse({"areaCodes": items})

    async def _provision(self, request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "bad_request", "Body must be JSON")
        if not isinstance(body, dict):
            return _error(400, "bad_request", "Body must be an object")
        area_code, name = body.get("areaCode"), body.get("name")
        if not isinstance(area_code, int) or isinstance(area_code, bool) or not 11 <= area_code <= 99:
            return _error(400, "bad_request", "areaCode must be an integer DDD between 11 and 99")
        if not isinstance(name, str) or not name.strip():
            return _error(400, "bad_request", "name is required")
        with self._lock:
            if not self._stock.get(area_code):
                return _error(422, "area_code_unavailable", f"No stock for area code {area_code}")
            self._number_counter += 1
            line = {
                "id": str(uuid.uuid4()),
                "name": name,
                "phoneNumber": f"+55{area_code}9{self._number_counter % 100_000_000:08d}",
                "status": "active",
                "createdAt": _now_iso(),
                "canceledAt": None,
                "cancelReason": None,
                "redirectPhoneNumber": None,
                "redirectExpiresAt": None,
            }
            self._lines[line["id"]] = line
            self._inbox[line["id"]] = []
            return JSONResponse(dict(line), status_code=201)

    async def _list(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse([dict(line) for line in self._lines.values()])

    async def _get(self, request: Request) -> Response:
        with self._lock:
            line = self._lines.get(request.path_params["line_id"])
            if line is None:
                return _error(404, "not_found", "Virtual phone account not found")
            return JSONResponse(dict(line))

    async def _sms(self, request: Request) -> Response:
        line_id = request.path_params["line_id"]
        with self._lock:
            if line_id not in self._lines:
                return _error(404, "not_found", "Virtual phone account not found")
            return JSONResponse({"smsMessages": [dict(s) for s in self._inbox.get(line_id, [])]})

    async def _cancel(self, request: Request) -> Response:
        reason = request.query_params.get("reason")
        raw = await request.body()
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                return _error(400, "bad_request", "Body must be JSON")
            if isinstance(body, dict) and body.get("reason"):
                reason = body["reason"]
        if reason not in _CANCEL_REASONS:
            return _error(400, "bad_request", f"reason must be one of {', '.join(_CANCEL_REASONS)}")
        line_id = request.path_params["line_id"]
        with self._lock:
            line = self._lines.get(line_id)
            if line is None:
                return _error(404, "not_found", "Virtual phone account not found")
            if line["status"] == "canceled":
                return _error(409, "already_canceled", "Virtual phone account is already canceled")
            line.update(status="canceled", canceledAt=_now_iso(), cancelReason=reason)
            self._canceled.append((line_id, str(reason)))
        return Response(status_code=204)

    # --- HTTP controls --------------------------------------------------------------------------------------

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise HTTPException(400, "control body must be JSON") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "control body must be an object")
        return data

    async def _ctl_stock(self, request: Request) -> Response:
        body = await self._body(request)
        self.set_stock(int(body["area_code"]), bool(body.get("available", True)))
        return JSONResponse({"ok": True})

    async def _ctl_latency(self, request: Request) -> Response:
        self.set_latency(float((await self._body(request)).get("seconds", 0)))
        return JSONResponse({"ok": True})

    async def _ctl_fail_next(self, request: Request) -> Response:
        body = await self._body(request)
        self.fail_next(int(body.get("n", 1)), int(body.get("status", 500)))
        return JSONResponse({"ok": True})

    async def _ctl_sms(self, request: Request) -> Response:
        body = await self._body(request)
        if not body.get("line_id"):
            return JSONResponse({"error": "line_id is required"}, status_code=400)
        try:
            # Off the event loop: the webhook POST is synchronous and its receiver may be this very process.
            result = await run_in_threadpool(
                self.deliver_sms, str(body["line_id"]), str(body.get("text", "")), body.get("code"),
                sms_id=body.get("sms_id"), svix_id=body.get("svix_id"), times=int(body.get("times", 1)),
            )
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse(asdict(result))

    async def _ctl_webhook(self, request: Request) -> Response:
        body = await self._body(request)
        self.webhook_url = body.get("url") or None
        if body.get("secret"):
            self.webhook_secret = str(body["secret"])
        return JSONResponse({"ok": True, "url": self.webhook_url})

    async def _ctl_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})

    async def _ctl_state(self, request: Request) -> Response:
        with self._lock:
            state = {
                "lines": [dict(line) for line in self._lines.values()],
                "sms": {k: list(v) for k, v in self._inbox.items()},
                "canceled": [list(c) for c in self._canceled],
                "deliveries": [asdict(d) for d in self._deliveries],
                "areaCodes": {str(k): v for k, v in sorted(self._stock.items())},
                "latency": self._latency,
                "pendingFailures": list(self._failures),
                "webhookUrl": self.webhook_url,
            }
        return JSONResponse(state)

    @staticmethod
    def _control(handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"bad control request: {exc!r}"}, status_code=400)

        return endpoint

    def _build_app(self) -> Starlette:
        g, c = self._guard, self._control

        async def not_found(request: Request, exc: Exception) -> Response:
            if isinstance(exc, HTTPException) and exc.status_code not in (404, 405):
                return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
            status = getattr(exc, "status_code", 404)
            return _error(status, message="Route not found" if status == 404 else "Method not allowed")

        routes = [
            Route(f"{PREFIX}/area-codes", g(self._area_codes), methods=["GET"]),
            Route(PREFIX, g(self._list), methods=["GET"]),
            Route(PREFIX, g(self._provision), methods=["POST"]),
            Route(f"{PREFIX}/{{line_id}}", g(self._get), methods=["GET"]),
            Route(f"{PREFIX}/{{line_id}}", g(self._cancel), methods=["DELETE"]),
            Route(f"{PREFIX}/{{line_id}}/sms-messages", g(self._sms), methods=["GET"]),
            Route("/__fake__/stock", c(self._ctl_stock), methods=["POST"]),
            Route("/__fake__/latency", c(self._ctl_latency), methods=["POST"]),
            Route("/__fake__/fail-next", c(self._ctl_fail_next), methods=["POST"]),
            Route("/__fake__/sms", c(self._ctl_sms), methods=["POST"]),
            Route("/__fake__/webhook", c(self._ctl_webhook), methods=["POST"]),
            Route("/__fake__/reset", c(self._ctl_reset), methods=["POST"]),
            Route("/__fake__/state", c(self._ctl_state), methods=["GET"]),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: not_found})
        app.state.fake = self
        return app


def build_app(token: str = DEFAULT_TOKEN, webhook_url: str | None = None,
              webhook_secret: str = DEFAULT_WEBHOOK_SECRET) -> Starlette:
    """A fresh fake's app; the FakeSalvy itself is `app.state.fake` (for `manage.py sandbox`)."""
    return FakeSalvy(token=token, webhook_url=webhook_url, webhook_secret=webhook_secret).app


def main(argv: list[str] | None = None) -> None:
    """``python -m sandbox.salvy --port 8082 --webhook-url http://127.0.0.1:8000/...`` (foreground)."""
    import uvicorn

    parser = argparse.ArgumentParser(description="Fake Salvy API (loopback only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--webhook-secret", default=DEFAULT_WEBHOOK_SECRET)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.token, args.webhook_url, args.webhook_secret), host=args.host, port=args.port,
                log_level="info")


if __name__ == "__main__":
    main()
