"""Writes for chips: every caller runs a transition through `chip_transition`."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import django_fsm
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from chips import policy
from chips.models import Chip, ChipAlert, ChipTransition
from common.exceptions import InvalidInput, NotFound, TransitionConflict, TransitionNotAllowed
from common.texts import stored
from outbox.services import event_emit

logger = logging.getLogger(__name__)

# Transitions whose guard counts other chips: two of them must not check the count at once, or two
# promotions could both see room for one more (a row lock on the chip does not cover its siblings).
_POOL_WIDE_GUARDS = {"promote_to_active": 7_340_001}


@dataclass(frozen=True)
class Actor:
    """Who asked for a change: recorded on every history row."""

    kind: str
    id: str = ""

    @classmethod
    def user(cls, user: Any) -> Actor:
        return cls(ChipTransition.ActorKind.USER, str(user.get_username()))

    @classmethod
    def api(cls, key_name: str) -> Actor:
        return cls(ChipTransition.ActorKind.API, key_name)

    @classmethod
    def task(cls, name: str) -> Actor:
        return cls(ChipTransition.ActorKind.TASK, name)

    @classmethod
    def webhook(cls, name: str) -> Actor:
        return cls(ChipTransition.ActorKind.WEBHOOK, name)

    @classmethod
    def system(cls, name: str = "") -> Actor:
        return cls(ChipTransition.ActorKind.SYSTEM, name)


def _transitions_by_name() -> dict[str, django_fsm.Transition]:
    field = Chip._meta.get_field("status")
    return {t.name: t for t in field.get_all_transitions(Chip)}


TRANSITIONS = _transitions_by_name()
OPERATOR_TRANSITIONS = frozenset(n for n, t in TRANSITIONS.items() if t.custom.get("admin", True))


def chip_allowed_transitions(*, chip: Chip, operator_only: bool = False, now: datetime | None = None) -> list[str]:
    """The transitions whose source and guard hold for the chip now (or at `now`), sorted by name."""
    with policy.judged_at(now):
        names = {t.name for t in chip.get_available_status_transitions()}
    if operator_only:
        names &= OPERATOR_TRANSITIONS
    return sorted(names)


def chip_transition(
    *,
    chip: Chip | int,
    transition: str,
    actor: Actor,
    reason: str = "",
    operator_only: bool = False,
    params: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Chip:
    """Run one transition by name, save it and write its history row, in one transaction.

    Raises InvalidInput for an unknown name, NotFound for an unknown chip, TransitionNotAllowed
    (naming the chip's state and what is allowed from it) when the source or the guard refuses, and
    TransitionConflict when another writer changed the chip since it was read. `operator_only`
    refuses the transitions the system keeps for itself (activation, provisioning). `now` is the moment the
    guard judges at and the body stamps (default: the wall clock); the orchestrator passes its cycle's.
    """
    if transition not in TRANSITIONS:
        raise InvalidInput(
            f"Unknown transition {transition!r}.", field="transition", allowed=sorted(TRANSITIONS)
        )
    chip_id = chip if isinstance(chip, int) else chip.pk
    try:
        with transaction.atomic():
            if isinstance(chip, int):
                chip = _get_chip(chip)
            if transition in _POOL_WIDE_GUARDS:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_POOL_WIDE_GUARDS[transition]])
            source = chip.status
            if operator_only and transition not in OPERATOR_TRANSITIONS:
                raise _not_allowed(chip, transition, operator_only, why=_("the system runs it, not people"))
            with policy.judged_at(now):
                try:
                    getattr(chip, transition)(**(params or {}))
                except django_fsm.TransitionNotAllowed:
                    raise _not_allowed(chip, transition, operator_only, now=now) from None
            chip.save()
            ChipTransition.objects.create(
                chip=chip,
                source=source,
                target=chip.status,
                transition=transition,
                **stored("reason", reason, 500),
                actor_kind=actor.kind,
                actor_id=actor.id[:150],
            )
            # The business app hears it, in the same transaction as the fact.
            event_emit(type="chip.status_changed", data={
                "chip_id": chip.pk, "phone": chip.phone, "from": source, "to": chip.status,
                "transition": transition, "reason": reason[:500]})
    except django_fsm.ConcurrentTransition:
        current = Chip.objects.filter(pk=chip_id).values_list("status", flat=True).first()
        raise TransitionConflict(
            _("Chip %(chip)s was changed by someone else meanwhile (it is now %(state)s); reload and try again.")
            % {"chip": chip_id, "state": Chip.Status(current).label if current in Chip.Status.values else current},
            state=current,
        ) from None
    logger.info("chip %s: %s → %s by %s:%s (%s)", chip.pk, source, chip.status, actor.kind, actor.id,
                transition)
    return chip


def _get_chip(chip_id: int) -> Chip:
    try:
        return Chip.objects.get(pk=chip_id)
    except Chip.DoesNotExist:
        raise NotFound(f"Chip {chip_id} does not exist.") from None


def _guard_explained(transition: str) -> str:
    """What a transition's guard asks, in the operator's words (with the thresholds in force)."""
    limits = policy.current()
    texts = {
        "provisioned": _("the chip needs a number, a line and a WhatsApp session first"),
        "promote_to_ready": _("it needs trust of at least %(trust)d, %(days)d days of warming and the final "
                              "warming phase") % {"trust": limits.trust_min_for_ready, "days": limits.warmup_days},
        "promote_to_active": _("it needs to be connected with trust of at least %(trust)d, and production must have "
                               "room (at most %(max)d active chips)")
        % {"trust": limits.trust_degraded_threshold, "max": limits.production_max},
        "resume": _("its cooling period is not over yet"),
        "degrade": _("its trust is not below %(trust)d and it has not been disconnected for more than %(minutes)d "
                     "minutes") % {"trust": limits.trust_degraded_threshold,
                                   "minutes": limits.disconnected_degrade_minutes},
        "rewarm": _("it must be connected again first"),
    }
    return texts.get(transition, _("its conditions do not hold"))


def _not_allowed(chip: Chip, transition: str, operator_only: bool, why: str = "",
                 now: datetime | None = None) -> TransitionNotAllowed:
    """The refusal, in operator language; `state` and `allowed` keep the machine names for the API."""
    allowed = chip_allowed_transitions(chip=chip, operator_only=operator_only, now=now)
    if not why:
        why = _guard_explained(transition) if chip.status in _sources(transition) else _(
            "not from this state")
    return TransitionNotAllowed(
        _("%(chip)s: “%(transition)s” is not possible now: %(why)s. The chip is %(state)s; possible now: "
          "%(allowed)s.") % {
            "chip": chip, "transition": Chip.transition_label(transition), "why": why,
            "state": chip.get_status_display(),
            "allowed": ", ".join(str(Chip.transition_label(n)) for n in allowed) or _("nothing")},
        state=chip.status,
        allowed=allowed,
    )


def _sources(transition: str) -> set[str]:
    method = getattr(Chip, transition)
    return {str(s) for s in method._django_fsm.transitions}


@dataclass
class BulkResult:
    succeeded: list[int]
    failed: dict[int, str]


def chips_bulk_transition(
    *, chip_ids: Iterable[int], transition: str, actor: Actor, reason: str = ""
) -> BulkResult:
    """Run one operator transition on many chips, each in its own transaction.

    One chip's refusal does not undo the others: the result says which succeeded and why each of the
    rest did not.
    """
    result = BulkResult(succeeded=[], failed={})
    for chip in Chip.objects.filter(pk__in=list(chip_ids)).order_by("pk"):
        try:
            chip_transition(chip=chip, transition=transition, actor=actor, reason=reason,
                            operator_only=True)
        except (TransitionNotAllowed, TransitionConflict) as exc:
            result.failed[chip.pk] = exc.message
        else:
            result.succeeded.append(chip.pk)
    return result


def alert_raise(
    *,
    kind: str,
    severity: str,
    message: str,
    chip: Chip | None = None,
    dedup_key: str | None = None,
    action_taken: str = "",
) -> tuple[ChipAlert, bool]:
    """Open an alert, or bump the open one with the same key. Returns (alert, created)."""
    key = dedup_key or f"{kind}:{chip.pk if chip else 'pool'}"
    for _attempt in range(2):
        with transaction.atomic():
            existing = ChipAlert.objects.open().select_for_update().filter(dedup_key=key).first()
            if existing:
                ChipAlert.objects.filter(pk=existing.pk).update(
                    occurrences=F("occurrences") + 1,
                    last_raised_at=timezone.now(),
                    **stored("message", message, 10_000),
                    severity=severity,
                    **(stored("action_taken", action_taken, 300) if action_taken else {}),
                    updated_at=timezone.now(),
                )
                existing.refresh_from_db()
                _notify_alert(existing)
                return existing, False
            try:
                with transaction.atomic():
                    alert = ChipAlert.objects.create(
                        chip=chip, kind=kind, severity=severity, dedup_key=key,
                        **stored("message", message, 10_000), **stored("action_taken", action_taken, 300),
                    )
                    event_emit(type="alert.raised", data={
                        "alert_id": alert.pk, "kind": kind, "severity": severity, "message": alert.message,
                        "chip_id": chip.pk if chip else None, "action_taken": alert.action_taken})
                _notify_alert(alert)
                return alert, True
            except IntegrityError:
                # Another process opened the same alert between our read and our insert.
                continue
    raise RuntimeError(f"could not raise alert {key!r}")  # pragma: no cover - two lost races in a row


def _notify_alert(alert: ChipAlert) -> None:
    """Warnings and critical alerts go to Slack's alerts channel, each key at most every 30 minutes."""
    if alert.severity == ChipAlert.Severity.INFO:
        return
    from chips.notifications import notify

    with translation.override(settings.LANGUAGE_CODE):  # Slack reads the operators' language
        action = f" — {alert.action_taken_text}" if alert.action_taken else ""
        text = f"{str(alert.get_severity_display()).upper()} {alert.kind_label()}: {alert.message_text}{action}"
    notify(channel="alerts", key=f"alert:{alert.dedup_key}", text=text)


def alerts_acknowledge(*, alert_ids: Iterable[int], user: Any) -> int:
    """Acknowledge open alerts; returns how many this call closed."""
    return ChipAlert.objects.open().filter(pk__in=list(alert_ids)).update(
        acknowledged_at=timezone.now(), acknowledged_by=user, updated_at=timezone.now()
    )
