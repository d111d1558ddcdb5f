"""The fake's real routes: Evolution 2.3.7's instance, webhook and message API (§1-§2, field notes §2-§3, §8).

On purpose: 201 for create/sendText/webhook set and 200 elsewhere; guard order instance-exists -> name-in-use ->
apikey (an unknown instance is 404 even with a bad key); the error envelope with its polymorphic ``message``;
200 ``{"error": true}`` from restart on a closed instance; ``{"count": 0}`` from connect before any QR; ``pushName``
"Você" and 22-char ``3EB0...`` ids on sendText, whose answer is 201 PENDING even when WhatsApp will refuse it.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox.evolution.hooks import Pending
from sandbox.evolution.model import (
    ACCEPTED_EVENTS,
    INTEGRATIONS,
    VERSION,
    ApiError,
    FakeInstance,
    api_message_id,
    copy,
    db_id,
    jid,
    not_found,
)


class ApiMixin:
    def _guard(self, request: Request, *, global_only: bool = False) -> FakeInstance:
        """instance-exists first (404 even with a bad key), then the apikey (global, or this instance's token)."""
        name = request.path_params["instance"]
        key = request.headers.get("apikey")
        with self._lock:
            inst = self._instances.get(name)
            if inst is None:
                raise not_found(name)
            if key != self.api_key and (global_only or key != inst.token):
                raise ApiError(401, "Unauthorized")
            return inst

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            # Express' body parser: a 400 whose `error` oddly says "Internal Server Error".
            raise ApiError(400, str(exc), error="Internal Server Error") from None
        if not isinstance(body, dict):
            raise ApiError(400, [["instance is not of a type(s) object"]])
        return body

    async def _welcome(self, request: Request) -> Response:
        return JSONResponse({
            "status": 200, "message": "Welcome to the Evolution API, it is working!", "version": VERSION,
            "clientName": "evolution_exchange", "manager": f"{self.server_url}/manager",
            "documentation": "https://doc.evolution-api.com", "whatsappWebVersion": "2.3000.1023204200",
        })

    async def _create(self, request: Request) -> Response:
        body = await self._body(request)
        name = body.get("instanceName")
        with self._lock:
            if isinstance(name, str) and name in self._instances:
                raise ApiError(403, [f'This name "{name}" is already in use.'])
        if request.headers.get("apikey") != self.api_key:
            raise ApiError(401, "Unauthorized")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, [['The "instanceName" cannot be empty']])
        number = body.get("number")
        if number is not None and (not isinstance(number, str) or not number[:1].isdigit()):
            raise ApiError(400, [['instance.number does not match pattern "^\\d+[\\.@\\w-]+"']])
        integration = body.get("integration")
        if integration not in INTEGRATIONS:
            raise ApiError(400, ["Invalid integration"])
        webhook = body.get("webhook")
        if webhook is not None:
            if not isinstance(webhook, dict) or not webhook.get("url"):
                raise ApiError(400, [['instance.webhook requires property "url"']])
            if not isinstance(webhook.get("events"), list):
                # Evolution maps over the undefined list, fails, and rolls the instance back (§2.2).
                raise ApiError(400, ["Cannot read properties of undefined (reading 'map')"])
        qrcode = bool(body.get("qrcode"))
        with self._lock:
            if name in self._instances:  # lost a race with a concurrent create
                raise ApiError(403, [f'This name "{name}" is already in use.'])
            inst = FakeInstance.new(name, integration=integration, token=body.get("token"), number=number)
            if webhook is not None:
                inst.webhook = self._webhook_row(inst, {**webhook, "enabled": True})
            self._instances[name] = inst
            pending = self._emit(inst, "instance.create", {"instanceName": name, "instanceId": inst.id})
            if qrcode:
                inst.pairing_number = number
                pending += self._start_socket(inst, first_qr=True)  # create waits ~5 s for the first QR
            response: dict[str, Any] = {
                "instance": {"instanceName": name, "instanceId": inst.id, "integration": integration,
                             "webhookWaBusiness": None, "accessTokenWaBusiness": "",
                             "status": "connecting" if qrcode and self.whatsapp_reachable else "close"},
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

    def _start_socket(self, inst: FakeInstance, *, first_qr: bool | None = None) -> list[Pending]:
        """A new socket on a closed instance. Without WhatsApp it never gets a QR: connectionState stays
        ``close`` while ``connecting`` events keep coming (field notes §8)."""
        inst.touch()
        if not self.whatsapp_reachable:
            return self._emit(inst, "connection.update",
                              {"instance": inst.name, "state": "connecting", "statusReason": 200})
        inst.state = "connecting"
        return self._new_qr(inst) if (self.auto_qr if first_qr is None else first_qr) else []

    async def _connect(self, request: Request) -> Response:
        inst = self._guard(request)
        number = request.query_params.get("number")
        pending: list[Pending] = []
        with self._lock:
            if inst.state == "open":
                return JSONResponse({"instance": {"instanceName": inst.name, "state": "open"}})
            if inst.state == "close":
                # A new socket: the pairing number only takes effect here.
                inst.pairing_number = number or None
                pending = self._start_socket(inst)
            else:
                pending = self._rotate_if_expired(inst)
            body = inst.qr_object()
        await self._deliver_async(pending)
        return JSONResponse(body)

    async def _connection_state(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            pending = self._rotate_if_expired(inst)
            state = inst.state
        await self._deliver_async(pending)
        return JSONResponse({"instance": {"instanceName": inst.name, "state": state}})

    async def _fetch_instances(self, request: Request) -> Response:
        key = request.headers.get("apikey")
        q = request.query_params
        with self._lock:
            if key == self.api_key:
                rows = list(self._instances.values())
            else:
                rows = [i for i in self._instances.values() if key and i.token == key]
                if not rows:
                    raise ApiError(401, "Unauthorized")
            if "instanceName" in q:
                rows = [i for i in rows if i.name == q["instanceName"]]
                if not rows:
                    raise ApiError(404, [f'Instance "{q["instanceName"]}" not found'])
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
            # A restart of an open instance closes and reopens its socket (a dead one comes back to life).
            pending = self._set_connecting(inst) + self._set_open(inst) if inst.state == "open" else []
        await self._deliver_async(pending)
        return JSONResponse(body)

    async def _logout(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            if inst.state == "close":
                raise ApiError(400, [f'The "{inst.name}" instance is not connected'])
            if inst.socket_dead:
                raise ApiError(500, ["Error: Connection Closed"])
            pending = self._final_close(inst, 401)
        await self._deliver_async(pending)
        return JSONResponse({"status": "SUCCESS", "error": False, "response": {"message": "Instance logged out"}})

    async def _delete(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            if inst.socket_dead:
                # The inner logout throws on the dead socket; delete answers 400 and the instance survives (§2.8).
                raise ApiError(400, ["InternalServerErrorException: Error: Connection Closed"])
            pending: list[Pending] = []
            if inst.state == "open":
                # An open instance is logged out first: the pool hears a 401 close that it caused (notes §3).
                pending = self._final_close(inst, 401)
            if inst.state != "connecting":
                # Deleting a connecting instance sends no webhook (field notes §8).
                pending += self._emit(inst, "instance.delete", {"instanceName": inst.name, "instanceId": inst.id})
                pending += self._emit(inst, "remove.instance", None)
            self._instances.pop(inst.name, None)
            self._restricted.discard(inst.name)
        await self._deliver_async(pending)
        return JSONResponse({"status": "SUCCESS", "error": False, "response": {"message": "Instance deleted"}})

    def _webhook_row(self, inst: FakeInstance, hook: dict[str, Any]) -> dict[str, Any]:
        now = inst.updated_at
        enabled = bool(hook.get("enabled"))
        previous = inst.webhook or {}
        return {
            "id": previous.get("id") or db_id(), "url": hook["url"], "headers": dict(hook.get("headers") or {}),
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
            raise ApiError(400, [['instance requires property "webhook"']])
        for prop in ("enabled", "url"):
            if prop not in hook:
                raise ApiError(400, [[f'instance.webhook requires property "{prop}"']])
        if not isinstance(hook["url"], str) or not hook["url"]:
            raise ApiError(400, [["instance.webhook.url does not meet minimum length of 1"]])
        events = hook.get("events")
        if events is None and hook["enabled"]:
            raise ApiError(500, "Cannot read properties of undefined (reading 'map')")
        for i, event in enumerate(events or []):
            if event not in ACCEPTED_EVENTS:
                raise ApiError(400, [[f"instance.webhook.events[{i}] is not one of enum values: "
                                      + ",".join(ACCEPTED_EVENTS)]])
        with self._lock:
            inst.touch()
            inst.webhook = self._webhook_row(inst, hook)
            return JSONResponse(copy(inst.webhook), status_code=201)

    async def _find_webhook(self, request: Request) -> Response:
        inst = self._guard(request)
        with self._lock:
            return JSONResponse(copy(inst.webhook))

    async def _send_text(self, request: Request) -> Response:
        inst = self._guard(request)
        body = await self._body(request)
        for prop in ("number", "text"):
            if prop not in body:
                raise ApiError(400, [[f'instance requires property "{prop}"']])
        number, text = str(body["number"]), body["text"]
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, ["Text is required"])
        delay = body.get("delay")
        if isinstance(delay, int | float) and delay > 0:
            await asyncio.sleep(delay / 1000)
        to = jid(number)
        digits = to.split("@", 1)[0]
        with self._lock:
            if inst.name not in self._instances:
                raise not_found(inst.name)
            if inst.state != "open" and not inst.ever_open:
                raise ApiError(500, "Cannot read properties of undefined (reading 'onWhatsApp')")
            if inst.state != "open" or inst.socket_dead:
                raise ApiError(500, "Connection Closed")
            if digits in self._not_on_whatsapp:
                raise ApiError(400, [{"jid": to, "exists": False, "number": digits}])
            key_id = api_message_id()
            payload = {
                "key": {"remoteJid": to, "fromMe": True, "id": key_id},
                "pushName": "Você",
                "status": "PENDING",
                "message": {"conversation": text},
                "contextInfo": {"mentionedJid": [], "groupMentions": []},
                "messageType": "conversation",
                "messageTimestamp": int(self.wall_clock()),
                "instanceId": inst.id,
                "source": "web",
            }
            sent = {"instance": inst.name, "number": number, "text": text, "key_id": key_id, "remote_jid": to,
                    "delay": delay, "message_id": db_id()}
            self._sent.append(sent)
            self._sent_by_id[key_id] = sent
            inst.message_count += 1
            pending = self._emit(inst, "send.message", payload)
            if inst.name in self._restricted and digits not in inst.talked_to:
                # Reach-out timelock: accepted now, refused later, with no code in the receipt (field notes §1).
                self._queued += self._ack_pending(inst, key_id, "ERROR", None)
            else:
                inst.talked_to.add(digits)
        await self._deliver_async(pending)
        return JSONResponse(payload, status_code=201)
