"""The periodic instance check: the gateway's durable truth, reconciled with what the pool believes.

Webhooks are the fast path and get lost (field notes §2). Every minute the check reads, per gateway server, the
instance list once (``fetchInstances``: persisted disconnection codes, and which instances still exist) and every
session's live state concurrently (``connectionState``), then:

* a final close the pool missed (402/403/406 → ban, 401 → logged out) is applied as if its webhook had come;
* an instance the gateway no longer has (absent from the list, or 404) is gone: out of routing, one alert;
* the live state wins over webhook order (a late ``connecting`` after ``open``); a dead socket is believed open
  again only once a restart had time to heal it;
* a session that keeps connecting for ``LINK_STUCK_MINUTES`` without opening is reported as a stuck link.

One query reads the instances; the plain state changes are written in bulk; only real changes cost more.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from chips.models import Chip, ChipAlert
from chips.services import alert_raise
from common.texts import Text, stored
from instances import sessions
from instances.gateway import GatewayError, InstanceRecord
from instances.models import GatewayServer, Instance, InstanceLink
from instances.pool_full import pool_room_changed
from instances.servers import gateway_for

logger = logging.getLogger(__name__)
LAST_CHECK_KEY = "instances:last_check"
KNOWN_STATES = {s.value for s in Instance.State}
S = Instance.State


@dataclass
class CheckResult:
    checked: int = 0
    changed: int = 0
    unknown: int = 0
    gone: int = 0
    finals: int = 0
    changes: list[tuple[str, str, str]] = field(default_factory=list)  # (name, old, new)


def _missed_final_close(instance: Instance, record: InstanceRecord | None) -> bool:
    """A final close persisted by the gateway that the pool has not applied (its webhook was lost)."""
    if record is None or record.status != "close" or record.disconnection_code not in sessions.FINAL_CODES:
        return False
    if instance.last_disconnect_at is None or record.disconnection_at is None:
        return instance.last_disconnect_code != record.disconnection_code or instance.state != S.CLOSE
    return record.disconnection_at > instance.last_disconnect_at + timedelta(seconds=5) or (
        instance.last_disconnect_code != record.disconnection_code)


@dataclass
class _ServerRead:
    records: dict[str, InstanceRecord] | None
    states: dict[str, str | GatewayError]
    error: GatewayError | None = None

    @property
    def unreachable(self) -> bool:
        """No answer at all: the list call and every state read failed without an HTTP answer (or with a 5xx)."""
        dead = ("transport", "timeout", "server")
        return (self.records is None and self.error is not None and self.error.kind in dead
                and all(isinstance(v, GatewayError) and v.kind in dead for v in self.states.values()))


def _read_server(server: GatewayServer, instances: list[Instance], *, concurrency: int,
                 timeout: float | None) -> _ServerRead:
    """One server's list and live states (HTTP only: runs in a thread, touches no database)."""
    with gateway_for(server, timeout=timeout) as gw:
        error = None
        try:
            records: dict[str, InstanceRecord] | None = {r.name: r for r in gw.list_instances()}
        except GatewayError as exc:
            logger.warning("instance check: could not list the instances of server %s: %s", server, exc)
            records, error = None, exc
        names = [i.name for i in instances if i.state != S.GONE or records is None or i.name in records]
        states = gw.connection_states(names, concurrency=concurrency) if names else {}
    return _ServerRead(records, states, error)


