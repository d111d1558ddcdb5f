"""Everything an operator asks about one chip, for the top of its admin page (W2 6/7).

Composed here because the answer spans every app (DESIGN §11: chips knows none of the others): the state and
why (last transition, open alerts), usage today against the caps in effect, trust and its breakdown, warming
and today's metrics, the connection and its gateway server, recent outbound messages and current bindings,
and the release of a retired chip's outside resources. A fixed number of queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone
from django.utils.translation import gettext as _

from chipfarm.models import ChipRelease
from chips.models import Chip, ChipAlert, ChipTransition
from instances import hours
from instances.admin import qr_preview_html
from instances.caps import caps_in_effect, usage_now
from instances.models import ChipCapacity, ContactBinding, Instance, OutboundMessage
from instances.restriction import is_restricted
from warmer.models import ChipDailyMetrics, PhasePlan, TrustBreakdown
from warmer.trust import COMPONENTS

RECENT_MESSAGES = 8


@dataclass(frozen=True)
class Meter:
    """One "used of cap" figure, with the share used for a bar."""

    label: str
    used: int
    cap: int

    @property
    def percent(self) -> int | None:
        """The share of the cap used; None when the chip has no cap (it does not send in its state)."""
        return min(100, round(100 * self.used / self.cap)) if self.cap > 0 else None


def chip_overview(chip: Chip, *, now: datetime | None = None) -> dict:
    now = now or timezone.now()
    last = ChipTransition.objects.filter(chip=chip).order_by("-created_at", "-id").first()
    alerts = list(ChipAlert.objects.open().filter(chip=chip).order_by("-last_raised_at")[:5])
    capacity = ChipCapacity.objects.filter(chip=chip).first()
    caps = caps_in_effect(chip, capacity)
    used = usage_now(capacity, now)
    breakdown = TrustBreakdown.objects.filter(chip=chip).first()
    today = hours.business_day(now)
    metrics = list(ChipDailyMetrics.objects.filter(chip=chip).order_by("-day")[:7])
    plan = PhasePlan.objects.filter(phase=chip.warming_phase).first() if chip.warming_phase else None
    instance = Instance.objects.select_related("server").filter(chip=chip).first()
    recent = list(OutboundMessage.objects.filter(chip=chip).order_by("-id")[:RECENT_MESSAGES])
    bindings = ContactBinding.objects.current().filter(chip=chip).count()
    release = ChipRelease.objects.filter(chip=chip).first() if chip.status == Chip.Status.RETIRED else None
    # A session waiting to be linked: its live QR, to scan from this page (the link page refreshes it).
    qr = qr_preview_html(instance) if instance is not None and instance.qr_is_live(now) else ""
    return {
        "last_transition": last,
        "open_alerts": alerts,
        "caps": caps,
        "meters": [Meter(_("this hour"), used.hour, caps.per_hour), Meter(_("today"), used.day, caps.per_day)],
        "restricted_until": capacity.restricted_until if is_restricted(capacity, now) else None,
        "has_overrides": capacity is not None and any(
            v is not None for v in (capacity.max_per_hour, capacity.max_per_day, capacity.max_new_contacts_per_day)),
        "breakdown": breakdown,
        "trust_rows": _trust_rows(breakdown),
        "plan": plan,
        "today_metrics": next((m for m in metrics if m.day == today), None),
        "metrics": metrics,
        "instance": instance,
        "qr": qr,
        "recent_messages": recent,
        "bindings": bindings,
        "release": release,
        "release_state": _release_state(release),
        "now": now,
    }


def _trust_rows(breakdown: TrustBreakdown | None) -> list[dict]:
    if breakdown is None:
        return []
    rows = []
    for key, value in breakdown.components.items():
        label, best = COMPONENTS.get(key, (key, None))
        rows.append({"key": key, "label": label, "value": value, "best": best,
                     "percent": round(100 * max(0.0, value) / best) if best and best > 0 else None})
    return rows


def _release_state(release: ChipRelease | None) -> str:
    if release is None:
        return ""
    if release.done:
        return _("Done: the WhatsApp session is deleted and the line cancelled.")
    if release.gave_up_at is not None:
        return _("Gave up: %(what)s still to release by hand.") % {"what": _pending_text(release)}
    return _("Under way: %(what)s still to release.") % {"what": _pending_text(release)}


def _pending_text(release: ChipRelease) -> str:
    names = {"instance": _("the WhatsApp session"), "line": _("the Salvy line")}
    return ", ".join(str(names[side]) for side in release.pending)
