"""Salvy virtual-phone-number API client (contracts/evolution-and-salvy.md §7.2, the v2 paths).

Salvy quirks this client absorbs:

- One base URL for sandbox and production; the environment is chosen by the key (`salvy_test_` / `salvy_prod_`).
- Errors come as ``{"code", "message", "publicDetails"}``; they are normalised into one `SalvyError.kind` so
  callers branch on a small closed set instead of on status codes and provider codes.
- Asking for a line in a DDD without stock is answered 422 ``area_code_unavailable`` (what the fake does and what
  we assume of Salvy until checked live): kind ``"no_stock"`` — try another DDD, do not retry the same one.
- The docs disagree on where DELETE's ``reason`` goes (JSON body in one version, query string in another): it is
  sent in both places.
- v2 lists are bare arrays; v3 wraps them as ``{"data": [...], "pagination": {...}}`` — both shapes are read.
- An inbox SMS is the webhook's `data` object without ``virtualPhoneAccountId``: it is read by activation's one
  Salvy SMS parser (activation.salvy.salvy_sms_parse) into an `InboundSms`, the line id taken from the request.

No Django models here (activation.salvy has none either): defaults come from django.conf.settings only when an
argument is None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx

from activation.salvy import InboundSms, salvy_sms_parse
from common.exceptions import InvalidInput
from common.http import ClientError, HttpClient, iso_datetime, setting_or
from common.inbound import parse_json_body

__all__ = [
    "CANCEL_REASONS",
    "SalvyClient",
    "SalvyError",
    "SalvyErrorKind",
    "SalvyLine",
]

SalvyErrorKind = Literal["no_stock", "not_found", "unauthorized", "bad_request", "server", "timeout", "transport"]

CANCEL_REASONS = frozenset({"unnecessary", "whatsapp-ban", "technical-issues", "company-canceled"})
NO_STOCK_CODES = frozenset({"area_code_unavailable", "no_stock", "out_of_stock"})
_BASE_PATH = "/api/v2/virtual-phone-accounts"
_T = TypeVar("_T")


class SalvyError(ClientError):
    """A Salvy call that did not succeed, normalised.

    `kind` is one of SalvyErrorKind; `status_code` is the HTTP status (None when no answer came back); `code` is
    Salvy's own error code from the body when there was one (e.g. ``"unauthorized"``, ``"area_code_unavailable"``).
    Retryable: outages, timeouts, transport failures and 429 throttling.
    """

    def __init__(self, kind: SalvyErrorKind, message: str, *, status_code: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(kind, message, status_code=status_code)
        self.code = code

    def __repr__(self) -> str:
        return f"SalvyError(kind={self.kind!r}, status_code={self.status_code!r}, code={self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class SalvyLine:
    """A virtual phone account. `phone_number` is E.164 (``+5511951231234``); Evolution wants it without ``+``."""

    id: str
    name: str
    phone_number: str
    status: str  # active | blocked | canceled | pending
    created_at: datetime | None
    canceled_at: datetime | None
    cancel_reason: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> SalvyLine:
        return cls(
            id=str(data["id"]),
            name=str(data.get("name") or ""),
            phone_number=str(data.get("phoneNumber") or ""),
            status=str(data.get("status") or ""),
            created_at=iso_datetime(data.get("createdAt")),
            canceled_at=iso_datetime(data.get("canceledAt")),
            cancel_reason=data.get("cancelReason"),
            raw=data,
        )


class SalvyClient(HttpClient):
    """Synchronous Salvy client. Use as a context manager or call `close()`.

    ``SalvyClient()`` reads SALVY_API_URL, SALVY_API_TOKEN and HTTP_TIMEOUT_SECONDS; `transport` lets tests plug an
    httpx transport (e.g. httpx.MockTransport).
    """

    service = "Salvy"
    error_class = SalvyError
    url_setting = "SALVY_API_URL"

    def __init__(self, *, token: str | None = None, **options: Any) -> None:
        """`options`: base_url, timeout, transport (HttpClient's)."""
        super().__init__(headers={"Authorization": f"Bearer {setting_or(token, 'SALVY_API_TOKEN')}"}, **options)

    # --- plumbing -------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                 json: Any = None) -> httpx.Response:
        return self.exchange(method, path, operation=f"{method} {path}", params=params, json=json)

    def error_for(self, response: httpx.Response, *, operation: str, **context: Any) -> SalvyError | None:
        if response.is_success:
            return None
        status = response.status_code
        body = self.json_of(response)
        code = body.get("code") if isinstance(body, dict) and isinstance(body.get("code"), str) else None
        message = str(body.get("message") or response.text[:300]) if isinstance(body, dict) else response.text[:300]
        kind: SalvyErrorKind
        if status in (401, 403):
            kind = "unauthorized"
        elif status == 404:
            kind = "not_found"
        elif code in NO_STOCK_CODES:
            kind = "no_stock"
        elif status >= 500 or status == 429:
            kind = "server"
        else:
            kind = "bad_request"
        return SalvyError(kind, f"Salvy {operation} -> {status}: {message}", status_code=status, code=code)

    @staticmethod
    def _json(response: httpx.Response, *, strip_nuls: bool = False) -> Any:
        """The body's JSON; `strip_nuls` for what we may store (SMS texts), as the webhook parses it."""
        try:
            return parse_json_body(response.content, strip_nuls=True) if strip_nuls else response.json()
        except (ValueError, InvalidInput):
            raise SalvyError("server", f"Salvy answered {response.status_code} with a non-JSON body",
                             status_code=response.status_code) from None

    @staticmethod
    def _path(line_id: str) -> str:
        return f"{_BASE_PATH}/{quote(str(line_id), safe='')}"

    def _line(self, response: httpx.Response) -> SalvyLine:
        data = self._json(response)
        try:
            return SalvyLine.from_api(data)
        except (KeyError, TypeError, AttributeError):
            raise SalvyError("server", f"unexpected Salvy account object: {data!r:.300}",
                             status_code=response.status_code) from None

    @staticmethod
    def _many(items: Any, factory: Callable[[Any], _T]) -> list[_T]:
        try:
            return [factory(item) for item in items or []]
        except InvalidInput as exc:
            raise SalvyError("server", f"unexpected Salvy list item ({exc.message}): {items!r:.300}") from None
        except (KeyError, TypeError, AttributeError):
            raise SalvyError("server", f"unexpected Salvy list: {items!r:.300}") from None

    # --- API ------------------------------------------------------------------------------------------------

    def area_codes(self, *, available_only: bool = True) -> list[int]:
        """DDDs Salvy lists; with `available_only`, only those with stock right now (filtered here too)."""
        params = {"available": "true"} if available_only else None
        data = self._json(self._request("GET", f"{_BASE_PATH}/area-codes", params=params))
        items = data.get("areaCodes", []) if isinstance(data, dict) else []
        return [int(item["areaCode"]) for item in items
                if isinstance(item, dict) and "areaCode" in item and (not available_only or item.get("available"))]

    def provision(self, *, area_code: int, name: str) -> SalvyLine:
        """Buy a line in `area_code`. Billing starts now; SalvyError kind "no_stock" when the DDD has none."""
        response = self._request("POST", _BASE_PATH, json={"areaCode": int(area_code), "name": name})
        return self._line(response)

    def get(self, line_id: str) -> SalvyLine:
        return self._line(self._request("GET", self._path(line_id)))

    def list_lines(self) -> list[SalvyLine]:
        data = self._json(self._request("GET", _BASE_PATH))
        items = data.get("data", []) if isinstance(data, dict) else data
        return self._many(items, SalvyLine.from_api)

    def list_sms(self, line_id: str) -> list[InboundSms]:
        """The line's inbox — the fallback when the `sms.received` webhook is late or lost — read as the webhook's
        SMS are (NULs stripped, same fields, same WhatsApp code); a malformed item is a SalvyError "server"."""
        data = self._json(self._request("GET", f"{self._path(line_id)}/sms-messages"), strip_nuls=True)
        items = data.get("smsMessages", []) if isinstance(data, dict) else data
        return self._many(items, lambda item: salvy_sms_parse(item, line_id=str(line_id)))

    def cancel(self, line_id: str, *, reason: str) -> None:
        """Cancel immediately (Salvy bills the full month anyway). `reason` goes in the body and the query string."""
        if reason not in CANCEL_REASONS:
            raise ValueError(f"reason must be one of {sorted(CANCEL_REASONS)}, not {reason!r}")
        self._request("DELETE", self._path(line_id), params={"reason": reason}, json={"reason": reason})
