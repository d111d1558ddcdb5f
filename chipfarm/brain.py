"""The pool brain's cycle steps (W2 5/7): catch a chip while it is getting into trouble, not after the ban.

`early_warning` reads every production chip's delivery figures (instances.health_signals: one grouped query over
the last 24 h) and acts only on the chips whose level changes:

- watch: a warning alert names the figures; nothing else changes;
- rest: the chip cools down (`cool_down`, cooling_until) for REST_MINUTES, doubled for each rest in the last
  REST_MEMORY_DAYS (at most REST_MAX_MINUTES); its new-contact allowance drops a step and its figures restart
  from the end of the rest; the cycle's resume step puts it back when cooling_until passes;
- stop: the chip is marked for the degrade rule (`Chip.stop_requested_at`), so the cycle's replace step degrades it
  and hands its contacts to a ready chip; a chip that needs more than REST_MAX_REPEATS rests in REST_MEMORY_DAYS is
  stopped instead of rested again.

A level goes down (back to watch or ok) only after it held CLEAR_AFTER, so a chip near a threshold does not flap.
Every decision is an OrchestratorOperation with the figures and thresholds that triggered it. A resting chip is not
judged until it resumes.

`allowance_climb` moves the growing new-contact allowance (instances.allowance) one step up for chips with
ALLOWANCE_STEP_DAYS clean days at their step, and back to the first step for chips that entered production again.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import formats, timezone

from chipfarm.models import ChipHealth, OrchestratorOperation, PoolConfiguration
from chips.models import Chip, ChipAlert
from chips.services import Actor, alert_raise, chip_transition
from common.exceptions import DomainError
from common.texts import Text, joined, stored
from instances import circuit
from instances.allowance import allowance_restart, allowance_step_down, allowance_step_up
from instances.caps import allowance_for, allowance_steps, allowance_summary
from instances.health_signals import LEVELS, Assessment, ChipFigures, assess, chip_figures, figures_restart, thresholds
from instances.models import ChipCapacity

logger = logging.getLogger(__name__)
ACTOR = Actor.system("orchestrator")
MAX_PER_STEP = 100
CLEAR_AFTER = timedelta(minutes=30)
S = Chip.Status
Op = OrchestratorOperation.Kind
L = ChipHealth.Level
OPERATION = {L.OK: Op.HEALTH_CLEAR, L.WATCH: Op.HEALTH_WATCH, L.REST: Op.HEALTH_REST, L.STOP: Op.HEALTH_STOP}


def _operation(kind: str, *, chip_id: int, reason: str, success: bool = True, error: str = "",
               **metadata) -> OrchestratorOperation:
    return OrchestratorOperation.objects.create(kind=kind, chip_id=chip_id, **stored("reason", reason, 300),
                                                success=success, error=error, metadata=metadata)


def _alert_key(chip_id: int) -> str:
    return f"early_warning:{chip_id}"


def _local(moment: datetime) -> str:
    return formats.date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT")


def _set_level(chip_id: int, level: str, now: datetime, figures: ChipFigures, assessment: Assessment) -> None:
    ChipHealth.objects.update_or_create(chip_id=chip_id, defaults={
        "level": level, "since": now, "figures": figures.as_dict(), "reasons": assessment.reasons})


def rests_recent(chip_id: int, now: datetime) -> int:
    """Rests the early warning gave the chip within REST_MEMORY_DAYS."""
    return OrchestratorOperation.objects.filter(kind=Op.HEALTH_REST, chip_id=chip_id, success=True,
                                                created_at__gte=now - timedelta(days=settings.REST_MEMORY_DAYS),
                                                created_at__lte=now).count()


def rest_minutes(repeat: int) -> int:
    """How long the `repeat`-th rest (0: the first) within REST_MEMORY_DAYS lasts."""
    return min(settings.REST_MINUTES * 2 ** repeat, settings.REST_MAX_MINUTES)


def _metadata(level: str, figures: ChipFigures, assessment: Assessment, **extra) -> dict:
    return {"level": level, "figures": figures.as_dict(), "thresholds": thresholds().as_dict(),
            "reasons": assessment.reasons, **extra}


def _watch(chip: Chip, figures: ChipFigures, assessment: Assessment, now: datetime) -> None:
    reasons = joined(assessment.reasons)
    with transaction.atomic():
        _operation(Op.HEALTH_WATCH, chip_id=chip.pk, reason=reasons, **_metadata(L.WATCH, figures, assessment))
        _set_level(chip.pk, L.WATCH, now, figures, assessment)
        alert_raise(kind="early_warning", severity=ChipAlert.Severity.WARNING, chip=chip, dedup_key=_alert_key(chip.pk),
                    message=Text("alert.early_warning_watch", chip=chip, reasons=reasons),
                    action_taken=Text("action.watching"))


def _rest(chip: Chip, figures: ChipFigures, assessment: Assessment, now: datetime) -> str:
    repeat = rests_recent(chip.pk, now)
    if repeat >= settings.REST_MAX_REPEATS:
        return _stop(chip, figures, assessment, now,
                     extra=Text("brain.rest_again", n=repeat, days=settings.REST_MEMORY_DAYS))
    minutes = rest_minutes(repeat)
    until = now + timedelta(minutes=minutes)
    reasons = joined(assessment.reasons)
    with transaction.atomic():
        chip_transition(chip=chip.pk, transition="cool_down", actor=ACTOR, params={"until": until}, now=now,
                        reason=Text("brain.rest", n=repeat + 1, minutes=minutes, reasons=reasons))
        figures_restart(chip_id=chip.pk, since=until)
        allowance_step_down(chip_id=chip.pk, reason=Text("brain.rested_at", at=_local(now)), now=now)
        _operation(Op.HEALTH_REST, chip_id=chip.pk, reason=reasons,
                   **_metadata(L.REST, figures, assessment, minutes=minutes, repeat=repeat + 1,
                               until=until.isoformat()))
        _set_level(chip.pk, L.REST, now, figures, assessment)
        alert_raise(kind="early_warning", severity=ChipAlert.Severity.WARNING, chip=chip, dedup_key=_alert_key(chip.pk),
                    message=Text("alert.early_warning_rest", chip=chip, reasons=reasons),
                    action_taken=Text("action.cooling", minutes=minutes, n=repeat + 1, days=settings.REST_MEMORY_DAYS,
                                      until=_local(until)))
    logger.warning("chip %s rested %s min by the early warning: %s", chip.pk, minutes, reasons)
    return L.REST


def _stop(chip: Chip, figures: ChipFigures, assessment: Assessment, now: datetime, *, extra: str = "") -> str:
    reasons = joined([*assessment.reasons, *([extra] if extra else [])])
    with transaction.atomic():
        Chip.objects.filter(pk=chip.pk, stop_requested_at__isnull=True).update(
            stop_requested_at=now, **stored("stop_reason", reasons, 300), updated_at=now)
        _operation(Op.HEALTH_STOP, chip_id=chip.pk, reason=reasons,
                   **_metadata(L.STOP, figures, assessment, rests=rests_recent(chip.pk, now)))
        _set_level(chip.pk, L.STOP, now, figures, assessment)
        alert_raise(kind="early_warning", severity=ChipAlert.Severity.CRITICAL, chip=chip,
                    dedup_key=_alert_key(chip.pk),
                    message=Text("alert.early_warning_stop", chip=chip, reasons=reasons),
                    action_taken=Text("action.degraded_replaced"))
    logger.warning("chip %s stopped by the early warning: %s", chip.pk, reasons)
    return L.STOP


def _clear(chip: Chip, figures: ChipFigures, assessment: Assessment, now: datetime) -> None:
    """Back to ok: recorded, and the chip's early-warning alert is closed."""
    with transaction.atomic():
        _operation(Op.HEALTH_CLEAR, chip_id=chip.pk, reason=Text("brain.clear"),
                   **_metadata(L.OK, figures, assessment))
        _set_level(chip.pk, L.OK, now, figures, assessment)
        ChipAlert.objects.open().filter(dedup_key=_alert_key(chip.pk)).update(
            acknowledged_at=now, **stored("action_taken", Text("action.resolved_figures"), 300),
            updated_at=now)


