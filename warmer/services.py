"""The warmer: a daily planner of due-at actions, a dispatcher that sends them, and the trust score.

Warming chips talk to other pool chips like people: at jittered times inside business hours (never
on national holidays), typing before they send, with varied Portuguese texts (never the same text to
the same peer on a day), peers chosen by how long ago the two last talked, and the peer answering
after a human delay. Every message goes through the gateway and the router's caps, which for a warming chip
are its phase's plan (`phase_caps`, read by instances.caps when asked; the planner writes no capacity row).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from chips.models import Chip, TrustLevel, WarmingPhase
from instances import hours
from instances.caps import Caps
from instances.models import DeliveryEvent, OutboundMessage
from instances.restriction import restricted_q
from warmer.models import ChipDailyMetrics, PhasePlan, TrustBreakdown, WarmingAction, WarmingDay
from warmer.plans import DEFAULT_PLANS, ensure_default_plans
from warmer.texts import OPENERS
from warmer.trust import TrustInputs, trust_score

logger = logging.getLogger(__name__)
S = Chip.Status
A = WarmingAction.Status
PEER_STATES = (S.WARMING, S.READY, S.ACTIVE)
IDLE_RESTART = timedelta(hours=72)
TRUST_WINDOW = timedelta(days=7)
rng = random.SystemRandom()


# --- phases ---------------------------------------------------------------------------------------------

def phase_plans() -> list[PhasePlan]:
    plans = list(PhasePlan.objects.order_by("order"))
    if len(plans) < len(DEFAULT_PLANS):
        # The migration seeds them; a database flushed since (or a deleted row) gets the defaults back.
        ensure_default_plans(PhasePlan)
        plans = list(PhasePlan.objects.order_by("order"))
    return plans


def phase_caps() -> dict[str, Caps]:
    """Each phase's caps for the router (registered with instances.caps at start-up): the plan's messages per
    day, its hourly share, and its new peers per day as the new-contacts cap."""
    return {plan.phase: Caps(per_hour=plan.messages_per_hour, per_day=plan.messages_per_day,
                             new_contacts_per_day=plan.new_peers_per_day)
            for plan in phase_plans()}


def phase_for(*, warming_day: int, trust: int, plans: list[PhasePlan]) -> PhasePlan:
    """The latest phase the chip's age reaches and its trust allows (phases are cumulative)."""
    current = plans[0]
    for plan in plans[1:]:
        if warming_day >= plan.starts_on_day and trust >= plan.min_trust:
            current = plan
        else:
            break
    return current


def phase_progress(phase: str | None, plans: list[PhasePlan]) -> float:
    order = [p.phase for p in plans]
    if phase not in order or len(order) < 2:
        return 0.0
    return order.index(phase) / (len(order) - 1)


def _local_date(moment: datetime) -> date:
    return hours.business_day(moment)


# --- the daily planner ----------------------------------------------------------------------------------

@dataclass
class PlanReport:
    day: date
    chips: int = 0
    actions: int = 0
    restarted: list[int] = field(default_factory=list)
    holiday: bool = False


def _business_window(day: date) -> tuple[datetime, datetime]:
    tz = hours.business_tz()
    return (datetime.combine(day, settings.BUSINESS_HOURS_START, tzinfo=tz),
            datetime.combine(day, settings.BUSINESS_HOURS_END, tzinfo=tz))


def _jittered_times(n: int, opens: datetime, closes: datetime) -> list[datetime]:
    """n moments spread over [opens, closes): one per equal slot, placed at random inside it."""
    if n <= 0 or closes <= opens:
        return []
    slot = (closes - opens) / n
    return [opens + slot * i + timedelta(seconds=rng.uniform(0, max(1.0, slot.total_seconds() - 60)))
            for i in range(n)]


def _pick_peers(chip_id: int, n: int, new_limit: int, peers: list[int], last_talked: dict[tuple[int, int], datetime],
                now: datetime) -> list[int]:
    """Peers weighted by hours since the two last talked (never: the most weight, but limited per day)."""
    choices: list[int] = []
    new_used: set[int] = set()
    candidates = [p for p in peers if p != chip_id]
    if not candidates:
        return []
    for _ in range(n):
        weights = []
        for peer in candidates:
            last = last_talked.get((chip_id, peer)) or last_talked.get((peer, chip_id))
            if last is None:
                weight = 0.0 if (peer not in new_used and len(new_used) >= new_limit) else 168.0
            else:
                weight = min(168.0, max(1.0, (now - last).total_seconds() / 3600))
            weights.append(weight)
        if not any(weights):
            break
        peer = rng.choices(candidates, weights=weights, k=1)[0]
        if (chip_id, peer) not in last_talked and (peer, chip_id) not in last_talked:
            new_used.add(peer)
        choices.append(peer)
    return choices


