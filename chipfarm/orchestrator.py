"""The pool orchestrator: one cycle every 60 s (DESIGN §3).

The cycle runs under a PostgreSQL advisory lock, so two beats or workers never run it at once; each
step runs in its own transaction, and a failing step is logged, recorded and alerted without stopping
the others. Its SQL does not grow with the pool: counts come from one grouped query, candidates from
bounded queries, and the work grows only with the number of changes it makes.

Which chips a step acts on is never decided here: the candidates are the chips' own lifecycle rules
(`Chip.objects.degradable`, `.resumable`, `.promotable_to_ready`, `.promotable_to_active`), the same filters
the transition guards evaluate, judged at the cycle's `now`, which every transition is given.

The pool brain (W2 5/7) adds three steps: the early warning (chipfarm.brain: watch, rest, stop from each chip's
delivery figures), the growing new-contact allowance (chipfarm.brain), and the reserve sized by the forecast
(chipfarm.forecast, with auto_reserve on).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext as _

from chipfarm import brain, forecast
from chipfarm.models import ChipRelease, OrchestratorOperation, PoolConfiguration, PoolSnapshot
from chipfarm.pool import pool_status, state_counts
from chips.models import Chip, ChipAlert
from chips.notifications import notify
from chips.policy import Limits
from chips.services import Actor, alert_raise, chip_transition
from common.exceptions import DomainError
from common.texts import Text, from_row, stored
from instances import hours
from instances.bindings import bindings_move

logger = logging.getLogger(__name__)

CYCLE_LOCK = 7_340_100
ACTOR = Actor.system("orchestrator")
MAX_PER_STEP = 100         # changes one step makes per cycle at most (the rest waits a minute)
SNAPSHOT_EVERY = timedelta(minutes=2)
S = Chip.Status
Op = OrchestratorOperation.Kind


@dataclass
class CycleReport:
    ran: bool = True
    steps: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    health: str = ""
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return sum(self.steps.values())


def run_cycle(*, now: datetime | None = None) -> CycleReport:
    """One orchestrator cycle; returns what each step changed. Skips if another cycle holds the lock."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [CYCLE_LOCK])
        if not cursor.fetchone()[0]:
            logger.info("orchestrator: another cycle is running; skipped")
            return CycleReport(ran=False)
    try:
        now = now or timezone.now()
        config = PoolConfiguration.load()
        report = CycleReport()
        steps: list[tuple[str, Callable[[PoolConfiguration, datetime], int]]] = [
            ("early_warning", brain.early_warning),  # before replace: a chip it stops is replaced in this cycle
            ("replace", replace_degraded),
            ("resume", resume_cooled),
            ("allowance", brain.allowance_climb),
            ("promote_ready", promote_warming_to_ready),
            ("promote_active", promote_ready_to_active),
            ("reserve", forecast.auto_reserve),      # before provision: raised targets are bought for at once
            ("provision", provision_for_buffer),
            ("release", release_retired),
        ]
        for name, step in steps:
            try:
                report.steps[name] = step(config, now)
            except Exception as exc:  # one failing step must not stop the others
                logger.exception("orchestrator step %s failed", name)
                report.errors[name] = f"{exc.__class__.__name__}: {exc}"
                _step_failed(name, exc)
        try:
            report.health = record_health(config, now)
        except Exception as exc:
            logger.exception("orchestrator health step failed")
            report.errors["health"] = f"{exc.__class__.__name__}: {exc}"
        report.seconds = time.perf_counter() - started
        _mark_cycle(now)
        return report
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [CYCLE_LOCK])


def _step_failed(name: str, exc: Exception) -> None:
    try:
        alert_raise(kind="orchestrator_step_failed", severity=ChipAlert.Severity.WARNING,
                    dedup_key=f"orchestrator:{name}",
                    message=Text("alert.step_failed", step=name, error=f"{exc.__class__.__name__}: {exc}"))
    except Exception:
        logger.exception("could not raise the alert for step %s", name)


def _mark_cycle(now: datetime) -> None:
    from django.core.cache import cache

    try:
        cache.set("orchestrator:last_cycle", now.isoformat(), timeout=None)
    except Exception:  # Redis down: /health/deep reports it; the cycle itself is done
        logger.warning("could not record the cycle time in the cache")


def _record(kind: str, *, chip_id: int | None = None, target_id: int | None = None, reason: str = "",
            success: bool = True, error: str = "", **metadata) -> OrchestratorOperation:
    return OrchestratorOperation.objects.create(kind=kind, chip_id=chip_id, target_chip_id=target_id,
                                                **stored("reason", reason, 300), success=success, error=error,
                                                metadata=metadata)


# --- step 1: replace degraded production chips ---------------------------------------------------------

