"""Routing outbound traffic across production chips (DESIGN §4).

`route_contact` answers "which chip sends to this contact now?" and reserves one unit of that chip's
capacity in the same transaction. Caps hold under any concurrency because a reservation locks the
chip's `ChipCapacity` row, re-reads its counters there, and increments them before commit. Which caps hold
is `instances.caps` (the reservation asks it in Python, the candidate query in SQL from the same rule).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.db import IntegrityError, OperationalError, transaction
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from chips.models import Chip
from common.exceptions import DomainError
from instances import circuit, hours
from instances.caps import (
    PRODUCTION_STATES,
    caps_annotations,
    caps_in_effect,
    day_window,
    hour_window,
    kind_hour_cap_expression,
    usage_annotations,
    usage_now,
)
from instances.kinds import DEFAULT_KIND, MESSAGE_KINDS, REPLY, kind_policy
from instances.models import ChipCapacity, ContactBinding, RoutingPolicy

logger = logging.getLogger(__name__)

# How many candidates one request tries before answering no_capacity (each try is one locked row).
MAX_CANDIDATES = 8


class RoutingRefused(DomainError):
    """Sending is refused for a reason the caller can act on (503 with a stable code)."""

    status_code = 503
    code = "no_capacity"

    def __init__(self, message: str, *, code: str, retry_after: int | None = None, **extra: object) -> None:
        super().__init__(message, code=code, **extra)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RouteDecision:
    chip_id: int
    phone: str
    instance: str
    binding: str  # "sticky" | "new" | "moved"
    binding_id: int


def _seconds_until_next_hour(now: datetime) -> int:
    return max(1, int((hour_window(now) + timedelta(hours=1) - now).total_seconds()))


def ensure_sending_allowed(now: datetime) -> RoutingPolicy:
    """Refuse when paused or outside business hours; returns the policy otherwise."""
    policy = RoutingPolicy.load()
    if policy.is_paused:
        raise RoutingRefused(f"Sending is paused: {policy.paused_reason or 'no reason given'}.", code="paused")
    if not hours.is_business_time(now):
        opens = hours.next_business_start(now)
        raise RoutingRefused(
            f"Outside business hours; sending opens at {opens.isoformat()}.",
            code="outside_business_hours",
            retry_after=max(1, int((opens - now).total_seconds())),
        )
    return policy


def _available_chips() -> QuerySet[Chip]:
    """Chips that may send at all: active and connected (cooling and degraded chips do not send)."""
    return Chip.objects.filter(status=Chip.Status.ACTIVE, is_connected=True)


def _locked_capacity(chip_id: int) -> ChipCapacity:
    # Lock the capacity row only (of=self); the chip row is read for its status and phase, not locked.
    locked = ChipCapacity.objects.select_for_update(of=("self",)).select_related("chip")
    capacity = locked.filter(chip_id=chip_id).first()
    if capacity is None:
        ChipCapacity.objects.get_or_create(chip_id=chip_id)
        capacity = locked.get(chip_id=chip_id)
    return capacity


KIND_COUNTERS = [f"hour_{k}" for k in MESSAGE_KINDS]


def _refusal(chip: Chip, capacity: ChipCapacity, now: datetime, *, new_contact: bool, kind: str | None,
             bound_reply: bool) -> str | None:
    """Why the chip cannot take one more message now (None: it can). Read under the capacity row's lock."""
    caps = caps_in_effect(chip, capacity)
    used = usage_now(capacity, now)
    if used.hour >= caps.per_hour or used.day >= caps.per_day:
        return "chip at its cap"
    if kind is not None and not bound_reply:
        # A reply on the contact's own production chip skips these (instances.kinds).
        policy = kind_policy(kind)
        if chip.trust_score < policy.min_trust:
            return f"trust {chip.trust_score} below the {kind} minimum {policy.min_trust}"
        if used.of_kind(kind) >= policy.hour_cap(caps.per_hour):
            return f"chip at its {kind} share of the hour"
    if new_contact:
        if capacity.restricted_until and capacity.restricted_until > now:
            return "chip restricted from new contacts"
        recent = ContactBinding.objects.filter(
            chip_id=chip.pk, origin=ContactBinding.Origin.ROUTED, created_at__gte=now - timedelta(hours=24)
        ).count()
        if recent >= caps.new_contacts_per_day:
            return "chip at its new-contact allowance"
    return None