def early_warning(config: PoolConfiguration, now: datetime) -> int:
    """The cycle's early-warning step (see module docstring); returns how many chips changed level."""
    if not settings.EARLY_WARNING_ENABLED:
        return 0
    figures = chip_figures(now=now)
    health = {chip_id: (level, since, status) for chip_id, level, since, status in
              ChipHealth.objects.filter(chip__status__in=Chip.PRODUCTION_STATES)
              .values_list("chip_id", "level", "since", "chip__status")}
    limits = thresholds()
    judged: list[tuple[int, Assessment]] = []
    for chip_id in sorted(set(figures) | set(health)):
        current, since, status = health.get(chip_id, (L.OK, now, S.ACTIVE))
        assessment = assess(figures.get(chip_id) or ChipFigures(chip_id=chip_id), limits)
        # A rest (or a stop) that is over — the chip is active again — is judged afresh: whatever its figures
        # say now is a decision (back to ok or watch, or another rest, which counts toward the stop).
        over = current in (L.REST, L.STOP) and status == S.ACTIVE
        if not over and assessment.level == current:
            continue
        if not over and assessment.rank < LEVELS.index(current) and now - since < CLEAR_AFTER:
            continue  # a level holds a while before it goes down
        judged.append((chip_id, assessment))
    if not judged:
        return 0
    # A resting chip is judged again when it resumes: only active chips act, at most MAX_PER_STEP a cycle.
    chips = {c.pk: c for c in Chip.objects.filter(pk__in=[j[0] for j in judged], status=S.ACTIVE)}
    changed = 0
    for chip_id, assessment in [j for j in judged if j[0] in chips][:MAX_PER_STEP]:
        chip = chips[chip_id]
        chip_facts = figures.get(chip_id) or ChipFigures(chip_id=chip_id)
        try:
            if assessment.level == L.STOP:
                _stop(chip, chip_facts, assessment, now)
            elif assessment.level == L.REST:
                _rest(chip, chip_facts, assessment, now)
            elif assessment.level == L.WATCH:
                _watch(chip, chip_facts, assessment, now)
            else:
                _clear(chip, chip_facts, assessment, now)
            changed += 1
        except DomainError as exc:
            _operation(OPERATION[assessment.level], chip_id=chip_id, reason=joined(assessment.reasons),
                       success=False, error=exc.message)
    return changed