def _why(chip: Chip, limits: Limits) -> Text:
    """The degrade reason of a chip from `Chip.objects.degradable` (which says whether trust is the cause)."""
    if chip.is_stopped:
        return Text("op.early_warning_stop",
                    reasons=from_row(chip.stop_reason_code, chip.stop_reason_params, chip.stop_reason))
    if chip.is_low_trust:
        return Text("op.low_trust", trust=chip.trust_score, threshold=limits.trust_degraded_threshold)
    return Text("op.disconnected", minutes=limits.disconnected_degrade_minutes)


def replace_degraded(config: PoolConfiguration, now: datetime) -> int:
    """Degrade the chips the degrade rule holds for, each production chip replaced by the best chip the
    promote_to_active rule holds for (row-locked), whose bindings it takes over. Degradable ready chips are
    simply demoted."""
    limits = config.limits()
    candidates = list(Chip.objects.degradable(limits, now).order_by("trust_score", "pk")[:MAX_PER_STEP])
    changed = 0
    for old in candidates:
        reason = _why(old, limits)
        try:
            with transaction.atomic():
                if old.status == S.READY:
                    chip_transition(chip=old, transition="degrade", actor=ACTOR, reason=reason, now=now)
                    _record(Op.DEMOTION, chip_id=old.pk, reason=reason)
                    changed += 1
                    continue
                replacement = (
                    Chip.objects.promotable_to_active(limits).select_for_update(skip_locked=True)
                    .order_by("-trust_score", "pk")
                    .first()
                )
                chip_transition(chip=old, transition="degrade", actor=ACTOR, reason=reason, now=now)
                if replacement is None:
                    _record(Op.DEMOTION, chip_id=old.pk, reason=Text("op.no_replacement", reason=reason))
                    alert_raise(
                        kind="no_ready_chip", severity=ChipAlert.Severity.CRITICAL, dedup_key="pool:no_ready_chip",
                        message=Text("alert.no_ready_chip", chip=old, reason=reason),
                        action_taken=Text("action.degraded_no_replacement"),
                    )
                else:
                    chip_transition(chip=replacement, transition="promote_to_active", actor=ACTOR,
                                    reason=Text("op.replaces", chip=old.pk, reason=reason), now=now)
                    moved = bindings_move(from_chip_id=old.pk, to_chip_id=replacement.pk,
                                          reason=Text("op.replacement_of", chip=old.pk), now=now)
                    _record(Op.AUTO_REPLACE, chip_id=old.pk, target_id=replacement.pk, reason=reason,
                            bindings_moved=moved)
                    if moved:
                        _record(Op.MIGRATION, chip_id=old.pk, target_id=replacement.pk,
                                reason=Text("op.bindings_moved", n=moved), bindings_moved=moved)
                    notify(channel="operations", key=f"replace:{old.pk}",
                           text=_("Chip %(old)s degraded (%(reason)s); replaced by %(new)s (trust %(trust)d); "
                                  "%(moved)d conversations moved.")
                           % {"old": old, "reason": reason.rendered(), "new": replacement,
                              "trust": replacement.trust_score, "moved": moved})
                changed += 1
        except DomainError as exc:
            _record(Op.AUTO_REPLACE, chip_id=old.pk, reason=reason, success=False, error=exc.message)
    return changed


# --- step 2: cooling is over ---------------------------------------------------------------------------

def resume_cooled(config: PoolConfiguration, now: datetime) -> int:
    """Cooling chips whose cooling_until has passed go back to production (the resume rule), oldest first."""
    candidates = list(
        Chip.objects.resumable(now).order_by(F("cooling_until").asc(nulls_first=True), "pk")
        .values_list("pk", "cooling_until")[:MAX_PER_STEP]
    )
    changed = 0
    for chip_id, until in candidates:
        reason = Text("op.cooling_over_until", until=until.isoformat()) if until else Text("op.cooling_over")
        try:
            with transaction.atomic():
                chip_transition(chip=chip_id, transition="resume", actor=ACTOR, reason=reason, now=now)
                _record(Op.RESUME, chip_id=chip_id, reason=reason)
            changed += 1
        except DomainError as exc:
            _record(Op.RESUME, chip_id=chip_id, reason=reason, success=False, error=exc.message)
    return changed


# --- steps 3 and 4: promotions -------------------------------------------------------------------------

def promote_warming_to_ready(config: PoolConfiguration, now: datetime) -> int:
    """Warming chips the promote_to_ready rule holds for (trust, days, final phase) join the reserve."""
    limits = config.limits()
    candidates = list(
        Chip.objects.promotable_to_ready(limits, now)
        .order_by("-trust_score", "pk").values_list("pk", flat=True)[:MAX_PER_STEP]
    )
    changed = 0
    for chip_id in candidates:
        try:
            with transaction.atomic():
                chip = chip_transition(chip=chip_id, transition="promote_to_ready", actor=ACTOR,
                                       reason=Text("op.warming_complete"), now=now)
                days = (now - chip.warming_started_at).days
                _record(Op.PROMOTION_WARMING_READY, chip_id=chip_id,
                        reason=Text("op.ready_by_trust", trust=chip.trust_score, min=limits.trust_min_for_ready,
                                    days=days))
            changed += 1
        except DomainError as exc:
            _record(Op.PROMOTION_WARMING_READY, chip_id=chip_id, success=False, error=exc.message)
    return changed