def warming_plan_day(*, day: date | None = None, now: datetime | None = None) -> PlanReport:
    """Plan the day's conversations of every warming chip not planned yet (idempotent per chip and day).

    On a national holiday nothing is planned. A chip idle for 72 hours restarts its ramp; a restricted
    chip (WhatsApp's reach-out timelock) is not planned: its warming pauses until the lock ends.
    """
    now = now or timezone.now()
    day = day or _local_date(now)
    report = PlanReport(day=day)
    if hours.is_holiday(day):
        report.holiday = True
        return report
    plans = phase_plans()
    opens, closes = _business_window(day)
    opens = max(opens, now)
    restricted = restricted_q(now=now)
    chips = list(
        Chip.objects.filter(status=S.WARMING, is_connected=True).exclude(restricted)
        .exclude(warming_plan_days__day=day).order_by("pk")
    )
    if not chips:
        return report
    peers = list(Chip.objects.filter(status__in=PEER_STATES, is_connected=True).exclude(restricted)
                 .values_list("pk", flat=True))
    chip_ids = [c.pk for c in chips]
    last_talked = {
        (row["chip_id"], row["peer_id"]): row["last"]
        for row in WarmingAction.objects.filter(status=A.SENT)
        .filter(Q(chip_id__in=chip_ids) | Q(peer_id__in=chip_ids))
        .values("chip_id", "peer_id").annotate(last=Max("done_at"))
    }
    last_sent: dict[int, datetime] = {}
    for (sender, _peer), at in last_talked.items():
        if sender in last_sent:
            last_sent[sender] = max(last_sent[sender], at)
        else:
            last_sent[sender] = at

    actions: list[WarmingAction] = []
    days: list[WarmingDay] = []
    for chip in chips:
        reference = max(filter(None, [last_sent.get(chip.pk), chip.warming_started_at]), default=now)
        if now - reference > IDLE_RESTART:
            # Idle 72 h: WhatsApp forgets a quiet number; the ramp starts over.
            chip.warming_started_at, chip.warming_phase = now, WarmingPhase.first()
            Chip.objects.filter(pk=chip.pk).update(warming_started_at=now, warming_phase=WarmingPhase.first(),
                                                   updated_at=now)
            report.restarted.append(chip.pk)
            logger.info("chip %s idle for 72 h: warming ramp restarted", chip.pk)
        warming_day = max(0, (day - _local_date(chip.warming_started_at or now)).days)
        plan = phase_for(warming_day=warming_day, trust=chip.trust_score, plans=plans)
        if chip.warming_phase != plan.phase:
            Chip.objects.filter(pk=chip.pk).update(warming_phase=plan.phase, updated_at=now)
        times = _jittered_times(plan.initiations_per_day, opens, closes)
        chosen = _pick_peers(chip.pk, len(times), plan.new_peers_per_day, peers, last_talked, now)
        used: dict[int, set[str]] = defaultdict(set)
        for due_at, peer in zip(times, chosen, strict=False):
            options = [t for t in OPENERS if t not in used[peer]]
            if not options:
                continue
            text = rng.choice(options)
            used[peer].add(text)
            actions.append(WarmingAction(chip=chip, peer_id=peer, kind=WarmingAction.Kind.INITIATE, text=text,
                                         day=day, due_at=due_at, typing_ms=typing_ms(text)))
        days.append(WarmingDay(chip=chip, day=day, phase=plan.phase, warming_day=warming_day,
                               planned=len(chosen)))
    with transaction.atomic():
        created_days = WarmingDay.objects.bulk_create(days, ignore_conflicts=True)
        WarmingAction.objects.bulk_create(actions, ignore_conflicts=True)
    report.chips = len(created_days)
    report.actions = len(actions)
    return report


def typing_ms(text: str) -> int:
    """Typing presence before the message: about a person's typing speed, capped by the setting."""
    return min(settings.WARMER_TYPING_MS_MAX, 600 + 60 * len(text))


# --- the dispatcher: warmer/dispatch.py (batched, concurrent sends) ------------------------------------------

from warmer.dispatch import (  # noqa: E402, F401
    DispatchReport,
    release_stale_claims,
    warming_dispatch,
    warming_dispatch_due,
)