def _try_reserve(chip_id: int, now: datetime, *, new_contact: bool, kind: str | None = None,
                 bound_reply: bool = False) -> str | None:
    """Lock the chip's capacity row and take one unit if every cap in effect (and the kind's rules, and the
    chip's send circuit) allow it. Returns None when reserved, else why not. Caller holds a transaction."""
    capacity = _locked_capacity(chip_id)
    refused = _refusal(capacity.chip, capacity, now, new_contact=new_contact, kind=kind, bound_reply=bound_reply)
    if refused:
        return refused
    # Last, once everything else holds: a half-open circuit's one trial is leased to this reservation.
    if not circuit.allows(circuit.circuit_acquire(chip_id=chip_id, now=now)):
        return "send circuit open"
    used = usage_now(capacity, now)
    capacity.hour_window, capacity.hour_count = hour_window(now), used.hour + 1
    capacity.day_window, capacity.day_count = day_window(now), used.day + 1
    for name in MESSAGE_KINDS:  # a new hour restarts every kind's count
        setattr(capacity, f"hour_{name}", used.of_kind(name) + int(name == kind))
    capacity.last_routed_at = now
    capacity.save(update_fields=["hour_window", "hour_count", "day_window", "day_count", *KIND_COUNTERS,
                                 "last_routed_at", "updated_at"])
    return None


class _Refused(Exception):
    pass


def _reserve_in_savepoint(chip_id: int, now: datetime, *, new_contact: bool, kind: str | None = None,
                          bound_reply: bool = False) -> str | None:
    """Try one chip inside a savepoint that is rolled back on refusal, which releases the row lock at
    once: a request never holds one chip's lock while it tries the next (no lock-order deadlocks).
    Returns None when reserved, else why not."""
    refused: str | None = None
    try:
        with transaction.atomic():
            refused = _try_reserve(chip_id, now, new_contact=new_contact, kind=kind, bound_reply=bound_reply)
            if refused:
                raise _Refused
    except _Refused:
        return refused
    return None


def reserve_capacity(*, chip_id: int, now: datetime | None = None) -> bool:
    """Take one message of a chip's capacity outside contact routing (the warmer's own traffic), under
    the same lock, caps and send circuit as `route_contact`. Returns False when one refuses."""
    now = now or timezone.now()
    with transaction.atomic():
        return _reserve_in_savepoint(chip_id, now, new_contact=False) is None


def _candidates(strategy: str, now: datetime, exclude: set[int], kind: str = DEFAULT_KIND) -> list[int]:
    """Chips that look able to take a new contact of `kind`, best first; bounded (the lock decides for real).
    Chips whose send circuit is open are left out (read from Redis: only the chips in trouble)."""
    policy = kind_policy(kind)
    qs = (
        _available_chips()
        .exclude(pk__in=exclude | circuit.blocked_chips(now=now))
        .filter(trust_score__gte=policy.min_trust)
        .filter(Q(capacity__isnull=True) | Q(capacity__restricted_until__isnull=True)
                | Q(capacity__restricted_until__lte=now))
        .annotate(**usage_annotations(now), **caps_annotations(statuses=[Chip.Status.ACTIVE]),
                  prio=Coalesce(F("capacity__priority"), Value(0)))
        .annotate(kind_cap=kind_hour_cap_expression(kind))
        .filter(used_hour__lt=F("cap_per_hour"), used_day__lt=F("cap_per_day"),
                **{f"used_hour_{kind}__lt": F("kind_cap")})
    )
    if strategy == RoutingPolicy.Strategy.ROUND_ROBIN:
        qs = qs.order_by(F("capacity__last_routed_at").asc(nulls_first=True), "pk")
    elif strategy == RoutingPolicy.Strategy.PRIORITY:
        qs = qs.order_by("-prio", "used_day", "pk")
    else:
        qs = qs.order_by("used_day", "used_hour", "pk")
    return list(qs.values_list("pk", flat=True)[:MAX_CANDIDATES])


def _counted(route: Callable[..., RouteDecision]) -> Callable[..., RouteDecision]:
    """Count each decision for /metrics: "routed", or the refusal code (counting never raises)."""

    @functools.wraps(route)
    def counted(**kwargs: object) -> RouteDecision:
        from config import counters  # lazily: instances never imports config at module level

        try:
            decision = route(**kwargs)
        except RoutingRefused as exc:
            counters.incr("route_decisions", exc.code)
            raise
        counters.incr("route_decisions", "routed")
        return decision

    return counted


