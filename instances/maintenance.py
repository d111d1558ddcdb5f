"""Keeping the gateway side in order: releasing sessions, restarting dead ones, healing webhook drift, pruning.

A release must never depend on the gateway agreeing (field notes §3): these functions report what they could not
do and leave the retrying to their callers' due-at rows.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from chips.models import Chip
from instances import sessions
from instances.gateway import Gateway, GatewayError
from instances.models import GatewayServer, Instance, WebhookReceipt
from instances.servers import gateway_for
from instances.services import webhook_config

logger = logging.getLogger(__name__)
DRIFT_CONCURRENCY = 8


def instance_release(*, instance: Instance, gw: Gateway, attempt: int = 1) -> None:
    """Log the session out, then delete it; done when the gateway no longer has it. Raises GatewayError when the
    gateway refused (a dead socket answers 400 to delete: the caller retries later; from the second attempt on,
    a restart comes first, the contract's way round).

    The instance is marked as closing by us first, so the 401 close the logout causes raises no alarm.
    """
    sessions.session_marked_closing(instance)
    if attempt > 1:
        try:
            gw.restart(instance.name)
        except GatewayError as exc:
            logger.info("release of %s: restart before delete failed (%s)", instance.name, exc.kind)
    try:
        gw.logout(instance.name)
    except GatewayError as exc:
        if exc.kind == "not_found":
            return
        # 400 "not connected" is the normal answer for a closed session; anything else, delete decides.
        logger.info("release of %s: logout answered %s; deleting anyway", instance.name, exc.kind)
    try:
        gw.delete(instance.name)
    except GatewayError as exc:
        if exc.kind != "not_found":
            raise


def instance_restart(*, instance_id: int) -> str:
    """Ask the gateway to restart a session whose socket was found dead (the session_socket_dead task)."""
    instance = Instance.objects.select_related("server").filter(pk=instance_id).first()
    if instance is None or instance.state == Instance.State.GONE:
        return "skipped"
    with gateway_for(instance.server) as gw:
        try:
            gw.restart(instance.name)
        except GatewayError as exc:
            if exc.kind == "not_found":
                sessions.session_gone(instance, timezone.now(), source="restart answered 404")
            logger.warning("restart of %s failed: %s", instance.name, exc)
            return exc.kind
    return "requested"


@dataclass
class DriftResult:
    checked: int = 0
    healed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _drifted(found, wanted) -> bool:
    return (found is None or not found.enabled or found.url != wanted.url or found.secret != wanted.secret
            or set(found.events) != set(wanted.events))


def webhooks_heal(*, names: list[str] | None = None) -> DriftResult:
    """Read each live instance's webhook and set it again where it differs from ours (URL, secret header, events):
    rotating EVOLUTION_WEBHOOK_SECRET or the public URL heals the whole pool in one run (field notes §2 — Evolution
    does not retry a 401 from us, so a stale secret would silently lose every event). Per server, concurrently."""
    qs = Instance.objects.exclude(chip__status=Chip.Status.RETIRED).exclude(state=Instance.State.GONE)
    if names is not None:
        qs = qs.filter(name__in=names)
    by_server: dict[int | None, list[str]] = {}
    for server_id, name in qs.values_list("server_id", "name"):
        by_server.setdefault(server_id, []).append(name)
    result = DriftResult(checked=sum(len(v) for v in by_server.values()))
    servers = {s.pk: s for s in GatewayServer.objects.filter(pk__in=[k for k in by_server if k is not None])}
    if None in by_server:  # resolved here: the threads below touch no database
        servers[None] = GatewayServer.default()

    def heal_server(server_id: int | None) -> list[tuple[str, str | None, bool]]:
        with gateway_for(servers.get(server_id)) as gw:
            wanted = webhook_config(gw)

            def heal(name: str) -> tuple[str, str | None, bool]:
                try:
                    if not _drifted(gw.find_webhook(name), wanted):
                        return name, None, False
                    gw.set_webhook(name, wanted)
                except GatewayError as exc:
                    return name, f"{exc.kind}: {'; '.join(exc.messages)[:200]}", False
                return name, None, True

            with ThreadPoolExecutor(max_workers=DRIFT_CONCURRENCY) as pool:
                return list(pool.map(heal, by_server[server_id]))

    with ThreadPoolExecutor(max_workers=max(1, min(4, len(by_server)))) as pool:
        for outcomes in pool.map(heal_server, list(by_server)):
            for name, error, healed in outcomes:
                if error:
                    result.failed[name] = error
                elif healed:
                    result.healed.append(name)
    if result.healed:
        logger.warning("webhook drift healed on %d instance(s)", len(result.healed))
    return result


def receipts_prune(*, now: datetime | None = None) -> int:
    """Drop applied webhook receipts older than the retention (their retries are long over); an event not
    applied yet is never dropped."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.WEBHOOK_RECEIPT_RETENTION_DAYS)
    deleted, _ = WebhookReceipt.objects.filter(received_at__lt=cutoff, applied_at__isnull=False).delete()
    return deleted
