"""A fake Evolution API v2 server (Starlette) that speaks the contract in ../shared/contracts/evolution-and-salvy.md.

What it reproduces, on purpose (sections 1-3 of the contract): 201 for create/sendText/webhook set and 200
elsewhere; guard order instance-exists -> name-in-use -> apikey (unknown instance = 404 even with a bad key); the
error envelope ``{"status", "error", "response": {"message": ...}}`` with its polymorphic ``message`` (plain
"Unauthorized" on 401, lists of strings, lists of lists for validation, objects for "not on WhatsApp"); 200
``{"error": true}`` from restart on a closed instance; ``{"count": 0}`` from connect before any QR; ``pushName``
"Você" and 22-char ``3EB0...`` ids on sendText; webhook envelopes with dotted lower-case event names, per-instance
headers (``jwt_key`` turned into a Bearer HS256 JWT), ``byEvents`` suffixes, bounded retries that skip
400/401/403/404/422, and a global fallback URL that, like Evolution's env config, never carries custom headers
nor STATUS_INSTANCE/LOGOUT_INSTANCE/REMOVE_INSTANCE.

What it simplifies: no QR clock (``qr()`` makes one, or ``auto_qr=True`` on connect), no Brazil 9th-digit
rewriting, deliveries are sequential and happen before the call returns (deterministic tests; the real server
fires them concurrently, so order is not guaranteed there), ``date_time`` is true UTC.

Driving it:

* Python: ``fake = FakeEvolution(); server = FakeServer(fake.app).start(); fake.server_url = server.url`` then
  ``fake.link(name, number)``, ``fake.close(name, 403)``, ``fake.inbound(...)``, ``fake.ack(...)``, ``fake.qr(name)``,
  ``fake.set_latency(s)``, ``fake.fail_next(n, status)``, ``fake.add_instances(names)``, ``fake.reset()``; inspect
  ``fake.sent_messages``, ``fake.deliveries``, ``fake.requests``, ``fake.peak_in_flight``. Call these from any
  thread except the server's own event loop (they deliver webhooks with a blocking client).
* HTTP (another process, e.g. ``manage.py sandbox``): the same controls under ``/__fake__/`` (no apikey; loopback
  only). See :meth:`FakeEvolution._control_routes`.
* Standalone: ``python -m sandbox.evolution --port 8081 --webhook-url ...`` (:func:`main`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import hmac
import json
import os
import secrets
import string
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "ACCEPTED_EVENTS",
    "FINAL_CLOSE_CODES",
    "TRANSIENT_CLOSE_CODES",
    "FakeEvolution",
    "build_app",
    "main",
]

VERSION = "2.3.7"
FINAL_CLOSE_CODES = frozenset({401, 402, 403, 406})
TRANSIENT_CLOSE_CODES = frozenset({408, 411, 428, 440, 500, 503, 515})
NON_RETRYABLE_WEBHOOK_STATUSES = frozenset({400, 401, 403, 404, 422})
# Evolution's env-driven global webhook has no switches for these: only per-instance webhooks deliver them.
NOT_GLOBAL_EVENTS = frozenset({"STATUS_INSTANCE", "LOGOUT_INSTANCE", "REMOVE_INSTANCE"})
ACCEPTED_EVENTS = (
    "APPLICATION_STARTUP", "QRCODE_UPDATED", "MESSAGES_SET", "MESSAGES_UPSERT", "MESSAGES_EDITED", "MESSAGES_UPDATE",
    "MESSAGES_DELETE", "SEND_MESSAGE", "SEND_MESSAGE_UPDATE", "CONTACTS_SET", "CONTACTS_UPSERT", "CONTACTS_UPDATE",
    "PRESENCE_UPDATE", "CHATS_SET", "CHATS_UPSERT", "CHATS_UPDATE", "CHATS_DELETE", "GROUPS_UPSERT", "GROUP_UPDATE",
    "GROUP_PARTICIPANTS_UPDATE", "CONNECTION_UPDATE", "LABELS_EDIT", "LABELS_ASSOCIATION", "CALL", "TYPEBOT_START",
    "TYPEBOT_CHANGE_STATUS", "REMOVE_INSTANCE", "LOGOUT_INSTANCE", "INSTANCE_CREATE", "INSTANCE_DELETE",
    "STATUS_INSTANCE",
)
INTEGRATIONS = ("WHATSAPP-BAILEYS", "WHATSAPP-BUSINESS", "EVOLUTION")
# A valid 1x1 PNG: the QR image only has to be a decodable data URL.
TINY_PNG_DATA_URL = (
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
ERROR_MESSAGES = {463: "reach-out timelock: this account cannot start new conversations for now"}


# --------------------------------------------------------------------------------------------- helpers


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _config_name(event: str) -> str:
    """'connection.update' -> 'CONNECTION_UPDATE' (envelope names are dotted, config names UPPER_SNAKE)."""
    return event.upper().replace(".", "_").replace("-", "_")


def _suffix(config_name: str) -> str:
    return config_name.lower().replace("_", "-")


def _jid(number: str) -> str:
    if "@" in number:
        return number
    return "".join(ch for ch in number if ch.isdigit()) + "@s.whatsapp.net"


def _api_message_id() -> str:
    """Ids of API-sent messages: 22 chars starting '3EB0' (that is how Evolution classifies them as 'web')."""
    return "3EB0" + secrets.token_hex(9).upper()


def _phone_message_id() -> str:
    return "3A" + secrets.token_hex(9).upper()


def _db_id() -> str:
    return "cm" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(23))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _jwt_hs256(secret: str, claims: dict[str, Any]) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"


def _webhook_headers(configured: dict[str, Any]) -> dict[str, str]:
    """Configured headers as sent; a ``jwt_key`` entry becomes ``Authorization: Bearer <HS256 JWT>``."""
    headers = {str(k): str(v) for k, v in (configured or {}).items()}
    jwt_key = headers.pop("jwt_key", None)
    if jwt_key:
        iat = int(time.time())
        token = _jwt_hs256(jwt_key, {"iat": iat, "exp": iat + 600, "app": "evolution", "action": "webhook"})
        headers["Authorization"] = f"Bearer {token}"
    return headers


class _ApiError(Exception):
    """Raised inside a route; rendered as Evolution's error envelope."""

    def __init__(self, status: int, message: Any, *, error: str | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.error = error or HTTPStatus(status).phrase

    def response(self) -> JSONResponse:
        return JSONResponse({"status": self.status, "error": self.error, "response": {"message": self.message}},
                            status_code=self.status)


class _Unknown(KeyError):
    """A control was asked about an instance that does not exist."""


@dataclass
class _Instance:
    name: str
    id: str
    token: str
    integration: str
    number: str | None = None
    state: str = "close"            # live socket state (connectionState)
    db_status: str = "close"        # persisted connectionStatus (fetchInstances), lags the live state
    owner_jid: str | None = None
    profile_name: str | None = None
    ever_open: bool = False         # `sender` only appears in envelopes once the instance was open
    qr_count: int = 0
    qr: dict[str, Any] | None = None
    pairing_number: str | None = None
    webhook: dict[str, Any] | None = None
    disconnection_code: int | None = None
    disconnection_at: str | None = None
    disconnection_object: str | None = None
    created_at: str = field(default_factory=_now_iso)
    updated_at: str = field(default_factory=_now_iso)
    settings: dict[str, Any] = field(default_factory=lambda: {
        "rejectCall": False, "msgCall": "", "groupsIgnore": False, "alwaysOnline": False, "readMessages": False,
        "readStatus": False, "syncFullHistory": False, "wavoipToken": "",
    })
    message_count: int = 0

    def touch(self) -> None:
        self.updated_at = _now_iso()

    def row(self) -> dict[str, Any]:
        """fetchInstances row (§2.5)."""
        return {
            "id": self.id, "name": self.name, "connectionStatus": self.db_status, "ownerJid": self.owner_jid,
            "profileName": self.profile_name, "profilePicUrl": None, "integration": self.integration,
            "number": self.number, "businessId": None, "token": self.token, "clientName": "evolution_exchange",
            "disconnectionReasonCode": self.disconnection_code, "disconnectionObject": self.disconnection_object,
            "disconnectionAt": self.disconnection_at, "createdAt": self.created_at, "updatedAt": self.updated_at,
            "Chatwoot": None, "Proxy": None, "Rabbitmq": None, "Nats": None, "Sqs": None, "Websocket": None,
            "Setting": {"id": "cm" + self.id.replace("-", "")[:23], **self.settings, "createdAt": self.created_at,
                        "updatedAt": self.updated_at, "instanceId": self.id},
            "_count": {"Message": self.message_count, "Contact": 0, "Chat": 0},
        }

    def qr_object(self) -> dict[str, Any]:
        if self.qr is None:
            return {"count": 0}
        return {**self.qr, "count": self.qr_count}


# (url, headers, envelope)
_Pending = tuple[str, dict[str, str], dict[str, Any]]


# --------------------------------------------------------------------------------------------- the fake


class FakeEvolution:
    """In-memory Evolution API v2. ``.app`` is the Starlette app; every control is a thread-safe method and an
    HTTP route under ``/__fake__/``. ``webhook_url`` is the global fallback, used only for instances without an
    (enabled) per-instance webhook."""

    def __init__(self, api_key: str = "dev-evolution-key", webhook_url: str | None = None, *,
                 server_url: str = "http://127.0.0.1:8081", auto_qr: bool = False) -> None:
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.server_url = server_url          # set it to FakeServer.url: it goes into envelopes' server_url
        self.auto_qr = auto_qr                # connect on a closed instance produces a QR at once
        self.webhook_attempts = 3
        self.webhook_backoff = (0.05, 0.1, 0.2, 0.4)
        self.webhook_timeout = 5.0
        self.hang_seconds = 30.0              # how long a fail_next(status="timeout") call hangs (cut by reset)
        self._lock = threading.RLock()
        self._generation = 0
        self._in_flight = 0
        self._reset_state()
        self.app = Starlette(routes=self._real_routes() + self._control_routes(),
                             exception_handlers={404: self._route_not_found, 405: self._route_not_found})
        self.app.state.fake = self

    def _reset_state(self) -> None:
        self._instances: dict[str, _Instance] = {}
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
        (``status_code`` None when no HTTP answer was obtained)."""
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
        """Most real-route requests seen in progress at once since the last reset/reset_stats."""
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
            return {**inst.row(), "state": inst.state, "webhook": _copy(inst.webhook), "qr": inst.qr_object()}

    def instance_names(self) -> list[str]:
        with self._lock:
            return list(self._instances)

    # ------------------------------------------------------------------------------------- controls (Python)

    def reset(self) -> None:
        """Forget everything (instances, messages, deliveries, latency, queued failures, stats); hanging calls
        are released."""
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
        """The next ``n`` real-route calls (optionally only those of ``route``) fail with ``status`` and a
        realistic body. ``status=200`` answers ``{"error": true, "message": "[object Object]"}``;
        ``status=0`` or ``"timeout"`` hangs for ``hang_seconds`` (until reset) so the client times out."""
        with self._lock:
            for _ in range(int(n)):
                self._failures.append((status, route))

    def mark_not_on_whatsapp(self, *numbers: str) -> None:
        """sendText to these numbers answers 400 with ``[{jid, exists: false, number}]``."""
        with self._lock:
            self._not_on_whatsapp.update("".join(ch for ch in n if ch.isdigit()) for n in numbers)

    def add_instances(self, names: Iterable[str], state: str = "open") -> None:
        """Bulk-create instances (no webhook, no events) for benchmarks; existing names are left alone."""
        with self._lock:
            for i, name in enumerate(names):
                if name in self._instances:
                    continue
                inst = self._new_instance(name)
                inst.state = inst.db_status = state
                if state == "open":
                    inst.owner_jid = f"5511{900000000 + i % 100000000:09d}@s.whatsapp.net"
                    inst.profile_name = name
                    inst.ever_open = True
                self._instances[name] = inst

    def link(self, name: str, number: str) -> list[dict[str, Any]]:
        """As if the QR was scanned by the phone ``number``: connection.update connecting, then open with
        ``wuid=<number>@s.whatsapp.net``. Returns the delivery records."""
        return self._deliver_sync(self._do_link(name, number))

    def close(self, name: str, code: int) -> list[dict[str, Any]]:
        """Socket closed by WhatsApp with ``code``. Final codes (401/402/403/406): status.instance, logout.instance,
        connection.update close (statusReason=code), state close. Others (transient, e.g. 408/428/440/500/503/
        515): connection.update connecting then open, no close — Evolution reconnects silently."""
        return self._deliver_sync(self._do_close(name, int(code)))

    def inbound(self, name: str, from_number: str, text: str, message_id: str | None = None, *,
                push_name: str | None = None) -> str:
        """A contact writes to the instance: messages.upsert (fromMe false). Returns the message id."""
        message_id, pending = self._do_inbound(name, from_number, text, message_id, push_name)
        self._deliver_sync(pending)
        return message_id

    def ack(self, name: str, key_id: str, status: str, error_code: int | None = None, *,
            remote_jid: str | None = None) -> list[dict[str, Any]]:
        """Receipt for a sent message: messages.update ``{keyId, remoteJid, fromMe, status, instanceId,
        messageId}``; with ``error_code`` (e.g. 463) status becomes "ERROR" with ``errorCode``/``errorMessage``.
        ``remote_jid`` is only needed for a key id the fake never sent."""
        return self._deliver_sync(self._do_ack(name, key_id, status, error_code, remote_jid))

    def qr(self, name: str) -> dict[str, Any]:
        """A new QR (count+1, state connecting) and its qrcode.updated webhook. Returns the connect-shaped QR."""
        qr, pending = self._do_qr(name)
        self._deliver_sync(pending)
        return qr

    # ------------------------------------------------------------------------------------- state changes
    # Each _do_* mutates under the lock and returns the webhooks to deliver (delivered outside the lock).

    def _get(self, name: str) -> _Instance:
        inst = self._instances.get(name)
        if inst is None:
            raise _Unknown(name)
        return inst

    def _new_instance(self, name: str, *, integration: str = "WHATSAPP-BAILEYS", token: str | None = None,
                      number: str | None = None) -> _Instance:
        return _Instance(name=name, id=str(uuid.uuid4()), token=token or str(uuid.uuid4()).upper(),
                         integration=integration, number=number)

    def _do_link(self, name: str, number: str) -> list[_Pending]:
        with self._lock:
            inst = self._get(name)
            pending = self._set_connecting(inst)
            inst.owner_jid = _jid(number)
            inst.profile_name = inst.profile_name or f"Chip {name}"
            pending += self._set_open(inst)
            return pending

    def _set_connecting(self, inst: _Instance) -> list[_Pending]:
        inst.state = "connecting"
        inst.touch()
        return self._emit(inst, "connection.update",
                          {"instance": inst.name, "state": "connecting", "statusReason": 200})

    def _set_open(self, inst: _Instance) -> list[_Pending]:
        inst.state = inst.db_status = "open"
        inst.ever_open = True
        inst.qr = None
        inst.touch()
        return self._emit(inst, "connection.update", {
            "instance": inst.name, "wuid": inst.owner_jid, "profileName": inst.profile_name,
            "profilePictureUrl": None, "state": "open", "statusReason": 200,
        })

    def _final_close(self, inst: _Instance, code: int) -> list[_Pending]:
        now = _now_iso()
        inst.state = inst.db_status = "close"
        inst.qr = None
        inst.disconnection_code = code
        inst.disconnection_at = now
        inst.disconnection_object = json.dumps({
            "error": {"data": None, "isBoom": True, "isServer": code >= 500,
                      "output": {"statusCode": code, "payload": {"statusCode": code, "error": "Fake close",
                                                                 "message": "Connection Failure"}, "headers": {}}},
            "date": now,
        }, separators=(",", ":"))
        inst.touch()
        pending = self._emit(inst, "status.instance", {
            "instance": inst.name, "status": "closed", "disconnectionAt": now, "disconnectionReasonCode": code,
            "disconnectionObject": inst.disconnection_object,
        })
        pending += self._emit(inst, "logout.instance", None)
        pending += self._emit(inst, "connection.update", {"instance": inst.name, "state": "close",
                                                          "statusReason": code})
        return pending

    def _do_close(self, name: str, code: int) -> list[_Pending]:
        with self._lock:
            inst = self._get(name)
            if code in FINAL_CLOSE_CODES:
                return self._final_close(inst, code)
            return self._set_connecting(inst) + self._set_open(inst)

    def _do_inbound(self, name: str, from_number: str, text: str, message_id: str | None,
                    push_name: str | None) -> tuple[str, list[_Pending]]:
        with self._lock:
            inst = self._get(name)
            message_id = message_id or _phone_message_id()
            digits = "".join(ch for ch in from_number if ch.isdigit())
            inst.message_count += 1
            data = {
                "key": {"remoteJid": _jid(from_number), "fromMe": False, "id": message_id},
                "pushName": push_name or f"Contato {digits[-4:]}",
                "status": "DELIVERY_ACK",
                "message": {"conversation": text, "messageContextInfo": {}},
                "messageType": "conversation",
                "messageTimestamp": int(time.time()),
                "instanceId": inst.id,
                "source": "ios",
            }
            return message_id, self._emit(inst, "messages.upsert", data)

    def _do_ack(self, name: str, key_id: str, status: str, error_code: int | None,
                remote_jid: str | None) -> list[_Pending]:
        with self._lock:
            inst = self._get(name)
            sent = self._sent_by_id.get(key_id)
            if sent is None and remote_jid is None:
                raise _Unknown(f"key id {key_id!r} was never sent by {name!r}; pass remote_jid=")
            data: dict[str, Any] = {
                "keyId": key_id,
                "remoteJid": sent["remote_jid"] if sent else _jid(remote_jid or ""),
                "fromMe": True,
                "status": "ERROR" if error_code is not None else status,
                "instanceId": inst.id,
                "messageId": sent["message_id"] if sent else _db_id(),
            }
            if error_code is not None:
                data["errorCode"] = int(error_code)
                data["errorMessage"] = ERROR_MESSAGES.get(int(error_code), f"WhatsApp error {error_code}")
            return self._emit(inst, "messages.update", data)

    def _do_qr(self, name: str) -> tuple[dict[str, Any], list[_Pending]]:
        with self._lock:
            inst = self._get(name)
            pending = self._new_qr(inst)
            return inst.qr_object(), pending

    def _new_qr(self, inst: _Instance) -> list[_Pending]:
        inst.qr_count += 1
        refs = ",".join(_b64url(secrets.token_bytes(12)) for _ in range(4))
        pairing = ("".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))
                   if inst.pairing_number else None)
        inst.qr = {"pairingCode": pairing, "code": f"2@{refs}", "base64": TINY_PNG_DATA_URL}
        inst.state = inst.db_status = "connecting"
        inst.touch()
        return self._emit(inst, "qrcode.updated", {"qrcode": {"instance": inst.name, **inst.qr}})

    # ------------------------------------------------------------------------------------- webhooks

    def _emit(self, inst: _Instance, event: str, data: Any) -> list[_Pending]:
        """The deliveries ``event`` causes for ``inst`` (per-instance webhook, else the global fallback)."""
        config = _config_name(event)
        hook = inst.webhook
        targets: list[tuple[str, str, dict[str, str]]] = []
        if hook and hook.get("enabled"):
            if not hook["events"] or config in hook["events"]:
                url = hook["url"].rstrip("/") + "/" + _suffix(config) if hook["webhookByEvents"] else hook["url"]
                targets.append((url, hook["url"], _webhook_headers(hook["headers"])))
        elif self.webhook_url and config not in NOT_GLOBAL_EVENTS:
            targets.append((self.webhook_url, self.webhook_url, {}))
        pending: list[_Pending] = []
        for url, destination, headers in targets:
            envelope: dict[str, Any] = {"event": event, "instance": inst.name, "data": _copy(data),
                                        "destination": destination, "date_time": _now_iso()}
            if inst.ever_open and inst.owner_jid:
                envelope["sender"] = inst.owner_jid
            envelope["server_url"] = self.server_url
            envelope["apikey"] = inst.token
            pending.append((url, headers, envelope))
        return pending

    def _record(self, url: str, headers: dict[str, str], envelope: dict[str, Any], status: int | None,
                attempts: int, error: str | None) -> dict[str, Any]:
        record = {"url": url, "event": envelope["event"], "instance": envelope["instance"], "status_code": status,
                  "attempts": attempts, "error": error, "headers": dict(headers), "payload": envelope}
        with self._lock:
            self._deliveries.append(record)
        return dict(record)

    def _backoff(self, attempt: int) -> float:
        return self.webhook_backoff[min(attempt - 1, len(self.webhook_backoff) - 1)]

    def _deliver_sync(self, pending: list[_Pending]) -> list[dict[str, Any]]:
        """Deliver in order, blocking, with bounded retries. Never raises: failures are recorded."""
        if not pending:
            return []
        records = []
        with httpx.Client(timeout=self.webhook_timeout) as http:
            for url, headers, envelope in pending:
                status: int | None = None
                error: str | None = None
                attempt = 0
                while attempt < self.webhook_attempts:
                    attempt += 1
                    try:
                        status = http.post(url, json=envelope, headers=headers).status_code
                        error = None
                    except httpx.HTTPError as exc:
                        status, error = None, f"{type(exc).__name__}: {exc}"
                    if _delivered_or_final(status) or attempt >= self.webhook_attempts:
                        break
                    time.sleep(self._backoff(attempt))
                records.append(self._record(url, headers, envelope, status, attempt, error))
        return records

    async def _deliver_async(self, pending: list[_Pending]) -> list[dict[str, Any]]:
        if not pending:
            return []
        records = []
        async with httpx.AsyncClient(timeout=self.webhook_timeout) as http:
            for url, headers, envelope in pending:
                status: int | None = None
                error: str | None = None
                attempt = 0
                while attempt < self.webhook_attempts:
                    attempt += 1
                    try:
                        status = (await http.post(url, json=envelope, headers=headers)).status_code
                        error = None
                    except httpx.HTTPError as exc:
                        status, error = None, f"{type(exc).__name__}: {exc}"
                    if _delivered_or_final(status) or attempt >= self.webhook_attempts:
                        break
                    await asyncio.sleep(self._backoff(attempt))
                records.append(self._record(url, headers, envelope, status, attempt, error))
        return records

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
                if failure is not None:
                    response = await self._failure_response(failure, record["instance"], generation)
                else:
                    try:
                        response = await handler(request)
                    except _ApiError as exc:
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
            return _ApiError(500, "Connection Closed").response()
        code = int(status)
        if code == 200:
            return JSONResponse({"error": True, "message": "[object Object]"})
        if code == 401:
            return _ApiError(401, "Unauthorized").response()
        if code == 404:
            return _ApiError(404, [f'The "{name}" instance does not exist']).response()
        if code == 500:
            return _ApiError(500, "Connection Closed").response()
        if code == 503:
            return _ApiError(503, ["Error: Service Unavailable"]).response()
        return _ApiError(code, ["Error: simulated failure"]).response()

    def _guard(self, request: Request, *, global_only: bool = False) -> _Instance:
        """instance-exists first (404 even with a bad key), then the apikey (global, or this instance's token)."""
        name = request.path_params["instance"]
        key = request.headers.get("apikey")
        with self._lock:
            inst = self._instances.get(name)
            if inst is None:
                raise _ApiError(404, [f'The "{name}" instance does not exist'])
            if key != self.api_key and (global_only or key != inst.token):
                raise _ApiError(401, "Unauthorized")
            return inst

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            # Express' body parser: a 400 whose `error` oddly says "Internal Server Error".
            raise _ApiError(400, str(exc), error="Internal Server Error") from None
        if not isinstance(body, dict):
            raise _ApiError(400, [["instance is not of a type(s) object"]])
        return body

    async def _welcome(self, request: Request) -> Response:
        return JSONResponse({
            "status": 200, "message": "Welcome to the Evolution API, it is working!", "version": VERSION,
            "clientName": "evolution_exchange", "manager": f"{self.server_url}/manager",
            "documentation": "https://doc.evolution-api.com", "whatsappWebVersion": "2.3000.1023204200",
        })

    async def _route_not_found(self, request: Request, exc: HTTPException) -> Response:
        return _ApiError(404, [f"Cannot {request.method} {request.url.path}"]).response()

    async def _create(self, request: Request) -> Response:
        body = await self._body(request)
        name = body.get("instanceName")
        with self._lock:
            if isinstance(name, str) and name in self._instances:
                raise _ApiError(403, [f'This name "{name}" is already in use.'])
        if request.headers.get("apikey") != self.api_key:
            raise _ApiError(401, "Unauthorized")
        if not isinstance(name, str) or not name.strip():
            raise _ApiError(400, [['The "instanceName" cannot be empty']])
        number = body.get("number")
        if number is not None and (not isinstance(number, str) or not number[:1].isdigit()):
            raise _ApiError(400, [['instance.number does not match pattern "^\\d+[\\.@\\w-]+"']])
        integration = body.get("integration")
        if integration not in INTEGRATIONS:
            raise _ApiError(400, ["Invalid integration"])
        webhook = body.get("webhook")
        if webhook is not None:
            if not isinstance(webhook, dict) or not webhook.get("url"):
                raise _ApiError(400, [['instance.webhook requires property "url"']])
            if not isinstance(webhook.get("events"), list):
                # Evolution maps over the undefined list, fails, and rolls the instance back.
                raise _ApiError(400, ["Cannot read properties of undefined (reading 'map')"])
        qrcode = bool(body.get("qrcode"))
        with self._lock:
            if name in self._instances:  # lost a race with a concurrent create
                raise _ApiError(403, [f'This name "{name}" is already in use.'])
            inst = self._new_instance(name, integration=integration, token=body.get("token"), number=number)
            if webhook is not None:
                inst.webhook = self._webhook_row(inst, {**webhook, "enabled": True})
            self._instances[name] = inst
            pending = self._emit(inst, "instance.create", {"instanceName": name, "instanceId": inst.id})
            if qrcode:
                inst.pairing_number = number
                pending += self._new_qr(inst)
            response: dict[str, Any] = {
                "instance": {"instanceName": name, "instanceId": inst.id, "integration": integration,
                             "webhookWaBusiness": None, "accessTokenWaBusiness": "",
                             "status": "connecting" if qrcode else "close"},
                "hash": inst.token,
                "webhook": ({"webhookUrl": inst.webhook["url"], "webhookHeaders": inst.webhook["headers"],
                             "webhookByEvents": inst.webhook["webhookByEvents"],
                             "webhookBase64": inst.webhook["webhookBase64"]} if inst.webhook else {}),
                "websocket": {}, "rabbitmq": {}, "nats": {}, "sqs": {},
                "settings": dict(inst.settings),
            }
            if qrcode:
                response["qrcode"] = inst.qr_object()
        await self._deliver_async(pending)
        return JSONResponse(response, status_code=201)

    async def _connect(self, request: Request) -> Response:
        inst = self._guard(request)
        number = request.query_params.get("number")
        pending: list[_Pending] = []
        with self._lock:
            if inst.state == "open":
                return JSONResponse({"instance": {"instanceName": inst.name, "state": "open"}})
            if inst.state == "close":
                # A new socket: the pairing number only takes effect here.
                inst.pairing_number = number or None
                inst.state = "connecting"
                inst.touch()
                if self.auto_qr:
                    pending = self._new_qr(inst)
            body = inst.qr_object()
        await self._deliver_async(pending)
        return JSONResponse(body)

    async def _connection_state(self, request: Request) -> Response:
        inst = self._guard(request)
        return JSONResponse({"instance": {"instanceName": inst.name, "state": inst.state}})

    async def _fetch_instances(self, request: Request) -> Response:
        key = request.headers.get("apikey")
        q = request.query_params
        with self._lock:
            if key == self.api_key:
                rows = list(self._instances.values())
            else:
                rows = [i for i in self._instances.values() if key and i.token == key]
                if not rows:
                    raise _ApiError(401, "Unauthorized")
            if "instanceName" in q:
                rows = [i for i in rows if i.name == q["instanceName"]]
                if not rows:
                    raise _ApiError(404, [f'Instance "{q["instanceName"]}" not found'])
            if "instanceId" in q:
                rows = [i for i in rows if i.id == q["instanceId"]]
            if "number" in q:
                rows = [i for i in rows if i.number == q["number"]]
            return JSONResponse([i.row() for i in rows])

    async def _restart(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            if inst.state == "close":
                return JSONResponse({"error": True, "message": "[object Object]"})
            body = ({"instance": {"instanceName": inst.name, "state": "open"}} if inst.state == "open"
                    else inst.qr_object())
            pending = self._set_connecting(inst) + self._set_open(inst) if inst.state == "open" else []
        await self._deliver_async(pending)
        return JSONResponse(body)

    async def _logout(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            if inst.state == "close":
                raise _ApiError(400, [f'The "{inst.name}" instance is not connected'])
            pending = self._final_close(inst, 401)
        await self._deliver_async(pending)
        return JSONResponse({"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}})

    async def _delete(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            pending = self._final_close(inst, 401) if inst.state in ("open", "connecting") else []
            pending += self._emit(inst, "instance.delete", {"instanceName": inst.name, "instanceId": inst.id})
            pending += self._emit(inst, "remove.instance", None)
            self._instances.pop(inst.name, None)
        await self._deliver_async(pending)
        return JSONResponse({"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}})

    def _webhook_row(self, inst: _Instance, hook: dict[str, Any]) -> dict[str, Any]:
        now = _now_iso()
        enabled = bool(hook.get("enabled"))
        previous = inst.webhook or {}
        return {
            "id": previous.get("id") or _db_id(), "url": hook["url"], "headers": dict(hook.get("headers") or {}),
            "enabled": enabled, "events": list(hook.get("events") or []) if enabled else [],
            "webhookByEvents": bool(hook.get("byEvents", hook.get("webhookByEvents", False))),
            "webhookBase64": bool(hook.get("base64", hook.get("webhookBase64", False))),
            "createdAt": previous.get("createdAt") or now, "updatedAt": now, "instanceId": inst.id,
        }

    async def _set_webhook(self, request: Request) -> Response:
        inst = self._guard(request)
        body = await self._body(request)
        hook = body.get("webhook")
        if not isinstance(hook, dict):
            raise _ApiError(400, [['instance requires property "webhook"']])
        for prop in ("enabled", "url"):
            if prop not in hook:
                raise _ApiError(400, [[f'instance.webhook requires property "{prop}"']])
        if not isinstance(hook["url"], str) or not hook["url"]:
            raise _ApiError(400, [["instance.webhook.url does not meet minimum length of 1"]])
        events = hook.get("events")
        if events is None and hook["enabled"]:
            raise _ApiError(500, "Cannot read properties of undefined (reading 'map')")
        for i, event in enumerate(events or []):
            if event not in ACCEPTED_EVENTS:
                raise _ApiError(400, [[f"instance.webhook.events[{i}] is not one of enum values: "
                                       + ",".join(ACCEPTED_EVENTS)]])
        with self._lock:
            inst.webhook = self._webhook_row(inst, hook)
            inst.touch()
            return JSONResponse(_copy(inst.webhook), status_code=201)

    async def _find_webhook(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            return JSONResponse(_copy(inst.webhook))

    async def _send_text(self, request: Request) -> Response:
        inst = self._guard(request)
        body = await self._body(request)
        for prop in ("number", "text"):
            if prop not in body:
                raise _ApiError(400, [[f'instance requires property "{prop}"']])
        number, text = str(body["number"]), body["text"]
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, ["Text is required"])
        delay = body.get("delay")
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(delay / 1000)
        jid = _jid(number)
        digits = jid.split("@", 1)[0]
        with self._lock:
            if inst.name not in self._instances:
                raise _ApiError(404, [f'The "{inst.name}" instance does not exist'])
            if inst.state != "open":
                raise _ApiError(500, "Connection Closed")
            if digits in self._not_on_whatsapp:
                raise _ApiError(400, [{"jid": jid, "exists": False, "number": digits}])
            key_id = _api_message_id()
            payload = {
                "key": {"remoteJid": jid, "fromMe": True, "id": key_id},
                "pushName": "Você",
                "status": "PENDING",
                "message": {"conversation": text},
                "contextInfo": {"mentionedJid": [], "groupMentions": []},
                "messageType": "conversation",
                "messageTimestamp": int(time.time()),
                "instanceId": inst.id,
                "source": "web",
            }
            sent = {"instance": inst.name, "number": number, "text": text, "key_id": key_id, "remote_jid": jid,
                    "delay": delay, "message_id": _db_id()}
            self._sent.append(sent)
            self._sent_by_id[key_id] = sent
            inst.message_count += 1
            pending = self._emit(inst, "send.message", payload)
        await self._deliver_async(pending)
        return JSONResponse(payload, status_code=201)

    # ------------------------------------------------------------------------------------- HTTP controls

    def _control_routes(self) -> list[Route]:
        """``/__fake__/...`` (JSON bodies, no apikey):

        POST link/{instance} {"number"} · POST close/{instance} {"code"} · POST inbound/{instance} {"from",
        "text", "message_id"?, "push_name"?} -> {"message_id"} · POST ack/{instance} {"key_id", "status",
        "error_code"?, "remote_jid"?} · POST qr/{instance} · POST latency {"seconds"} · POST fail-next {"n",
        "status"?, "route"?} · POST not-on-whatsapp {"numbers"} · POST add-instances {"names", "state"?} ·
        POST reset · POST reset-stats · GET sent-messages · GET deliveries · GET requests · GET stats ·
        GET instances/{instance}. Controls that emit webhooks answer ``{"deliveries": [...]}`` once delivered.
        """
        p = "/__fake__"
        return [
            Route(p + "/link/{instance}", self._c_link, methods=["POST"]),
            Route(p + "/close/{instance}", self._c_close, methods=["POST"]),
            Route(p + "/inbound/{instance}", self._c_inbound, methods=["POST"]),
            Route(p + "/ack/{instance}", self._c_ack, methods=["POST"]),
            Route(p + "/qr/{instance}", self._c_qr, methods=["POST"]),
            Route(p + "/latency", self._c_latency, methods=["POST"]),
            Route(p + "/fail-next", self._c_fail_next, methods=["POST"]),
            Route(p + "/not-on-whatsapp", self._c_not_on_whatsapp, methods=["POST"]),
            Route(p + "/add-instances", self._c_add_instances, methods=["POST"]),
            Route(p + "/reset", self._c_reset, methods=["POST"]),
            Route(p + "/reset-stats", self._c_reset_stats, methods=["POST"]),
            Route(p + "/sent-messages", lambda r: _ok(self.sent_messages), methods=["GET"]),
            Route(p + "/deliveries", lambda r: _ok(self.deliveries), methods=["GET"]),
            Route(p + "/requests", lambda r: _ok(self.requests), methods=["GET"]),
            Route(p + "/stats", self._c_stats, methods=["GET"]),
            Route(p + "/instances/{instance}", self._c_instance, methods=["GET"]),
        ]

    async def _control(self, request: Request, action: Callable[[dict[str, Any]], Any]) -> Response:
        try:
            body = await request.json() if (await request.body()).strip() else {}
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
            result = action(body)
            if isinstance(result, tuple):  # (extra fields, pending deliveries)
                extra, pending = result
                return _ok({**extra, "deliveries": await self._deliver_async(pending)})
            return _ok(result if result is not None else {"ok": True})
        except _Unknown as exc:
            return JSONResponse({"error": f"unknown instance or key: {exc.args[0]}"}, status_code=404)
        except (KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad control request: {exc!r}"}, status_code=400)

    async def _c_link(self, request: Request) -> Response:
        name = request.path_params["instance"]
        return await self._control(request, lambda b: ({}, self._do_link(name, str(b["number"]))))

    async def _c_close(self, request: Request) -> Response:
        name = request.path_params["instance"]
        return await self._control(request, lambda b: ({}, self._do_close(name, int(b["code"]))))

    async def _c_inbound(self, request: Request) -> Response:
        name = request.path_params["instance"]

        def action(b: dict[str, Any]) -> tuple[dict[str, Any], list[_Pending]]:
            message_id, pending = self._do_inbound(name, str(b["from"]), str(b["text"]), b.get("message_id"),
                                                   b.get("push_name"))
            return {"message_id": message_id}, pending

        return await self._control(request, action)

    async def _c_ack(self, request: Request) -> Response:
        name = request.path_params["instance"]
        return await self._control(request, lambda b: ({}, self._do_ack(
            name, str(b["key_id"]), str(b.get("status", "DELIVERY_ACK")),
            int(b["error_code"]) if b.get("error_code") is not None else None, b.get("remote_jid"))))

    async def _c_qr(self, request: Request) -> Response:
        name = request.path_params["instance"]

        def action(b: dict[str, Any]) -> tuple[dict[str, Any], list[_Pending]]:
            qr, pending = self._do_qr(name)
            return {"qrcode": qr}, pending

        return await self._control(request, action)

    async def _c_latency(self, request: Request) -> Response:
        return await self._control(request, lambda b: self.set_latency(float(b["seconds"])))

    async def _c_fail_next(self, request: Request) -> Response:
        def action(b: dict[str, Any]) -> None:
            status = b.get("status", 500)
            self.fail_next(int(b.get("n", 1)), status if status == "timeout" else int(status), route=b.get("route"))

        return await self._control(request, action)

    async def _c_not_on_whatsapp(self, request: Request) -> Response:
        return await self._control(request, lambda b: self.mark_not_on_whatsapp(*map(str, b["numbers"])))

    async def _c_add_instances(self, request: Request) -> Response:
        return await self._control(request, lambda b: self.add_instances(list(map(str, b["names"])),
                                                                          str(b.get("state", "open"))))

    async def _c_reset(self, request: Request) -> Response:
        return await self._control(request, lambda b: self.reset())

    async def _c_reset_stats(self, request: Request) -> Response:
        return await self._control(request, lambda b: self.reset_stats())

    async def _c_stats(self, request: Request) -> Response:
        with self._lock:
            return _ok({"in_flight": self._in_flight, "peak_in_flight": self._peak,
                        "requests": dict(self._route_counts), "instances": len(self._instances),
                        "sent_messages": len(self._sent), "deliveries": len(self._deliveries),
                        "latency": self._latency, "queued_failures": len(self._failures)})

    async def _c_instance(self, request: Request) -> Response:
        name = request.path_params["instance"]
        return await self._control(request, lambda b: self.instance_info(name))


def _delivered_or_final(status: int | None) -> bool:
    return status is not None and (200 <= status < 300 or status in NON_RETRYABLE_WEBHOOK_STATUSES)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if value is not None else None


def _ok(value: Any) -> JSONResponse:
    return JSONResponse(value)


# --------------------------------------------------------------------------------------------- entry points


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

    parser = argparse.ArgumentParser(description="Fake Evolution API v2 on loopback")
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


if __name__ == "__main__":
    main()
