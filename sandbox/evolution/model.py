"""The fake Evolution's state: one instance as the 2.3.7 server keeps it, and the wire helpers.

Every field and shape here comes from ../shared/contracts/evolution-and-salvy.md (§2, §3) or the field notes;
the section is named where the behaviour is surprising.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

import segno
from starlette.responses import JSONResponse

VERSION = "2.3.7"
FINAL_CLOSE_CODES = frozenset({401, 402, 403, 406})
TRANSIENT_CLOSE_CODES = frozenset({408, 411, 428, 440, 500, 503, 515})
NON_RETRYABLE_WEBHOOK_STATUSES = frozenset({400, 401, 403, 404, 422})
# Evolution's env-driven global webhook has no switches for these: only per-instance webhooks deliver them (§3.1).
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
QR_TTL_SECONDS = 45      # Evolution sets Baileys' QR lifetime to 45 s (§4.3)
QRCODE_LIMIT = 30        # QRs per instance per process, then `refused` and state close (§4.3)
# The official image runs with TZ=America/Sao_Paulo and formats local wall-clock time with a trailing Z (§3.3).
SERVER_TZ = timezone(timedelta(hours=-3))


def now_iso() -> str:
    """A timestamp as Evolution writes it in its database rows: true UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope_date_time() -> str:
    """``date_time`` of a webhook envelope: São Paulo wall-clock time mislabelled as UTC (3 h off, §3.3)."""
    return datetime.now(SERVER_TZ).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def config_name(event: str) -> str:
    """'connection.update' -> 'CONNECTION_UPDATE' (envelope names are dotted, config names UPPER_SNAKE)."""
    return event.upper().replace(".", "_").replace("-", "_")


def suffix(name: str) -> str:
    return name.lower().replace("_", "-")


def jid(number: str) -> str:
    if "@" in number:
        return number
    return "".join(ch for ch in number if ch.isdigit()) + "@s.whatsapp.net"


def api_message_id() -> str:
    """Ids of API-sent messages: 22 chars starting '3EB0' (that is how Evolution classifies them as 'web')."""
    return "3EB0" + secrets.token_hex(9).upper()


def phone_message_id() -> str:
    return "3A" + secrets.token_hex(9).upper()


def db_id() -> str:
    return "cm" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(23))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_hs256(secret: str, claims: dict[str, Any]) -> str:
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(signature)}"


def webhook_headers(configured: dict[str, Any]) -> dict[str, str]:
    """Configured headers as sent; a ``jwt_key`` entry becomes ``Authorization: Bearer <HS256 JWT>`` (§3.2)."""
    headers = {str(k): str(v) for k, v in (configured or {}).items()}
    jwt_key = headers.pop("jwt_key", None)
    if jwt_key:
        iat = int(time.time())
        token = jwt_hs256(jwt_key, {"iat": iat, "exp": iat + 600, "app": "evolution", "action": "webhook"})
        headers["Authorization"] = f"Bearer {token}"
    return headers


def qr_code_string() -> str:
    """What a WhatsApp Web QR encodes: ``2@`` and four comma-separated refs."""
    return "2@" + ",".join(_b64url(secrets.token_bytes(12)) for _ in range(4))


def qr_png_data_url(code: str) -> str:
    """``base64`` of a QR object: a real, scannable PNG of ``code`` as a data URL."""
    return segno.make(code, error="m").png_data_uri(scale=4)


def pairing_code() -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(8))


class ApiError(Exception):
    """Raised inside a route; rendered as Evolution's error envelope (§1)."""

    def __init__(self, status: int, message: Any, *, error: str | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.error = error or HTTPStatus(status).phrase

    def response(self) -> JSONResponse:
        return JSONResponse({"status": self.status, "error": self.error, "response": {"message": self.message}},
                            status_code=self.status)


def not_found(name: str) -> ApiError:
    return ApiError(404, [f'The "{name}" instance does not exist'])


class Unknown(KeyError):
    """A control was asked about an instance (or message) that does not exist."""


@dataclass
class FakeInstance:
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
    socket_dead: bool = False       # reports "open" but every send fails with "Connection Closed" (#2403)
    qr_count: int = 0
    qr: dict[str, Any] | None = None
    qr_at: float = 0.0              # when the current QR was made (fake clock)
    pairing_number: str | None = None
    webhook: dict[str, Any] | None = None
    disconnection_code: int | None = None
    disconnection_at: str | None = None
    disconnection_object: str | None = None
    talked_to: set[str] = field(default_factory=set)   # digits of every chat this number has had
    created_at: str = field(default_factory=now_iso)
    updated_at: str = field(default_factory=now_iso)
    settings: dict[str, Any] = field(default_factory=lambda: {
        "rejectCall": False, "msgCall": "", "groupsIgnore": False, "alwaysOnline": False, "readMessages": False,
        "readStatus": False, "syncFullHistory": False, "wavoipToken": "",
    })
    message_count: int = 0

    @classmethod
    def new(cls, name: str, *, integration: str = "WHATSAPP-BAILEYS", token: str | None = None,
            number: str | None = None) -> FakeInstance:
        return cls(name=name, id=str(uuid.uuid4()), token=token or str(uuid.uuid4()).upper(),
                   integration=integration, number=number)

    def touch(self) -> None:
        self.updated_at = now_iso()

    def row(self) -> dict[str, Any]:
        """fetchInstances row (§2.5): the disconnection fields persist until the next final close."""
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
        """connect's answer while linking (§2.3): the QR object, or ``{"count": 0}`` before the first QR."""
        if self.qr is None:
            return {"count": 0}
        return {**self.qr, "count": self.qr_count}

    def disconnection(self, code: int) -> str:
        at = now_iso()
        self.disconnection_code, self.disconnection_at = code, at
        self.disconnection_object = json.dumps({
            "error": {"data": None, "isBoom": True, "isServer": code >= 500,
                      "output": {"statusCode": code, "payload": {"statusCode": code, "error": "Fake close",
                                                                 "message": "Connection Failure"}, "headers": {}}},
            "date": at,
        }, separators=(",", ":"))
        return at


def copy(value: Any) -> Any:
    return json.loads(json.dumps(value)) if value is not None else None