@_counted
def route_contact(*, contact: str, kind: str = DEFAULT_KIND, now: datetime | None = None) -> RouteDecision:
    """Pick the chip for `contact` and reserve one message of its capacity (see module docstring).

    Sticky first: the contact's current binding, if its chip is available and has room for the kind. Otherwise a
    new chip by the policy's strategy, among those the kind allows (instances.kinds: trust minimum, hourly share),
    and the binding is created or moved (recorded on the binding). A reply always goes to the contact's own chip
    while it is in production, within the hard caps and its send circuit.
    Raises RoutingRefused with code paused / outside_business_hours / no_capacity (naming the kind); ContactOptedOut
    (409) for a contact who opted out, unless `kind` is a reply; NotAReply (409) for a reply to a contact who did
    not write within 24 h. Nothing is reserved when it refuses.
    """
    now = now or timezone.now()
    message_kind_check(contact=contact, kind=kind, now=now)
    policy = ensure_sending_allowed(now)
    for _attempt in range(3):
        try:
            with transaction.atomic():
                return _route_once(contact, now, policy, kind)
        except IntegrityError:
            # Another request bound this contact between our read and our insert: route again, sticky.
            continue
        except OperationalError as exc:
            # PostgreSQL broke a lock cycle by failing us: nothing was reserved; try again.
            if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                raise
            logger.warning("routing deadlock for a contact; retrying")
            continue
    raise RoutingRefused("The contact is being routed concurrently; retry.", code="no_capacity", retry_after=1)


def _route_once(contact: str, now: datetime, policy: RoutingPolicy, kind: str = DEFAULT_KIND) -> RouteDecision:
    binding = (
        # Lock the binding row only (of=self): locking the joined chip row too would deadlock with a
        # concurrent binding insert, whose foreign-key check takes a share lock on that chip.
        ContactBinding.objects.current().select_for_update(of=("self",)).select_related("chip")
        .filter(contact=contact).first()
    )
    ttl = timedelta(days=policy.binding_ttl_days)
    move_reason = ""
    if binding is not None:
        chip = binding.chip
        # The contact wrote within 24 h: their own chip answers while it is in production (resting included).
        bound_reply = kind == REPLY and chip.status in PRODUCTION_STATES and chip.is_connected
        if binding.expires_at <= now and not bound_reply:
            move_reason = "binding expired"
        elif not bound_reply and (chip.status != Chip.Status.ACTIVE or not chip.is_connected):
            move_reason = f"chip left production ({chip.status}{'' if chip.is_connected else ', disconnected'})"
        else:
            refused = _reserve_in_savepoint(chip.pk, now, new_contact=False, kind=kind, bound_reply=bound_reply)
            if refused is None:
                binding.last_used_at, binding.expires_at = now, now + ttl
                binding.save(update_fields=["last_used_at", "expires_at", "updated_at"])
                return _decision(chip, binding, "sticky")
            move_reason = refused

    # An expired binding's chip may well be picked again; a chip that just refused is not retried.
    tried: set[int] = {binding.chip_id} if binding is not None and move_reason != "binding expired" else set()
    chosen: Chip | None = None
    for chip_id in _candidates(policy.strategy, now, tried, kind):
        if _reserve_in_savepoint(chip_id, now, new_contact=True, kind=kind) is None:
            chosen = Chip.objects.get(pk=chip_id)
            break
    if chosen is None:
        rule = kind_policy(kind)
        raise RoutingRefused(
            f"No production chip can take a {kind} message for this contact now (a {kind} message needs trust "
            f">= {rule.min_trust} and at most {rule.hourly_share} % of a chip's hourly cap).",
            code="no_capacity", retry_after=_seconds_until_next_hour(now), kind=kind,
        )
    if binding is not None:
        binding.released_at = now
        binding.save(update_fields=["released_at", "updated_at"])
        if binding.chip_id != chosen.pk:
            contact_moved_emit(contact=contact, old=binding.chip, new=chosen, reason=move_reason, now=now)
    new = ContactBinding.objects.create(
        contact=contact, chip=chosen, last_used_at=now, expires_at=now + ttl,
        origin=ContactBinding.Origin.ROUTED,
        previous_chip_id=binding.chip_id if binding is not None else None, move_reason=move_reason,
    )
    logger.info("contact bound to chip %s (%s)", chosen.pk, move_reason or "new contact")
    return _decision(chosen, new, "moved" if binding is not None else "new")


class NotAReply(DomainError):
    status_code = 409
    code = "not_a_reply"


REPLY_WINDOW = timedelta(hours=24)


