"""Evolution API v2 client (httpx) — the one place that knows how Evolution really answers.

The contract lives in ../shared/contracts/evolution-and-salvy.md (sections 1, 2 and 5). The quirks this module
absorbs so that callers do not have to:

* Auth is a plain ``apikey: <key>`` header (no ``Bearer``).
* Guard order on the server is instance-exists -> name-in-use -> apikey, so an unknown instance answers 404 even
  with a wrong key and a taken name answers 403 before the key is looked at. Do not read a 404 as "key is fine".
* ``response.message`` of the error envelope is polymorphic (string | list of strings | list of lists | list of
  objects); :func:`normalize_messages` flattens it so every :class:`EvolutionError` carries ``list[str]``.
* Some controllers (connect, restart) swallow their errors and answer **HTTP 200 with ``{"error": true}``**;
  that is raised as ``kind="error_body"``, never returned as a success.
* ``sendText`` is **not idempotent** (Evolution has no idempotency key; a retried POST is a second WhatsApp
  message), so it is never retried here, whatever the error. ``create`` is not retried either: the caller must
  check ``fetch_instances(name=...)`` first. Only reads (connectionState, fetchInstances, connect) retry once.
* The server blocks inside some calls (create with a QR: ~5 s, connect: ~2 s, sendText: the whole ``delay``), so
  read timeouts are per operation (contract section 5) instead of one global number.

This module knows Django *settings* only (defaults for URL, key, timeout, webhook secret); it never imports
models, so it can be used from tasks, commands, the sandbox and tests alike.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from chips.http import tls_context

logger = logging.getLogger(__name__)

__all__ = [
    "ERROR_KINDS",
    "WEBHOOK_EVENTS",
    "ConnectResult",
    "EvolutionClient",
    "EvolutionError",
    "SendResult",
    "fetch_connection_states",
    "normalize_messages",
]

#: Events every per-instance webhook subscribes to (UPPER_SNAKE config names; the envelopes carry the dotted
#: lower-case form, e.g. ``connection.update``). An empty list would mean "all events" to Evolution.
WEBHOOK_EVENTS = [
    "QRCODE_UPDATED",
    "CONNECTION_UPDATE",
    "STATUS_INSTANCE",
    "LOGOUT_INSTANCE",
    "MESSAGES_UPSERT",
    "MESSAGES_UPDATE",
    "SEND_MESSAGE",
]

INTEGRATION = "WHATSAPP-BAILEYS"
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"

ERROR_KINDS = (
    "not_found", "exists", "not_on_whatsapp", "unauthorized", "bad_request", "server", "timeout", "transport",
    "error_body",
)

# Timeouts (seconds). The connect timeout is short: Evolution is on our network, a slow TCP handshake means it
# is down. Read floors follow the contract: connect sleeps ~2 s server-side, create with qrcode=true ~5 s, and
# sendText holds the HTTP call open for the whole typing ``delay``.
CONNECT_TIMEOUT = 5.0
CONNECT_OP_MIN_READ = 15.0
CREATE_QR_MIN_READ = 20.0
SEND_TEXT_MIN_READ = 20.0
RETRY_BACKOFF_SECONDS = 0.25


# --------------------------------------------------------------------------------------------- errors


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


def _kind_for_status(status: int, payload: Any, messages: list[str]) -> str:
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
    if status >= 500:
        return "server"
    return "bad_request"


class EvolutionError(Exception):
    """Any failed Evolution call, normalised.

    ``kind`` is one of :data:`ERROR_KINDS`; ``status_code`` is ``None`` for timeouts and transport errors;
    ``messages`` is the flattened ``response.message``; ``payload`` the parsed body (``None`` if absent or not
    JSON). ``operation``/``instance`` say what was being done, for logs.
    """

    def __init__(
        self,
        kind: str,
        *,
        operation: str = "request",
        instance: str | None = None,
        status_code: int | None = None,
        messages: list[str] | None = None,
        payload: Any = None,
    ) -> None:
        self.kind = kind
        self.operation = operation
        self.instance = instance
        self.status_code = status_code
        self.messages = list(messages or [])
        self.payload = payload
        super().__init__(kind)

    @property
    def retryable(self) -> bool:
        """True for timeouts, transport errors and 5xx.

        Advisory for idempotent reads only. For ``send_text`` a timeout may mean the message *was* sent: never
        use this flag to resend; reconcile through the ``send.message``/``messages.update`` webhooks instead.
        """
        if self.kind in ("timeout", "transport"):
            return True
        return self.kind == "server" and (self.status_code or 0) >= 500

    def __str__(self) -> str:
        target = f"{self.operation} {self.instance!r}" if self.instance is not None else self.operation
        where = f"HTTP {self.status_code}" if self.status_code is not None else "no response"
        text = "; ".join(self.messages) if self.messages else "(no message)"
        return f"Evolution {target} failed: {where} [{self.kind}]: {text}"

    def __repr__(self) -> str:
        return (f"EvolutionError(kind={self.kind!r}, operation={self.operation!r}, instance={self.instance!r}, "
                f"status_code={self.status_code!r}, messages={self.messages!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor: teach pickle (Celery results, multiprocessing) how to rebuild us.
        return (_rebuild_error, (self.__dict__.copy(),))


def _rebuild_error(state: dict[str, Any]) -> EvolutionError:
    err = EvolutionError(state.get("kind", "error_body"))
    err.__dict__.update(state)
    return err


def _decode(response: httpx.Response) -> tuple[Any, bool]:
    """(payload, is_json). A non-JSON body (proxy HTML page, empty body) is not an exception here."""
    if not response.content:
        return None, False
    try:
        return response.json(), True
    except ValueError:
        return None, False


def _error_from_response(response: httpx.Response, operation: str, instance: str | None) -> EvolutionError | None:
    """The EvolutionError this response represents, or None when it is a real success."""
    payload, is_json = _decode(response)
    status = response.status_code
    if 200 <= status < 300:
        if isinstance(payload, dict) and payload.get("error") is True:
            # connect/restart swallow exceptions and answer 200 {"error": true, "message": "[object Object]"}.
            return EvolutionError("error_body", operation=operation, instance=instance, status_code=status,
                                  messages=normalize_messages(_raw_messages(payload)), payload=payload)
        return None
    if is_json:
        messages = normalize_messages(_raw_messages(payload))
    else:
        snippet = response.text.strip()[:200]
        messages = [f"non-JSON body: {snippet}"] if snippet else []
    return EvolutionError(_kind_for_status(status, payload, messages), operation=operation, instance=instance,
                          status_code=status, messages=messages, payload=payload)


def _transport_error(exc: httpx.HTTPError, operation: str, instance: str | None, read: float) -> EvolutionError:
    if isinstance(exc, httpx.TimeoutException):
        return EvolutionError("timeout", operation=operation, instance=instance,
                              messages=[f"{type(exc).__name__} (read timeout {read:g} s)"])
    return EvolutionError("transport", operation=operation, instance=instance,
                          messages=[f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__])


def _unexpected(operation: str, instance: str | None, status: int, payload: Any, what: str) -> EvolutionError:
    return EvolutionError("error_body", operation=operation, instance=instance, status_code=status,
                          messages=[f"unexpected response shape: {what}"], payload=payload)


def _state_from(payload: Any, operation: str, instance: str, status: int) -> str:
    try:
        state = payload["instance"]["state"]
    except (KeyError, TypeError):
        raise _unexpected(operation, instance, status, payload, "no instance.state") from None
    if not isinstance(state, str):
        raise _unexpected(operation, instance, status, payload, "instance.state is not a string")
    return state


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class SendResult:
    """What sendText answered (201). ``message_id`` is ``key.id`` — the correlation key of later
    ``messages.update`` receipts. ``remote_jid`` can differ from the number sent (Evolution normalises it)."""

    message_id: str
    remote_jid: str
    status: str
    raw: dict

    @classmethod
    def from_payload(cls, payload: dict) -> SendResult:
        key = payload["key"]
        return cls(message_id=str(key["id"]), remote_jid=str(key.get("remoteJid") or ""),
                   status=str(payload.get("status") or ""), raw=payload)


@dataclass(frozen=True)
class ConnectResult:
    """What connect answered. Three shapes share this endpoint: the QR object
    (``{pairingCode, code, base64, count}``), ``{"count": 0}`` when no QR exists yet (poll again), and
    ``{"instance": {..., "state": "open"}}`` when already connected (all QR fields ``None``; see :attr:`state`)."""

    code: str | None
    base64: str | None
    pairing_code: str | None
    count: int | None
    raw: dict

    @property
    def state(self) -> str | None:
        """``"open"`` when connect found the instance already connected, else ``None``."""
        inst = self.raw.get("instance")
        return inst.get("state") if isinstance(inst, dict) else None

    @classmethod
    def from_payload(cls, payload: dict) -> ConnectResult:
        count = payload.get("count")
        return cls(code=payload.get("code"), base64=payload.get("base64"), pairing_code=payload.get("pairingCode"),
                   count=int(count) if isinstance(count, int | float) else None, raw=payload)


# --------------------------------------------------------------------------------------------- settings


def _setting(name: str) -> Any:
    from django.conf import settings  # imported lazily: the module must import without Django configured

    return getattr(settings, name)


def _digits(number: str) -> str:
    """create/connect validate ``number`` as digits only (a leading '+' is a 400); strip formatting."""
    return "".join(ch for ch in number if ch.isdigit())


def _path(template: str, name: str) -> str:
    return template.format(quote(name, safe=""))


# --------------------------------------------------------------------------------------------- sync client


class EvolutionClient:
    """Synchronous Evolution API v2 client with the global API key.

    ``EvolutionClient()`` reads ``EVOLUTION_API_URL``, ``EVOLUTION_API_KEY`` and ``HTTP_TIMEOUT_SECONDS`` from
    Django settings; pass them explicitly (or an httpx ``transport``) in tests. One pooled ``httpx.Client`` per
    instance of this class: reuse it, and ``close()`` it (or use ``with``).
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url if base_url is not None else _setting("EVOLUTION_API_URL")).rstrip("/")
        self.api_key = api_key if api_key is not None else _setting("EVOLUTION_API_KEY")
        self.timeout = float(timeout if timeout is not None else _setting("HTTP_TIMEOUT_SECONDS"))
        self._http = httpx.Client(
            verify=tls_context(),
            base_url=self.base_url,
            headers={"apikey": self.api_key, "Accept": "application/json"},
            timeout=self._timeout(self.timeout),
            transport=transport,
        )

    # -- plumbing ------------------------------------------------------------------------------------------

    def _timeout(self, read: float) -> httpx.Timeout:
        return httpx.Timeout(read, connect=min(CONNECT_TIMEOUT, self.timeout))

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        instance: str | None = None,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        read_timeout: float | None = None,
        retry: bool = False,
    ) -> tuple[Any, int]:
        """One HTTP exchange -> (payload, status), or EvolutionError. ``retry`` allows ONE more attempt after a
        timeout/transport error/5xx, and must only be set for calls that are safe to repeat."""
        read = read_timeout if read_timeout is not None else self.timeout
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._http.request(method, path, json=json_body, params=params,
                                              timeout=self._timeout(read))
            except httpx.HTTPError as exc:
                err = _transport_error(exc, operation, instance, read)
            else:
                err = _error_from_response(response, operation, instance)
                if err is None:
                    return _decode(response)[0], response.status_code
            if attempt < attempts and err.retryable:
                logger.warning("%s; retrying once", err)
                time.sleep(RETRY_BACKOFF_SECONDS)
                continue
            raise err
        raise AssertionError("unreachable")  # pragma: no cover

    def _dict(self, operation: str, instance: str | None, payload: Any, status: int) -> dict:
        if not isinstance(payload, dict):
            raise _unexpected(operation, instance, status, payload, "expected a JSON object")
        return payload

    # -- instances -----------------------------------------------------------------------------------------

    def create_instance(
        self,
        name: str,
        *,
        number: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        qrcode: bool = False,
    ) -> dict:
        """POST /instance/create (201) with integration WHATSAPP-BAILEYS; returns the whole response
        (``hash`` is the instance token). Never retried: on a timeout, check ``fetch_instances(name=...)``
        before trying again (a retry after a server-side success answers 403 "already in use").

        With ``webhook_url`` the per-instance webhook is created in the same call, carrying
        ``X-Webhook-Secret`` (``webhook_secret`` or settings ``EVOLUTION_WEBHOOK_SECRET``) and an explicit event
        list — Evolution 400s and rolls back the create when ``events`` is omitted.
        """
        body: dict[str, Any] = {"instanceName": name, "integration": INTEGRATION, "qrcode": bool(qrcode)}
        if number:
            body["number"] = _digits(number)
        if webhook_url:
            secret = webhook_secret if webhook_secret is not None else _setting("EVOLUTION_WEBHOOK_SECRET")
            body["webhook"] = {
                "url": webhook_url,
                "byEvents": False,
                "base64": False,
                "headers": {WEBHOOK_SECRET_HEADER: secret},
                "events": list(WEBHOOK_EVENTS),
            }
        # With qrcode=true the server waits ~5 s for the first QR before answering.
        read = max(self.timeout, CREATE_QR_MIN_READ) if qrcode else self.timeout
        payload, status = self._call("create", "POST", "/instance/create", instance=name, json_body=body,
                                     read_timeout=read)
        return self._dict("create", name, payload, status)

    def connect(self, name: str, *, number: str | None = None) -> ConnectResult:
        """GET /instance/connect/{name}: start pairing (state close -> connecting) or read the current QR.

        Answers ``count == 0`` when no QR exists yet (poll again), and ``ConnectResult.state == "open"`` when
        already connected. With ``number`` a pairing code is requested too. Safe to retry once (repeating
        connect on a connecting instance only returns the current QR).
        """
        params = {"number": _digits(number)} if number else None
        payload, status = self._call("connect", "GET", _path("/instance/connect/{}", name), instance=name,
                                     params=params, read_timeout=max(self.timeout, CONNECT_OP_MIN_READ), retry=True)
        return ConnectResult.from_payload(self._dict("connect", name, payload, status))

    def connection_state(self, name: str) -> str:
        """GET /instance/connectionState/{name} -> the live socket state: "open" | "connecting" | "close".

        Live, unlike fetchInstances' ``connectionStatus`` (a DB column that lags). Right after a transient drop
        it may read "close" for a moment while Evolution reconnects by itself.
        """
        payload, status = self._call("connectionState", "GET", _path("/instance/connectionState/{}", name),
                                     instance=name, retry=True)
        return _state_from(payload, "connectionState", name, status)

    def fetch_instances(self, *, name: str | None = None) -> list[dict]:
        """GET /instance/fetchInstances[?instanceName=] -> the DB rows (flat list; docs show an outdated
        ``[{instance: {...}}]`` shape). ``disconnectionReasonCode/At/Object`` are the persisted ban/logout
        evidence. An unknown ``name`` raises ``not_found``."""
        params = {"instanceName": name} if name is not None else None
        payload, status = self._call("fetchInstances", "GET", "/instance/fetchInstances", instance=name,
                                     params=params, retry=True)
        if isinstance(payload, dict):  # defensive: a single row
            payload = [payload]
        if not isinstance(payload, list):
            raise _unexpected("fetchInstances", name, status, payload, "expected a JSON array")
        return payload

    def restart(self, name: str) -> dict:
        """POST /instance/restart/{name} (POST, not the PUT the docs show). Fire-and-forget: confirm through
        ``connection.update``/``connection_state``. On a closed instance Evolution answers 200
        ``{"error": true, "message": "[object Object]"}`` -> ``EvolutionError(kind="error_body")``."""
        payload, status = self._call("restart", "POST", _path("/instance/restart/{}", name), instance=name)
        return self._dict("restart", name, payload, status)

    def logout(self, name: str) -> None:
        """DELETE /instance/logout/{name}: unlink the device and wipe credentials; the instance stays (re-pair
        with connect). A closed instance answers 400 "not connected" (``bad_request``) on 2.3.x. Webhooks
        ``status.instance``/``logout.instance``/``connection.update`` close 401 follow."""
        self._call("logout", "DELETE", _path("/instance/logout/{}", name), instance=name)

    def delete(self, name: str) -> None:
        """DELETE /instance/delete/{name}: logout if needed, then purge; later calls answer ``not_found``."""
        self._call("delete", "DELETE", _path("/instance/delete/{}", name), instance=name)

    # -- webhook -------------------------------------------------------------------------------------------

    def set_webhook(self, name: str, *, url: str, secret: str, events: list[str] | None = None) -> dict:
        """POST /webhook/set/{name} (201) -> the stored row. The body is the *nested* ``{"webhook": {...}}``
        form (the flat form in the docs is a 400). ``events`` defaults to :data:`WEBHOOK_EVENTS` and is always
        sent (omitting it with enabled=true crashes the server). The secret travels as ``X-Webhook-Secret``."""
        body = {
            "webhook": {
                "enabled": True,
                "url": url,
                "headers": {WEBHOOK_SECRET_HEADER: secret},
                "byEvents": False,
                "base64": False,
                "events": list(WEBHOOK_EVENTS if events is None else events),
            }
        }
        payload, status = self._call("setWebhook", "POST", _path("/webhook/set/{}", name), instance=name,
                                     json_body=body)
        return self._dict("setWebhook", name, payload, status)

    # -- messages ------------------------------------------------------------------------------------------

    def send_text(self, name: str, *, number: str, text: str, delay_ms: int | None = None) -> SendResult:
        """POST /message/sendText/{name} (201). **Never retried**: Evolution has no idempotency key, so a
        second POST is a second WhatsApp message, and a timeout does not mean it was not sent. Callers persist
        an outbox row first and reconcile by ``key.id`` from ``send.message``/``messages.update`` webhooks.

        The server holds the call open for the whole ``delay`` ("typing..."), hence read timeout
        ``max(timeout, 20 s) + delay``.
        """
        body: dict[str, Any] = {"number": number, "text": text}
        if delay_ms:
            body["delay"] = int(delay_ms)
        read = max(self.timeout, SEND_TEXT_MIN_READ) + (delay_ms or 0) / 1000
        try:
            payload, status = self._call("sendText", "POST", _path("/message/sendText/{}", name), instance=name,
                                         json_body=body, read_timeout=read, retry=False)
        except EvolutionError as exc:
            if exc.kind == "timeout":
                exc.messages.append("outcome unknown: the message may have been sent; do not resend blindly")
            raise
        payload = self._dict("sendText", name, payload, status)
        try:
            return SendResult.from_payload(payload)
        except (KeyError, TypeError):
            raise _unexpected("sendText", name, status, payload, "no key.id") from None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EvolutionClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------- bulk async


