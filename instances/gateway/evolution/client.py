"""Evolution API 2.3.7 as the pool's gateway (httpx) — the one place that knows how Evolution really answers.

The contract lives in ../shared/contracts/evolution-and-salvy.md (§1, §2, §5) and the field notes. Beyond what
:mod:`.errors` absorbs:

* Auth is a plain ``apikey: <key>`` header (no ``Bearer``).
* ``sendText`` is **not idempotent** (no idempotency key; a retried POST is a second WhatsApp message), so it is
  never retried here, whatever the error. ``create`` is not retried either: the caller checks
  ``list_instances`` first. Only reads (connectionState, fetchInstances, connect) retry once.
* The server blocks inside some calls (create with a QR: ~5 s, connect: ~2 s, sendText: the whole ``delay``), so
  read timeouts are per operation instead of one global number.

This module knows Django *settings* only (defaults for URL, key, timeout); it never imports models.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import httpx

from common.http import HttpClient, iso_datetime, setting_or
from instances.gateway.base import (
    ConnectInfo,
    GatewayError,
    InstanceRecord,
    SendResult,
    WebhookConfig,
)
from instances.gateway.evolution import errors

logger = logging.getLogger(__name__)

#: Events every per-instance webhook subscribes to (UPPER_SNAKE config names; the envelopes carry the dotted
#: lower-case form, e.g. ``connection.update``). An empty list would mean "all events" to Evolution.
WEBHOOK_EVENTS = (
    "QRCODE_UPDATED",
    "CONNECTION_UPDATE",
    "STATUS_INSTANCE",
    "LOGOUT_INSTANCE",
    "REMOVE_INSTANCE",
    "MESSAGES_UPSERT",
    "MESSAGES_UPDATE",
    "SEND_MESSAGE",
)

INTEGRATION = "WHATSAPP-BAILEYS"
WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"

# Read floors (seconds) from the contract: connect sleeps ~2 s server-side, create with qrcode=true ~5 s, and
# sendText holds the HTTP call open for the whole typing ``delay``.
CONNECT_OP_MIN_READ = 15.0
CREATE_QR_MIN_READ = 20.0
SEND_TEXT_MIN_READ = 20.0
RETRY_BACKOFF_SECONDS = 0.25


def _digits(number: str) -> str:
    """create/connect validate ``number`` as digits only (a leading '+' is a 400); strip formatting."""
    return "".join(ch for ch in number if ch.isdigit())


def _path(template: str, name: str) -> str:
    return template.format(quote(name, safe=""))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def connect_info(payload: dict) -> ConnectInfo:
    """Three shapes share connect: the QR object (``{pairingCode, code, base64, count}``), ``{"count": 0}`` when no
    QR exists yet, and ``{"instance": {..., "state": "open"}}`` when already connected."""
    count = payload.get("count")
    inst = payload.get("instance")
    return ConnectInfo(code=payload.get("code"), image=payload.get("base64"), pairing_code=payload.get("pairingCode"),
                       count=int(count) if isinstance(count, int | float) else None,
                       state=inst.get("state") if isinstance(inst, dict) else None, raw=payload)


def instance_record(row: dict) -> InstanceRecord:
    """A fetchInstances row (§2.5): a flat DB row, so ``connectionStatus`` may lag the live state."""
    return InstanceRecord(name=str(row.get("name") or ""), status=str(row.get("connectionStatus") or ""),
                          disconnection_code=_int_or_none(row.get("disconnectionReasonCode")),
                          disconnection_at=iso_datetime(row.get("disconnectionAt")),
                          owner=row.get("ownerJid"), raw=row)


class EvolutionGateway(HttpClient):
    """Synchronous Evolution API 2.3.7 client with the global API key: the pool's :class:`Gateway`.

    ``EvolutionGateway()`` reads ``EVOLUTION_API_URL``, ``EVOLUTION_API_KEY`` and ``HTTP_TIMEOUT_SECONDS``; pass them
    explicitly (or an httpx ``transport``) in tests. One pooled ``httpx.Client`` per object: reuse it, and
    ``close()`` it (or use ``with``).
    """

    service = "Evolution"
    error_class = GatewayError

    def __init__(self, *, base_url: str | None = None, api_key: str | None = None, timeout: float | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.api_key = setting_or(api_key, "EVOLUTION_API_KEY")
        super().__init__(base_url=setting_or(base_url, "EVOLUTION_API_URL"), headers={"apikey": self.api_key},
                         timeout=timeout, transport=transport)

    # -- plumbing ------------------------------------------------------------------------------------------

    def error_for(self, response: httpx.Response, *, operation: str, instance: str | None = None,
                  **context: Any) -> GatewayError | None:
        return errors.error_from_response(response, operation, instance)

    def transport_error(self, kind: str, exc: httpx.HTTPError, *, operation: str, read: float,
                        instance: str | None = None, **context: Any) -> GatewayError:
        return errors.transport_error(exc, operation, instance, read)

    def _call(self, operation: str, method: str, path: str, *, instance: str | None = None, json_body: Any = None,
              params: dict[str, str] | None = None, read_timeout: float | None = None,
              retry: bool = False) -> tuple[Any, int]:
        """One HTTP exchange -> (payload, status), or GatewayError. ``retry`` allows ONE more attempt after a
        timeout/transport error/5xx, and must only be set for calls that are safe to repeat."""
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self.exchange(method, path, operation=operation, instance=instance, json=json_body,
                                         params=params, read_timeout=read_timeout)
            except GatewayError as err:
                if attempt < attempts and err.retryable:
                    logger.warning("%s; retrying once", err)
                    time.sleep(RETRY_BACKOFF_SECONDS)
                    continue
                raise
            return errors.decode(response)[0], response.status_code
        raise AssertionError("unreachable")  # pragma: no cover

    def _dict(self, operation: str, instance: str | None, payload: Any, status: int) -> dict:
        if not isinstance(payload, dict):
            raise errors.unexpected(operation, instance, status, payload, "expected a JSON object")
        return payload

    # -- instances -----------------------------------------------------------------------------------------

    def create_instance(self, name: str, *, number: str | None = None, webhook: WebhookConfig | None = None,
                        qrcode: bool = False) -> dict:
        """POST /instance/create (201) with integration WHATSAPP-BAILEYS; returns the whole response
        (``hash`` is the instance token). Never retried: on a timeout, check ``list_instances()`` before trying
        again (a retry after a server-side success answers 403 "already in use").

        With ``webhook`` the per-instance webhook is created in the same call, with its secret header and an
        explicit event list — Evolution 400s and rolls back the create when ``events`` is omitted.
        """
        body: dict[str, Any] = {"instanceName": name, "integration": INTEGRATION, "qrcode": bool(qrcode)}
        if number:
            body["number"] = _digits(number)
        if webhook is not None:
            # At create the webhook is always stored enabled; its block has no `enabled` (contract §2.2).
            body["webhook"] = {k: v for k, v in self._webhook_body(webhook).items() if k != "enabled"}
        # With qrcode=true the server waits ~5 s for the first QR before answering.
        read = max(self.timeout, CREATE_QR_MIN_READ) if qrcode else self.timeout
        payload, status = self._call("create", "POST", "/instance/create", instance=name, json_body=body,
                                     read_timeout=read)
        return self._dict("create", name, payload, status)

    def connect(self, name: str, *, number: str | None = None) -> ConnectInfo:
        """GET /instance/connect/{name}: start pairing (state close -> connecting) or read the current QR.

        ``count == 0`` when no QR exists yet (ask again), ``state == "open"`` when already connected. With
        ``number`` a pairing code is requested too. Safe to retry once (connect on a connecting instance only
        returns the current QR).
        """
        params = {"number": _digits(number)} if number else None
        payload, status = self._call("connect", "GET", _path("/instance/connect/{}", name), instance=name,
                                     params=params, read_timeout=max(self.timeout, CONNECT_OP_MIN_READ), retry=True)
        return connect_info(self._dict("connect", name, payload, status))

    def connection_state(self, name: str) -> str:
        """GET /instance/connectionState/{name} -> the live socket state: "open" | "connecting" | "close".

        Live, unlike fetchInstances' ``connectionStatus`` (a DB column that lags). Right after a transient drop
        it may read "close" for a moment while Evolution reconnects by itself.
        """
        payload, status = self._call("connectionState", "GET", _path("/instance/connectionState/{}", name),
                                     instance=name, retry=True)
        return errors.state_from(payload, "connectionState", name, status)

    def fetch_instances(self, *, name: str | None = None) -> list[dict]:
        """GET /instance/fetchInstances[?instanceName=] -> the DB rows (flat list; docs show an outdated
        ``[{instance: {...}}]`` shape). An unknown ``name`` raises ``not_found``."""
        params = {"instanceName": name} if name is not None else None
        payload, status = self._call("fetchInstances", "GET", "/instance/fetchInstances", instance=name,
                                     params=params, retry=True)
        if isinstance(payload, dict):  # defensive: a single row
            payload = [payload]
        if not isinstance(payload, list):
            raise errors.unexpected("fetchInstances", name, status, payload, "expected a JSON array")
        return payload

    def list_instances(self) -> list[InstanceRecord]:
        """Every instance of this server in one call, with the persisted disconnection codes."""
        return [instance_record(row) for row in self.fetch_instances() if isinstance(row, dict)]

    def restart(self, name: str) -> None:
        """POST /instance/restart/{name} (POST, not the PUT the docs show). Fire-and-forget: confirm through
        ``connection.update``/``connection_state``. On a closed instance Evolution answers 200
        ``{"error": true, "message": "[object Object]"}`` -> ``GatewayError(kind="error_body")``."""
        payload, status = self._call("restart", "POST", _path("/instance/restart/{}", name), instance=name)
        self._dict("restart", name, payload, status)

    def logout(self, name: str) -> None:
        """DELETE /instance/logout/{name}: unlink the device and wipe credentials; the instance stays (re-pair
        with connect). A closed instance answers 400 "not connected" (``bad_request``) on 2.3.x. Webhooks
        ``status.instance``/``logout.instance``/``connection.update`` close 401 follow."""
        self._call("logout", "DELETE", _path("/instance/logout/{}", name), instance=name)

    def delete(self, name: str) -> None:
        """DELETE /instance/delete/{name}: logout if open, then purge; later calls answer ``not_found``. On 2.3.7 a
        dead socket whose stored state still says open answers 400 and the instance survives."""
        self._call("delete", "DELETE", _path("/instance/delete/{}", name), instance=name)

    # -- webhook -------------------------------------------------------------------------------------------

    def webhook_config(self, *, url: str, secret: str) -> WebhookConfig:
        """What every instance's webhook should be: our URL, our secret header, the events the pool reads."""
        return WebhookConfig(url=url, secret=secret, events=WEBHOOK_EVENTS)

    @staticmethod
    def _webhook_body(config: WebhookConfig) -> dict[str, Any]:
        return {"enabled": config.enabled, "url": config.url, "headers": {WEBHOOK_SECRET_HEADER: config.secret},
                "byEvents": False, "base64": False, "events": list(config.events)}

    def set_webhook(self, name: str, config: WebhookConfig) -> None:
        """POST /webhook/set/{name} (201). The body is the *nested* ``{"webhook": {...}}`` form (the flat form in
        the docs is a 400); ``events`` is always sent (omitting it with enabled=true crashes the server)."""
        payload, status = self._call("setWebhook", "POST", _path("/webhook/set/{}", name), instance=name,
                                     json_body={"webhook": self._webhook_body(config)})
        self._dict("setWebhook", name, payload, status)

    def find_webhook(self, name: str) -> WebhookConfig | None:
        """GET /webhook/find/{name}: the stored row (headers in clear), or ``None`` when there is none."""
        payload, status = self._call("findWebhook", "GET", _path("/webhook/find/{}", name), instance=name,
                                     retry=True)
        if payload is None:
            return None
        row = self._dict("findWebhook", name, payload, status)
        headers = row.get("headers") if isinstance(row.get("headers"), dict) else {}
        secret = next((str(v) for k, v in headers.items() if str(k).lower() == WEBHOOK_SECRET_HEADER.lower()), "")
        events = row.get("events") if isinstance(row.get("events"), list) else []
        return WebhookConfig(url=str(row.get("url") or ""), secret=secret, events=tuple(map(str, events)),
                             enabled=bool(row.get("enabled")))

    # -- messages ------------------------------------------------------------------------------------------

    def send_text(self, name: str, *, number: str, text: str, delay_ms: int | None = None) -> SendResult:
        """POST /message/sendText/{name} (201). **Never retried**: a second POST is a second WhatsApp message,
        and a timeout does not mean it was not sent. Callers persist an outbox row first and reconcile by
        ``key.id`` from the ``messages.update`` webhooks.

        The answer is 201 ``status: "PENDING"`` even when WhatsApp will refuse the message (field notes §1): the
        refusal arrives later as a receipt. The server holds the call open for the whole ``delay``, hence read
        timeout ``max(timeout, 20 s) + delay``.
        """
        body: dict[str, Any] = {"number": number, "text": text}
        if delay_ms:
            body["delay"] = int(delay_ms)
        read = max(self.timeout, SEND_TEXT_MIN_READ) + (delay_ms or 0) / 1000
        try:
            payload, status = self._call("sendText", "POST", _path("/message/sendText/{}", name), instance=name,
                                         json_body=body, read_timeout=read, retry=False)
        except GatewayError as exc:
            if exc.kind == "timeout":
                exc.messages.append("outcome unknown: the message may have been sent; do not resend blindly")
            raise
        payload = self._dict("sendText", name, payload, status)
        try:
            key = payload["key"]
            return SendResult(message_id=str(key["id"]), remote_jid=str(key.get("remoteJid") or ""),
                              status=str(payload.get("status") or ""), raw=payload)
        except (KeyError, TypeError):
            raise errors.unexpected("sendText", name, status, payload, "no key.id") from None

    # -- bulk ----------------------------------------------------------------------------------------------

    def connection_states(self, names: Iterable[str], *, concurrency: int = 50) -> dict[str, str | GatewayError]:
        """Every instance's live state, read concurrently (see :func:`.bulk.fetch_connection_states`)."""
        from instances.gateway.evolution.bulk import fetch_connection_states

        return asyncio.run(fetch_connection_states(names, concurrency=concurrency, base_url=self.base_url,
                                                   api_key=self.api_key, timeout=self.timeout))