# --- the trust score ------------------------------------------------------------------------------------

SCORED_STATES = (S.WARMING, S.READY, S.ACTIVE, S.COOLING, S.DEGRADED)


def trust_recompute(*, chip_ids: list[int] | None = None, as_of: datetime | None = None) -> int:
    """Recompute the trust score (and its stored breakdown) of the given chips, or of every scored chip.

    A fixed number of grouped queries over the 7-day window, whatever the number of chips; writes in
    bulk. Also fills each day's received / delivery_failures metrics from the webhooks' events.
    """
    as_of = as_of or timezone.now()
    since = as_of - TRUST_WINDOW
    qs = Chip.objects.filter(status__in=SCORED_STATES)
    if chip_ids is not None:
        qs = qs.filter(pk__in=chip_ids)
    chips = list(qs.only("pk", "warming_phase", "activated_at", "warming_started_at", "trust_score",
                         "trust_level", "status"))
    if not chips:
        return 0
    ids = [c.pk for c in chips]
    plans = phase_plans()
    warmer = {
        row["chip_id"]: row
        for row in ChipDailyMetrics.objects.filter(chip_id__in=ids, day__gt=_local_date(since),
                                                   day__lte=_local_date(as_of))
        .values("chip_id").annotate(sent=Sum("sent"), failures=Sum("send_failures"))
    }
    outbound = dict(
        OutboundMessage.objects.filter(chip_id__in=ids, created_at__gt=since, created_at__lte=as_of)
        .values_list("chip_id").annotate(n=Count("pk")).order_by()
    )
    events: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    per_day: dict[tuple[int, date], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    rows = (DeliveryEvent.objects.filter(chip_id__in=ids, occurred_at__gt=since, occurred_at__lte=as_of)
            .annotate(day=TruncDate("occurred_at", tzinfo=hours.business_tz()))
            .values_list("chip_id", "kind", "day").annotate(n=Count("pk")).order_by())
    for chip_id, kind, day, n in rows:
        events[chip_id][kind] += n
        per_day[(chip_id, day)][kind] += n
    breakdowns = []
    for chip in chips:
        w = warmer.get(chip.pk, {})
        e = events[chip.pk]
        born = chip.activated_at or chip.warming_started_at or as_of
        inputs = TrustInputs(
            age_days=(as_of - born).total_seconds() / 86400,
            phase_progress=(1.0 if chip.status in (S.READY, S.ACTIVE, S.COOLING)
                            else phase_progress(chip.warming_phase, plans)),
            sent=(w.get("sent") or 0) + (w.get("failures") or 0) + outbound.get(chip.pk, 0),
            received=e[DeliveryEvent.Kind.INBOUND],
            failures=(w.get("failures") or 0) + e[DeliveryEvent.Kind.FAILED],
            disconnects=e[DeliveryEvent.Kind.DISCONNECTED],
            restrictions=e[DeliveryEvent.Kind.TIMELOCK],
        )
        result = trust_score(inputs)
        chip.trust_score, chip.trust_level = result.score, TrustLevel.for_score(result.score)
        breakdowns.append(TrustBreakdown(chip=chip, score=result.score, components=result.components,
                                         inputs=result.inputs, computed_at=as_of))
    metrics = [
        ChipDailyMetrics(chip_id=chip_id, day=day, received=kinds[DeliveryEvent.Kind.INBOUND],
                         delivery_failures=kinds[DeliveryEvent.Kind.FAILED])
        for (chip_id, day), kinds in per_day.items()
    ]
    with transaction.atomic():
        # Plain fields, never the status: safe beside concurrent transitions.
        Chip.objects.bulk_update(chips, ["trust_score", "trust_level"], batch_size=1000)
        TrustBreakdown.objects.bulk_create(breakdowns, update_conflicts=True, unique_fields=["chip"],
                                           update_fields=["score", "components", "inputs", "computed_at"])
        ChipDailyMetrics.objects.bulk_create(metrics, update_conflicts=True, unique_fields=["chip", "day"],
                                             update_fields=["received", "delivery_failures"])
    return len(chips)


def trust_recompute_recent(*, since: datetime, as_of: datetime | None = None) -> int:
    """On the events that move it: recompute the chips with delivery events since `since`."""
    ids = list(DeliveryEvent.objects.filter(created_at__gte=since).values_list("chip_id", flat=True).distinct())
    return trust_recompute(chip_ids=ids, as_of=as_of) if ids else 0