def instances_check(*, concurrency: int | None = None, timeout: float | None = None,
                    now: datetime | None = None) -> CheckResult:
    """Reconcile every live instance with its gateway server (see module docstring); servers are read
    concurrently. A read that fails or times out makes that instance `unknown` (its chip's connected flag is left
    as it was: we do not know), never a crash of the whole check; a failed list call skips the reconciliation,
    not the state reads. A server that does not answer at all takes its chips out of routing, with one alert for
    the server (not one per chip)."""
    instances = list(Instance.objects.exclude(chip__status=Chip.Status.RETIRED).select_related("chip")
                     .only("pk", "name", "state", "chip_id", "chip__status", "last_disconnect_code",
                           "last_disconnect_at", "closing_by_us_at", "connecting_since", "dead_socket_at",
                           "restart_requested_at", "server_id"))
    result = CheckResult(checked=len(instances))
    if not instances:
        return result
    servers = {s.pk: s for s in GatewayServer.objects.all()}  # a handful of rows: one query
    default = next((s for s in servers.values() if s.name == GatewayServer.DEFAULT_NAME), None)
    default = default or GatewayServer.default()
    by_server: dict[int, list[Instance]] = {}
    for inst in instances:
        by_server.setdefault(inst.server_id or default.pk, []).append(inst)
    servers.setdefault(default.pk, default)
    per = concurrency or settings.HEALTH_CHECK_CONCURRENCY
    with ThreadPoolExecutor(max_workers=min(8, len(by_server))) as pool:
        reads = dict(zip(by_server, pool.map(
            lambda pk: _read_server(servers[pk], by_server[pk], concurrency=per, timeout=timeout), by_server),
            strict=True))
    now = now or timezone.now()
    records: dict[str, InstanceRecord] | None = {}
    states: dict[str, str | GatewayError] = {}
    listed: set[int] = set()
    for pk, read in reads.items():
        if _server_answered(servers[pk], read, by_server[pk], now, result):
            states.update(read.states)
            if read.records is not None:
                records.update(read.records)
                listed.add(pk)
        else:
            instances = [i for i in instances if (i.server_id or default.pk) != pk]
    result.checked = len(instances)
    now = now or timezone.now()
    changed: list[Instance] = []
    opened: list[Instance] = []
    closed: list[int] = []
    for inst in instances:
        was_listed = (inst.server_id or default.pk) in listed
        record = records.get(inst.name)
        read = states.get(inst.name)
        # Gone: absent from its server's own list; when the list could not be read, a 404 on the state read.
        if record is None and (was_listed or isinstance(read, GatewayError) and read.kind == "not_found"):
            if inst.state != S.GONE:
                sessions.session_gone(inst, now, source="instance check")
                result.gone += 1
                result.changes.append((inst.name, inst.state, S.GONE))
            continue
        if _missed_final_close(inst, record):
            if sessions.session_closed(inst, code=record.disconnection_code, at=record.disconnection_at, now=now,
                                       source="instances.check"):
                result.finals += 1
                result.changes.append((inst.name, "missed close", str(record.disconnection_code)))
            continue
        if isinstance(read, GatewayError) or read is None:
            new = S.UNKNOWN
            result.unknown += 1
        else:
            new = read if read in KNOWN_STATES else S.UNKNOWN
        if new == S.OPEN and inst.dead_socket_at:
            if sessions.dead_socket_healed(inst, now):  # rare: one by one
                sessions.session_opened(inst, now)
                result.changes.append((inst.name, "dead socket", new))
            continue
        if new == inst.state or inst.state == S.GONE:
            _report_stuck(inst, now)
            continue
        result.changes.append((inst.name, inst.state, new))
        logger.info("instance %s: %s → %s (check)", inst.name, inst.state, new)
        if new == S.OPEN:
            opened.append(inst)
            continue
        changed.append(Instance(pk=inst.pk, state=new, state_changed_at=now, updated_at=now))
        if new == S.CLOSE:
            closed.append(inst.chip_id)
        _report_stuck(inst, now)
    if changed or opened or closed:
        _write_changes(changed, opened, closed, now)
    result.changed = len(result.changes)
    try:
        cache.set(LAST_CHECK_KEY, {"at": now.isoformat(), "checked": result.checked, "changed": result.changed,
                                   "unknown": result.unknown, "gone": result.gone}, timeout=None)
    except Exception:  # Redis down: the check's writes are done; /health/instances shows the counts
        logger.warning("could not record the instance check in the cache")
    return result


