"""Client of the VPS chip activator (contracts/chip-activator.md).

The activator drives an Android emulator: it registers a number on WhatsApp with the SMS code, then links it to
Evolution by scanning the instance's QR. It works one number at a time from a queue, which explains its quirks:

- ``POST /activate`` answers **503 when the queue is full**: kind ``"queue_full"``, retryable — submit later.
- An activation takes 1–10 minutes; the caller polls ``GET /activate/{id}`` (~every 10 s) and gives up itself.
- The wire speaks Portuguese (``numero``, ``codigo_sms``, ``tempo_segundos``); `numero` is the *national* number
  (no ``+55``), so E.164 input is converted here.
- ``X-API-Key`` on every route but ``/health`` (sent there too; it is ignored).
- On failure, ``step`` and ``screenshot_path`` say where the emulator stopped: both belong in the operator alert.

No Django models here: defaults come from django.conf.settings only when an argument is None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

import httpx

from common.http import ClientError, HttpClient, setting_or

__all__ = ["ActivationStatus", "ActivatorClient", "ActivatorError", "ActivatorErrorKind", "national_number"]

ActivatorErrorKind = Literal["queue_full", "unauthorized", "not_found", "bad_request", "server", "timeout",
                             "transport"]

TERMINAL_STATUSES = frozenset({"success", "failed"})


class ActivatorError(ClientError):
    """An activator call that did not succeed, normalised to a `kind` (see ActivatorErrorKind).

    Retryable: a full queue, an outage, a timeout or a dropped connection — the same call may work later.
    """

    RETRYABLE_KINDS = frozenset({"queue_full", "server", "timeout", "transport"})

    def __init__(self, kind: ActivatorErrorKind, message: str, *, status_code: int | None = None) -> None:
        super().__init__(kind, message, status_code=status_code)


@dataclass(frozen=True)
class ActivationStatus:
    """``GET /activate/{id}``: `status` ∈ queued | running | success | failed; `seconds` is ``tempo_segundos``."""

    status: str
    message: str
    seconds: int
    step: str | None
    screenshot_path: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == "success"

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ActivationStatus:
        try:
            seconds = int(data.get("tempo_segundos") or 0)
        except (TypeError, ValueError):
            seconds = 0
        return cls(
            status=str(data["status"]),
            message=str(data.get("message") or ""),
            seconds=seconds,
            step=data.get("step"),
            screenshot_path=data.get("screenshot_path"),
            raw=data,
        )


def national_number(number: str) -> str:
    """``"+5511999990001"`` / ``"5511999990001"`` / ``"(11) 99999-0001"`` → ``"11999990001"``.

    Only a 12–13 digit number starting with 55 loses its country code: DDD 55 exists (RS), so an 11-digit
    ``"55999990001"`` is already national and must stay as it is.
    """
    digits = re.sub(r"\D", "", number)
    if len(digits) in (12, 13) and digits.startswith("55"):
        digits = digits[2:]
    if len(digits) not in (10, 11):
        raise ValueError(f"not a Brazilian phone number: {number!r}")
    return digits


class ActivatorClient(HttpClient):
    """Synchronous activator client. Use as a context manager or call `close()`.

    ``ActivatorClient()`` reads CHIP_ACTIVATOR_URL, CHIP_ACTIVATOR_API_KEY and HTTP_TIMEOUT_SECONDS.
    """

    service = "activator"
    error_class = ActivatorError
    url_setting = "CHIP_ACTIVATOR_URL"

    def __init__(self, *, api_key: str | None = None, **options: Any) -> None:
        super().__init__(headers={"X-API-Key": str(setting_or(api_key, "CHIP_ACTIVATOR_API_KEY"))}, **options)

    def error_for(self, response: httpx.Response, *, operation: str, **context: Any) -> ActivatorError | None:
        if response.is_success:
            return None
        status = response.status_code
        kind: ActivatorErrorKind
        if status == 503 and operation == "POST /activate":
            kind = "queue_full"
        elif status in (401, 403):
            kind = "unauthorized"
        elif status == 404:
            kind = "not_found"
        elif status >= 500 or status == 429:
            kind = "server"
        else:
            kind = "bad_request"
        return ActivatorError(kind, f"activator {operation} -> {status}: {response.text[:300]}", status_code=status)

    def _request(self, method: str, path: str, *, json: Any = None) -> Any:
        response = self.exchange(method, path, operation=f"{method} {path}", json=json)
        try:
            return response.json()
        except ValueError:
            raise ActivatorError("server", f"activator {method} {path} -> {response.status_code} with a non-JSON body",
                                 status_code=response.status_code) from None

    def health(self) -> dict[str, Any]:
        """``{"status": "healthy" | "degraded" | "unhealthy", ...}`` — no key needed."""
        return dict(self._request("GET", "/health"))

    def queue(self) -> dict[str, Any]:
        """``{"size": int, "items": [...], "current": {...} | None}``."""
        return dict(self._request("GET", "/queue"))

    def submit(self, *, number: str, sms_code: str, evolution_qr_url: str) -> str:
        """Queue an activation and return its id. `number` may be E.164; ActivatorError kind "queue_full" on 503."""
        payload = {"numero": national_number(number), "codigo_sms": str(sms_code).strip(),
                   "evolution_qr_url": evolution_qr_url}
        data = self._request("POST", "/activate", json=payload)
        activation_id = data.get("activation_id") if isinstance(data, dict) else None
        if not activation_id:
            raise ActivatorError("server", f"activator answered without an activation_id: {data!r:.300}")
        return str(activation_id)

    def status(self, activation_id: str) -> ActivationStatus:
        data = self._request("GET", f"/activate/{quote(str(activation_id), safe='')}")
        try:
            return ActivationStatus.from_api(data)
        except (KeyError, TypeError, AttributeError):
            raise ActivatorError("server", f"unexpected activation status: {data!r:.300}") from None