# --- the growing new-contact allowance ---------------------------------------------------------------------

def allowance_climb(config: PoolConfiguration, now: datetime) -> int:
    """Production chips with ALLOWANCE_STEP_DAYS clean days at their step climb one; chips that entered production
    again (their step is older than their promotion) restart at the first step. Bounded queries."""
    steps = allowance_steps()
    top = len(steps) - 1
    changed = 0
    for chip_id in (ChipCapacity.objects.filter(chip__status__in=Chip.PRODUCTION_STATES, allowance_step__gt=0,
                                                allowance_changed_at__lt=F("chip__active_at"))
                    .values_list("chip_id", flat=True)[:MAX_PER_STEP]):
        with transaction.atomic():
            allowance_restart(chip_id=chip_id, reason=Text("brain.entered_production"), now=now)
            _operation(Op.ALLOWANCE_STEP, chip_id=chip_id, reason=Text("brain.first_step"),
                       step=1, allowance=steps[0])
        changed += 1
    if top == 0:
        return changed
    cutoff = now - timedelta(days=settings.ALLOWANCE_STEP_DAYS)
    candidates = list(
        Chip.objects.filter(status=S.ACTIVE, active_at__lte=cutoff)
        .filter(Q(capacity__isnull=True) | Q(capacity__allowance_step__lt=top))
        .filter(Q(capacity__isnull=True) | Q(capacity__allowance_changed_at__isnull=True)
                | Q(capacity__allowance_changed_at__lte=cutoff))
        .values_list("pk", flat=True)[:MAX_PER_STEP]
    )
    if not candidates:
        return changed
    figures = chip_figures(now=now, chip_ids=candidates)
    limits = thresholds()
    for chip_id in candidates:
        facts = figures.get(chip_id)
        if facts is None or facts.day.delivered_share is None or facts.restricted:
            continue  # no evidence of clean delivery: the step waits
        assessment = assess(facts, limits)
        if assessment.level != L.OK:
            continue
        reason = Text("brain.clean_days", days=settings.ALLOWANCE_STEP_DAYS, share=facts.day.delivered_share)
        with transaction.atomic():
            step = allowance_step_up(chip_id=chip_id, reason=reason, now=now)
            if step is None:
                continue
            _operation(Op.ALLOWANCE_STEP, chip_id=chip_id, reason=reason, step=step + 1,
                       allowance=allowance_for(step), figures=facts.as_dict())
        changed += 1
    return changed


# --- what the chip page shows --------------------------------------------------------------------------------

def chip_health_summary(chip: Chip, now: datetime | None = None) -> dict | None:
    """The chip page's (and the chip API's) `health` section: the early-warning level and since when, the live
    figures over the last hour and 24 h with the level they reach and why, the thresholds, recent rests, the send
    circuit and the new-contact allowance step. None for chips that never reached production."""
    if chip.status not in (*Chip.PRODUCTION_STATES, S.DEGRADED) and chip.active_at is None:
        return None
    now = now or timezone.now()
    facts = chip_figures(now=now, chip_ids=[chip.pk]).get(chip.pk) or ChipFigures(chip_id=chip.pk)
    assessment = assess(facts)
    stored = ChipHealth.objects.filter(chip_id=chip.pk).first()
    capacity = ChipCapacity.objects.filter(chip_id=chip.pk).first()
    return {
        "level": stored.level if stored else L.OK, "since": stored.since if stored else None,
        "assessed_level": assessment.level, "reasons": assessment.reasons,
        "figures": facts.as_dict(), "thresholds": thresholds().as_dict(),
        "rests_recent": rests_recent(chip.pk, now), "rest_memory_days": settings.REST_MEMORY_DAYS,
        "next_rest_minutes": rest_minutes(rests_recent(chip.pk, now)),
        "stop_requested_at": chip.stop_requested_at, "stop_reason": chip.stop_reason,
        "circuit": circuit.circuit_state(chip_id=chip.pk, now=now).as_dict(),
        "allowance": allowance_summary(chip, capacity),
    }
