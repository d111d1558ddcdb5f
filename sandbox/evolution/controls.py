"""``/__fake__/...``: the fake's controls over HTTP, for another process (``manage.py sandbox``, the demo).

JSON bodies, no apikey (loopback only); a prefix the real API never uses. Controls that emit webhooks answer
``{"deliveries": [...]}`` once delivered.

    POST link/{i} {"number"} · POST scan/{i} {"code", "number"} · POST pair/{i} {"code", "number"} ·
    POST close/{i} {"code"} · POST kill-socket/{i} · POST restrict/{i} {"on"?} · POST deliver-queued ·
    POST inbound/{i} {"from"?, "lid"?, "addressing"?, "text", "message_id"?, "push_name"?} -> {"message_id"} ·
    POST ack/{i} {"key_id", "status", "remote_jid"?} · POST qr/{i} · POST connecting-flood/{i} {"n"} ·
    POST forget/{i} · POST scan-code {"code", "number"} · POST drop-webhooks {"n"?, "events"?} ·
    POST whatsapp {"reachable"} ·
    POST latency {"seconds"} · POST fail-next {"n", "status"?, "route"?} · POST not-on-whatsapp {"numbers"} ·
    POST add-instances {"names", "state"?} · POST reset · POST reset-stats · GET sent-messages · GET deliveries ·
    GET requests · GET stats · GET instances/{i}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.evolution.model import Unknown

Action = Callable[[dict[str, Any], str | None], Any]


class ControlsMixin:
    def _control_routes(self) -> list[Route]:
        p = "/__fake__"
        each = {  # per-instance controls: (path, action(body, name))
            "link": lambda b, n: self.link(n, str(b["number"])),
            "scan": lambda b, n: self.scan(n, str(b["code"]), str(b["number"])),
            "pair": lambda b, n: self.pair(n, str(b["code"]), str(b["number"])),
            "close": lambda b, n: self.close(n, int(b["code"])),
            "kill-socket": lambda b, n: self.kill_socket(n),
            "restrict": lambda b, n: self.restrict(n, bool(b.get("on", True))),
            "inbound": lambda b, n: {"message_id": self.inbound(
                n, b.get("from"), str(b["text"]), b.get("message_id"), push_name=b.get("push_name"),
                lid=b.get("lid"), addressing=str(b.get("addressing", "pn")))},
            "ack": lambda b, n: self.ack(n, str(b["key_id"]), str(b.get("status", "DELIVERY_ACK")),
                                         remote_jid=b.get("remote_jid")),
            "qr": lambda b, n: {"qrcode": self.qr(n)},
            "connecting-flood": lambda b, n: self.connecting_flood(n, int(b.get("n", 1))),
            "forget": lambda b, n: self.forget(n),
            "instances": lambda b, n: self.instance_info(n),
        }
        pool = {  # pool-wide controls
            "deliver-queued": lambda b, n: self.deliver_queued(),
            "scan-code": lambda b, n: self.scan_code(str(b["code"]), str(b["number"])),
            "drop-webhooks": lambda b, n: self.drop_webhooks(b.get("n"), events=b.get("events")),
            "whatsapp": lambda b, n: setattr(self, "whatsapp_reachable", bool(b["reachable"])),
            "latency": lambda b, n: self.set_latency(float(b["seconds"])),
            "fail-next": lambda b, n: self.fail_next(int(b.get("n", 1)), _status(b.get("status", 500)),
                                                     route=b.get("route")),
            "not-on-whatsapp": lambda b, n: self.mark_not_on_whatsapp(*map(str, b["numbers"])),
            "add-instances": lambda b, n: self.add_instances(list(map(str, b["names"])), str(b.get("state", "open"))),
            "reset": lambda b, n: self.reset(),
            "reset-stats": lambda b, n: self.reset_stats(),
        }
        reads = {
            "sent-messages": lambda: self.sent_messages,
            "deliveries": lambda: self.deliveries,
            "requests": lambda: self.requests,
            "stats": self._stats,
        }
        routes = [Route(f"{p}/{path}/{{instance}}", self._control(action), methods=["GET" if path == "instances"
                                                                                    else "POST"])
                  for path, action in each.items()]
        routes += [Route(f"{p}/{path}", self._control(action), methods=["POST"]) for path, action in pool.items()]
        routes += [Route(f"{p}/{path}", _reader(read), methods=["GET"]) for path, read in reads.items()]
        return routes

    def _control(self, action: Action) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            from starlette.concurrency import run_in_threadpool

            try:
                raw = await request.body()
                body = await request.json() if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("body must be a JSON object")
                # Controls deliver webhooks with a blocking client: off the event loop.
                result = await run_in_threadpool(action, body, request.path_params.get("instance"))
            except Unknown as exc:
                return JSONResponse({"error": f"unknown instance or key: {exc.args[0]}"}, status_code=404)
            except (KeyError, TypeError, ValueError) as exc:
                return JSONResponse({"error": f"bad control request: {exc!r}"}, status_code=400)
            if isinstance(result, list):
                return JSONResponse({"deliveries": result})
            return JSONResponse(result if result is not None else {"ok": True})

        return endpoint

    def _stats(self) -> dict[str, Any]:
        with self._lock:
            return {"in_flight": self._in_flight, "peak_in_flight": self._peak,
                    "requests": dict(self._route_counts), "instances": len(self._instances),
                    "sent_messages": len(self._sent), "deliveries": len(self._deliveries),
                    "latency": self._latency, "queued_failures": len(self._failures),
                    "queued_receipts": len(self._queued)}


def _status(value: Any) -> int | str:
    return value if value == "timeout" else int(value)


def _reader(read: Callable[[], Any]) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response:
        return JSONResponse(read())

    return endpoint