def promote_ready_to_active(config: PoolConfiguration, now: datetime) -> int:
    """Chips the promote_to_active rule holds for enter production while active < production_min, best trust
    first; the transition's guard (taken under a transaction-level advisory lock) keeps active <= production_max."""
    limits = config.limits()
    room = Chip.objects.production_room(limits)
    active = limits.production_max - room
    need = min(config.production_min - active, room)
    if need <= 0:
        return 0
    changed = 0
    with transaction.atomic():
        candidates = list(
            Chip.objects.promotable_to_active(limits).select_for_update(skip_locked=True)
            .order_by("-trust_score", "pk")[:need]
        )
    for chip in candidates:
        try:
            with transaction.atomic():
                chip_transition(chip=chip.pk, transition="promote_to_active", actor=ACTOR,
                                reason=Text("op.below_production_min", min=config.production_min), now=now)
                _record(Op.PROMOTION_READY_ACTIVE, chip_id=chip.pk, reason=Text("op.trust", trust=chip.trust_score))
            changed += 1
        except DomainError as exc:
            _record(Op.PROMOTION_READY_ACTIVE, chip_id=chip.pk, success=False, error=exc.message)
    return changed


# --- step 5: provisioning ------------------------------------------------------------------------------

def bought_today(now: datetime) -> int:
    day_start = hours.day_start(now)
    return OrchestratorOperation.objects.filter(kind__in=OrchestratorOperation.PURCHASES, success=True,
                                                created_at__gte=day_start).count()


def provision_for_buffer(config: PoolConfiguration, now: datetime) -> int:
    """Start buying lines while the warming buffer (pipeline included) is short: at most the batch per
    cycle and never past the daily budget. The chips exist at once (provisioning), so the next cycle
    counts them and never buys for the same gap twice."""
    if not config.auto_provision:
        return 0
    status = pool_status(counts=state_counts(), config=config)
    deficit = status.deficits["warming"]
    if deficit <= 0:
        return 0
    budget_left = config.provision_daily_budget - bought_today(now)
    count = min(deficit, config.provision_batch_max, budget_left)
    if count <= 0:
        alert_raise(kind="provision_budget", severity=ChipAlert.Severity.WARNING, dedup_key="pool:provision_budget",
                    message=Text("alert.provision_budget", budget=config.provision_daily_budget, deficit=deficit))
        return 0
    from chipfarm.provisioning import chips_start_provisioning

    chips_start_provisioning(count=count, area_code=config.default_area_code, reason=Text("op.warming_buffer_short"),
                             kind=Op.AUTO_PROVISION)
    return count


# --- step 6: release the outside resources of retired chips --------------------------------------------

def release_retired(config: PoolConfiguration, now: datetime) -> int:
    """Retired chips whose Evolution instance and Salvy line were not given back yet get a release task."""
    chip_ids = list(
        Chip.objects.filter(status=S.RETIRED, release__isnull=True).order_by("pk")
        .values_list("pk", flat=True)[:MAX_PER_STEP]
    )
    if not chip_ids:
        return 0
    from chipfarm.provisioning import release_reason
    from chipfarm.tasks import release_chip

    chips = Chip.objects.filter(pk__in=chip_ids)
    with transaction.atomic():
        # Due in 10 minutes: if the task queued below is lost, the release sweep picks the row up then.
        ChipRelease.objects.bulk_create([ChipRelease(chip=c, reason=release_reason(c),
                                                     next_attempt_at=now + timedelta(minutes=10)) for c in chips],
                                        ignore_conflicts=True)
        for chip_id in chip_ids:
            release_chip.delay_on_commit(chip_id)
    return len(chip_ids)


# --- health, snapshots, the critical alert -------------------------------------------------------------

def record_health(config: PoolConfiguration, now: datetime) -> str:
    counts = state_counts()
    status = pool_status(counts=counts, config=config)
    last = PoolSnapshot.objects.order_by("-taken_at").values_list("taken_at", flat=True).first()
    if last is None or now - last >= SNAPSHOT_EVERY:
        PoolSnapshot.objects.create(taken_at=now, counts=counts, health=status.health)
    if status.health == "critical":
        # One open alert while it lasts; Slack hears of it on entry and then at most every 30 minutes.
        alert_raise(kind="pool_critical", severity=ChipAlert.Severity.CRITICAL, dedup_key="pool:critical",
                    message=Text("alert.pool_critical", reasons=status.reasons),
                    action_taken=Text("action.promoting"))
    else:
        ChipAlert.objects.open().filter(dedup_key="pool:critical").update(
            acknowledged_at=now, **stored("action_taken", Text("action.resolved_pool"), 300), updated_at=now)
    return status.health