POOL_CONNECTIONS = 8


async def _read_state(http: httpx.AsyncClient, name: str, read: float) -> str | EvolutionError:
    try:
        response = await http.get(_path("/instance/connectionState/{}", name))
    except httpx.HTTPError as exc:
        return _transport_error(exc, "connectionState", name, read)
    except Exception as exc:  # the contract is "never raise": one odd failure must not sink the sweep
        logger.exception("connectionState %r: unexpected error", name)
        return EvolutionError("transport", operation="connectionState", instance=name,
                              messages=[f"{type(exc).__name__}: {exc}"])
    err = _error_from_response(response, "connectionState", name)
    if err is not None:
        return err
    try:
        return _state_from(_decode(response)[0], "connectionState", name, response.status_code)
    except EvolutionError as exc:
        return exc


async def fetch_connection_states(
    names: Iterable[str],
    *,
    concurrency: int = 50,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
) -> dict[str, str | EvolutionError]:
    """Read every instance's live ``connectionState`` concurrently -> ``{name: state or EvolutionError}``.

    At most ``concurrency`` requests are in flight (Evolution has no rate limiting of its own, so we must
    not flood it): that many workers pull names from one shared iterator. They are spread over several
    small ``httpx.AsyncClient`` pools of at most ``POOL_CONNECTIONS`` connections, because httpcore's pool
    scans all its connections on every request (quadratic; encode/httpcore#1035): one 50-connection pool
    made the sweep CPU-bound. Every failure (timeout, 5xx, 404, ...) becomes that name's value; nothing is
    raised. Failures are not retried within a sweep: the next poll is the retry.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    url = (base_url if base_url is not None else _setting("EVOLUTION_API_URL")).rstrip("/")
    key = api_key if api_key is not None else _setting("EVOLUTION_API_KEY")
    read = float(timeout if timeout is not None else _setting("HTTP_TIMEOUT_SECONDS"))
    unique = list(dict.fromkeys(names))
    results: dict[str, str | EvolutionError] = {}
    pool_size = min(concurrency, POOL_CONNECTIONS)
    clients = [
        httpx.AsyncClient(base_url=url, headers={"apikey": key, "Accept": "application/json"}, verify=tls_context(),
                          timeout=httpx.Timeout(read, connect=min(CONNECT_TIMEOUT, read)),
                          limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size))
        for _ in range(-(-concurrency // pool_size))
    ]
    pending = iter(unique)

    async def worker(http: httpx.AsyncClient) -> None:
        for name in pending:
            results[name] = await _read_state(http, name, read)

    try:
        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(min(concurrency, len(unique)))))
    finally:
        for http in clients:
            await http.aclose()
    return {name: results[name] for name in unique}