def message_kind_check(*, contact: str, kind: str, now: datetime) -> None:
    """The contact-side rules of a message's kind: an opted-out contact is only answered, and an answer is one only
    when the contact wrote within 24 h (WhatsApp's own window for replies)."""
    from instances.models import InboundMessage
    from instances.optouts import ensure_not_suppressed

    if kind not in MESSAGE_KINDS:
        raise DomainError(f"Unknown message kind {kind!r}.", code="invalid_input", status_code=422, field="kind")
    if kind == REPLY and not InboundMessage.objects.filter(contact=contact,
                                                             received_at__gte=now - REPLY_WINDOW).exists():
        raise NotAReply("A reply needs a message from the contact in the last 24 hours.", field="kind")
    ensure_not_suppressed(contact, kind=kind)


def contact_moved_emit(*, contact: str, old: Chip, new: Chip, reason: str, now: datetime) -> None:
    """`contact.moved`: the contact's number changed, so the app can tell the contact (Twilio's sticky sender)."""
    from outbox.services import event_emit

    event_emit(type="contact.moved", at=now, data={
        "contact": contact, "from_chip_id": old.pk, "from_phone": old.phone, "to_chip_id": new.pk,
        "to_phone": new.phone, "reason": reason})


def _decision(chip: Chip, binding: ContactBinding, kind: str) -> RouteDecision:
    return RouteDecision(chip_id=chip.pk, phone=chip.phone or "", instance=chip.instance_name or "",
                         binding=kind, binding_id=binding.pk)


def bindings_move(*, from_chip_id: int, to_chip_id: int, reason: str, now: datetime | None = None) -> int:
    """Move every current binding of one chip to another (a replacement); returns how many moved.

    Each moved binding is released and re-created on the new chip with `origin=moved`, so the history
    of who talked through which number stays queryable. Moved contacts do not count as new contacts.
    """
    now = now or timezone.now()
    with transaction.atomic():
        old = list(ContactBinding.objects.current().select_for_update().filter(chip_id=from_chip_id))
        if not old:
            return 0
        chips = {c.pk: c for c in Chip.objects.filter(pk__in=[from_chip_id, to_chip_id])}
        for b in old:
            contact_moved_emit(contact=b.contact, old=chips[from_chip_id], new=chips[to_chip_id], reason=reason,
                               now=now)
        ContactBinding.objects.filter(pk__in=[b.pk for b in old]).update(released_at=now, updated_at=now)
        ContactBinding.objects.bulk_create([
            ContactBinding(contact=b.contact, chip_id=to_chip_id, origin=ContactBinding.Origin.MOVED,
                           previous_chip_id=from_chip_id, move_reason=reason[:200], last_used_at=b.last_used_at,
                           expires_at=b.expires_at)
            for b in old
        ])
    return len(old)


def bindings_release(*, chip_id: int, reason: str, now: datetime | None = None) -> int:
    """Release a chip's current bindings (a ban with nowhere to move them); the next route rebinds."""
    now = now or timezone.now()
    return ContactBinding.objects.current().filter(chip_id=chip_id).update(
        released_at=now, move_reason=reason[:200], updated_at=now
    )


def usage_today(chip_ids: list[int], now: datetime | None = None) -> dict[int, int]:
    """Messages reserved today per chip (for the admin), one query."""
    now = now or timezone.now()
    rows = (ChipCapacity.objects.filter(chip_id__in=chip_ids, day_window=day_window(now))
            .values_list("chip_id", "day_count"))
    return dict(rows)


__all__ = [
    "MAX_CANDIDATES", "RouteDecision", "RoutingRefused", "bindings_move", "bindings_release",
    "ensure_sending_allowed", "reserve_capacity", "route_contact", "usage_today",
]


def counters_reset(now: datetime | None = None) -> int:
    """Zero the counters of past windows. Reservations never need this (they treat an older window as
    zero inside their lock); it keeps the admin's usage columns honest. Idempotent."""
    now = now or timezone.now()
    hour, day = hour_window(now), day_window(now)
    stale_hour = Q(hour_count__gt=0) | Q(hour_prospecting__gt=0) | Q(hour_follow_up__gt=0) | Q(hour_reply__gt=0)
    changed = ChipCapacity.objects.filter(stale_hour, hour_window__lt=hour).update(
        hour_count=0, **dict.fromkeys(KIND_COUNTERS, 0), updated_at=now)
    changed += ChipCapacity.objects.filter(day_window__lt=day, day_count__gt=0).update(day_count=0, updated_at=now)
    return changed
