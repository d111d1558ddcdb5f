"""Webhook delivery as Evolution 2.3.7 does it (§3.2-§3.3, field notes §2).

Per-instance webhook first (its headers, `jwt_key` turned into a Bearer JWT, `byEvents` suffixes), else the global
fallback URL, which never carries custom headers nor STATUS_INSTANCE/LOGOUT_INSTANCE/REMOVE_INSTANCE. Bounded
retries that skip 400/401/403/404/422. Retries live in memory only, so webhooks are lost: `drop_webhooks()` makes
the next deliveries vanish the way an Evolution restart loses them.

Deliveries happen in order and before the call that caused them returns (deterministic tests); the real server
fires them concurrently, so order is not guaranteed there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from sandbox.evolution.model import (
    NON_RETRYABLE_WEBHOOK_STATUSES,
    NOT_GLOBAL_EVENTS,
    FakeInstance,
    config_name,
    copy,
    envelope_date_time,
    suffix,
    webhook_headers,
)

# (url, headers, envelope)
Pending = tuple[str, dict[str, str], dict[str, Any]]


def _delivered_or_final(status: int | None) -> bool:
    return status is not None and (200 <= status < 300 or status in NON_RETRYABLE_WEBHOOK_STATUSES)


class WebhookMixin:
    webhook_url: str | None
    server_url: str

    def _init_hooks(self) -> None:
        self.webhook_attempts = 3
        self.webhook_backoff = (0.05, 0.1, 0.2, 0.4)
        self.webhook_timeout = 5.0
        self._drop: int | None = 0          # deliveries still to lose; None: lose all until told otherwise
        self._drop_events: set[str] | None = None

    def drop_webhooks(self, n: int | None = None, *, events: list[str] | None = None) -> None:
        """Lose the next ``n`` deliveries (``None``: every one until ``drop_webhooks(0)``), optionally only of the
        given dotted event names — what Evolution's in-memory retries do across a restart (field notes §2)."""
        with self._lock:
            self._drop = n
            self._drop_events = set(events) if events else None

    def _should_drop(self, event: str) -> bool:
        if self._drop_events is not None and event not in self._drop_events:
            return False
        if self._drop is None:
            return True
        if self._drop > 0:
            self._drop -= 1
            return True
        return False

    def _emit(self, inst: FakeInstance, event: str, data: Any) -> list[Pending]:
        """The deliveries ``event`` causes for ``inst`` (per-instance webhook, else the global fallback)."""
        name = config_name(event)
        hook = inst.webhook
        targets: list[tuple[str, str, dict[str, str]]] = []
        if hook and hook.get("enabled"):
            if not hook["events"] or name in hook["events"]:
                url = hook["url"].rstrip("/") + "/" + suffix(name) if hook["webhookByEvents"] else hook["url"]
                targets.append((url, hook["url"], webhook_headers(hook["headers"])))
        elif self.webhook_url and name not in NOT_GLOBAL_EVENTS:
            targets.append((self.webhook_url, self.webhook_url, {}))
        pending: list[Pending] = []
        for url, destination, headers in targets:
            envelope: dict[str, Any] = {"event": event, "instance": inst.name, "data": copy(data),
                                        "destination": destination, "date_time": envelope_date_time()}
            if inst.ever_open and inst.owner_jid:
                envelope["sender"] = inst.owner_jid
            envelope["server_url"] = self.server_url
            envelope["apikey"] = inst.token
            if self._should_drop(event):
                self._record(url, headers, envelope, None, 0, "dropped (lost by the gateway)")
                continue
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

    def _deliver_sync(self, pending: list[Pending]) -> list[dict[str, Any]]:
        """Deliver in order, blocking (from any thread but the server's event loop). Never raises."""
        return asyncio.run(self._deliver_async(pending)) if pending else []

    async def _deliver_async(self, pending: list[Pending]) -> list[dict[str, Any]]:
        """Deliver in order with bounded retries; failures are recorded, never raised."""
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
                        status, error = (await http.post(url, json=envelope, headers=headers)).status_code, None
                    except httpx.HTTPError as exc:
                        status, error = None, f"{type(exc).__name__}: {exc}"
                    if _delivered_or_final(status) or attempt >= self.webhook_attempts:
                        break
                    await asyncio.sleep(self._backoff(attempt))
                records.append(self._record(url, headers, envelope, status, attempt, error))
        return records