def _write_changes(changed: list[Instance], opened: list[Instance], closed: list[int], now: datetime) -> None:
    with transaction.atomic():
        Instance.objects.bulk_update(changed, ["state", "state_changed_at", "updated_at"], batch_size=500)
        if opened:
            # In bulk what sessions.session_opened does one by one: open, nothing pending, the chip connected.
            Instance.objects.filter(pk__in=[i.pk for i in opened]).update(
                state=S.OPEN, state_changed_at=now, connecting_since=None, restart_requests=0, gone_at=None,
                closing_by_us_at=None, qr_code="", qr_image="", updated_at=now)
            if Chip.objects.filter(pk__in=[i.chip_id for i in opened], is_connected=False).update(
                    is_connected=True, connection_changed_at=now, updated_at=now):
                pool_room_changed()  # chips back in the pool (instances.pool_full)
            linked = set(InstanceLink.objects.filter(instance__in=[i.pk for i in opened], ended_at__isnull=True)
                         .values_list("instance_id", flat=True))
            if linked:  # rare: a link was open when the session opened (its webhook was lost)
                InstanceLink.objects.filter(instance__in=linked, ended_at__isnull=True).update(
                    ended_at=now, end_reason=InstanceLink.End.LINKED, updated_at=now)
                from instances.linking import link_completed

                for inst in opened:
                    if inst.pk in linked:
                        link_completed(inst, now)
        if closed:
            Chip.objects.filter(pk__in=closed, is_connected=True).update(
                is_connected=False, connection_changed_at=now, updated_at=now)


def _server_answered(server: GatewayServer, read: _ServerRead, instances: list[Instance], now: datetime,
                     result: CheckResult) -> bool:
    """Record whether the server answered; an unreachable one takes its chips out of routing (in bulk) and raises
    one alert naming it. Returns False for an unreachable server (its instances are then not reconciled)."""
    key = f"gateway_server_down:{server.pk}"
    if not read.unreachable:
        if not server.is_reachable:
            logger.warning("gateway server %s answers again", server)
            ChipAlert.objects.open().filter(dedup_key=key).update(
                acknowledged_at=now, **stored("action_taken", Text("action.resolved_server"), 300), updated_at=now)
            GatewayServer.objects.filter(pk=server.pk).update(is_reachable=True, unreachable_since=None,
                                                              updated_at=now)
        return True
    with transaction.atomic():
        GatewayServer.objects.filter(pk=server.pk).update(
            is_reachable=False, unreachable_since=server.unreachable_since or now, updated_at=now)
        Instance.objects.filter(pk__in=[i.pk for i in instances]).exclude(state=S.GONE).exclude(
            state=S.UNKNOWN).update(state=S.UNKNOWN, state_changed_at=now, updated_at=now)
        out = Chip.objects.filter(pk__in=[i.chip_id for i in instances], is_connected=True).update(
            is_connected=False, connection_changed_at=now, updated_at=now)
        alert_raise(kind="gateway_server_down", severity=ChipAlert.Severity.CRITICAL, dedup_key=key,
                    message=Text("alert.gateway_server_down", server=server, url=server.url, error=read.error),
                    action_taken=Text("action.server_down", n=len(instances)))
    result.unknown += len(instances)
    logger.error("gateway server %s unreachable: %d chips out of routing", server, out)
    return False


def _report_stuck(inst: Instance, now: datetime) -> None:
    """A session connecting for minutes without opening (WhatsApp unreachable, a reconnect loop): say so."""
    if inst.connecting_since is None or inst.chip.status in Chip.PIPELINE_STATES:
        return
    stuck_for = now - inst.connecting_since
    if stuck_for < timedelta(minutes=settings.LINK_STUCK_MINUTES):
        return
    alert_raise(kind="stuck_link", severity=ChipAlert.Severity.WARNING, chip=inst.chip,
                message=Text("alert.stuck_link", name=inst.name, minutes=int(stuck_for.total_seconds() // 60)),
                action_taken=Text("action.stuck_link"))


def instances_summary() -> dict:
    """Counts by state for /health/instances, with the last check's figures."""
    counts = dict(
        Instance.objects.exclude(chip__status=Chip.Status.RETIRED).values_list("state").annotate(n=Count("pk"))
    )
    try:
        last = cache.get(LAST_CHECK_KEY)
    except Exception:  # Redis down: the counts from PostgreSQL still answer
        last = None
    total = sum(counts.values())
    return {
        "status": "ok" if total == counts.get(S.OPEN, 0) else "degraded",
        "total": total,
        "by_state": {state: counts.get(state, 0) for state in KNOWN_STATES},
        "last_check": last,
    }
