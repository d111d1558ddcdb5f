"""How Evolution 2.3.7 says a call failed, turned into the pool's one GatewayError.

Quirks absorbed here (contracts/evolution-and-salvy.md §1, field notes §7-§8):

* ``response.message`` of the error envelope is polymorphic (string | list of strings | list of lists | list of
  objects); :func:`normalize_messages` flattens it so every error carries ``list[str]``.
* Some controllers (connect, restart) swallow their errors and answer **HTTP 200 with ``{"error": true}``**;
  that is an error (``error_body``), never a success.
* A send on a dead socket answers 500 ``"Connection Closed"`` (also on a never-connected instance: "Cannot read
  properties of undefined (reading 'onWhatsApp')") while the instance may still *report* open: kind
  ``connection_closed``, so the caller can take the chip out of routing and ask for a restart.
* Guard order on the server is instance-exists -> name-in-use -> apikey, so an unknown instance answers 404 even
  with a wrong key and a taken name answers 403 before the key is looked at. Do not read a 404 as "key is fine".
* 2.4 answers ``503 {"code": "LICENSE_REQUIRED", ...}`` until licensed: kind ``license_required``, not "down".
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from instances.gateway.base import GatewayError

_DEAD_SOCKET_MARKERS = ("connection closed", "reading 'onwhatsapp'")


def normalize_messages(raw: Any) -> list[str]:
    """Flatten Evolution's polymorphic ``response.message`` into a list of strings.

    Seen in the wild: ``"Unauthorized"`` (401), ``["The \\"x\\" instance does not exist"]`` (guards),
    ``[["instance requires property \\"text\\""]]`` (JSON-schema validation), ``[{"jid": ..., "exists": false,
    "number": ...}]`` (number not on WhatsApp) and plain strings for 500s. Objects become
    ``"number X not on WhatsApp"`` when they are such a lookup result, else their compact JSON.
    """
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list | tuple):
        out: list[str] = []
        for item in raw:
            out.extend(normalize_messages(item))
        return out
    if isinstance(raw, dict):
        if raw.get("exists") is False:
            return [f"number {raw.get('number') or raw.get('jid') or '?'} not on WhatsApp"]
        return [json.dumps(raw, ensure_ascii=False, sort_keys=True, separators=(",", ":"))]
    return [str(raw)]


def _raw_messages(payload: Any) -> Any:
    """Where the message lives: ``response.message`` (error envelope) or top-level ``message`` (200-with-error
    bodies, whatsappNumbers' raw errors, the 2.4 licence gate)."""
    if isinstance(payload, dict):
        response = payload.get("response")
        if isinstance(response, dict) and "message" in response:
            return response["message"]
        if "message" in payload:
            return payload["message"]
        if isinstance(payload.get("error"), str):
            return payload["error"]
    return None


def _contains_not_on_whatsapp(raw: Any) -> bool:
    if isinstance(raw, dict):
        return raw.get("exists") is False
    if isinstance(raw, list | tuple):
        return any(_contains_not_on_whatsapp(item) for item in raw)
    return False


def kind_for_status(status: int, payload: Any, messages: list[str]) -> str:
    raw = _raw_messages(payload)
    text = " ".join(messages).lower()
    if status == 401:
        return "unauthorized"
    if status == 404:
        # "Cannot GET /foo" is Express' unknown-route answer: a client/version bug, not a missing instance.
        if any(m.startswith("Cannot ") for m in messages):
            return "bad_request"
        return "not_found"
    if status == 403 and "already in use" in text:
        return "exists"
    if status == 400 and _contains_not_on_whatsapp(raw):
        return "not_on_whatsapp"
    if status == 503 and isinstance(payload, dict) and payload.get("code") == "LICENSE_REQUIRED":
        return "license_required"
    if status >= 500 and any(marker in text for marker in _DEAD_SOCKET_MARKERS):
        return "connection_closed"
    if status >= 500:
        return "server"
    return "bad_request"


def decode(response: httpx.Response) -> tuple[Any, bool]:
    """(payload, is_json). A non-JSON body (proxy HTML page, empty body) is not an exception here."""
    if not response.content:
        return None, False
    try:
        return response.json(), True
    except ValueError:
        return None, False


def error_from_response(response: httpx.Response, operation: str, instance: str | None) -> GatewayError | None:
    """The GatewayError this response represents, or None when it is a real success."""
    payload, is_json = decode(response)
    status = response.status_code
    if 200 <= status < 300:
        if isinstance(payload, dict) and payload.get("error") is True:
            # connect/restart swallow exceptions and answer 200 {"error": true, "message": "[object Object]"}.
            return GatewayError("error_body", operation=operation, instance=instance, status_code=status,
                                messages=normalize_messages(_raw_messages(payload)), payload=payload)
        return None
    if is_json:
        messages = normalize_messages(_raw_messages(payload))
    else:
        snippet = response.text.strip()[:200]
        messages = [f"non-JSON body: {snippet}"] if snippet else []
    return GatewayError(kind_for_status(status, payload, messages), operation=operation, instance=instance,
                        status_code=status, messages=messages, payload=payload)


def transport_error(exc: httpx.HTTPError, operation: str, instance: str | None, read: float) -> GatewayError:
    if isinstance(exc, httpx.TimeoutException):
        return GatewayError("timeout", operation=operation, instance=instance,
                            messages=[f"{type(exc).__name__} (read timeout {read:g} s)"])
    return GatewayError("transport", operation=operation, instance=instance,
                        messages=[f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__])


def unexpected(operation: str, instance: str | None, status: int, payload: Any, what: str) -> GatewayError:
    return GatewayError("error_body", operation=operation, instance=instance, status_code=status,
                        messages=[f"unexpected response shape: {what}"], payload=payload)


def state_from(payload: Any, operation: str, instance: str, status: int) -> str:
    try:
        state = payload["instance"]["state"]
    except (KeyError, TypeError):
        raise unexpected(operation, instance, status, payload, "no instance.state") from None
    if not isinstance(state, str):
        raise unexpected(operation, instance, status, payload, "instance.state is not a string")
    return state
