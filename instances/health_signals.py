"""Early-warning figures of production chips (W2 5/7): what their delivery outcomes say, over the last hour and the
last 24 h, and the level those figures reach. The figures are delivery facts (instances owns them); what the pool
does about a level (watch, rest, stop) is the orchestrator's (chipfarm.brain).

| figure          | what                                                | windows   | watch / rest / stop      |
|-----------------|-----------------------------------------------------|-----------|--------------------------|
| failed share    | (gateway failures + error receipts) / attempts      | 1 h, 24 h | >= 5 / 10 / 20 %         |
| delivered share | delivered or read / sends older than 15 min         | 24 h      | < 90 / 80 / 60 %         |
| reply rate      | inbound messages / sends                            | 24 h      | < 20 %: watch            |
| restrictions    | reach-out restrictions (463) in the window          | 24 h      | >= 1: watch, >= 2: rest  |

(settings EARLY_WARNING_FAILED_SHARE, _DELIVERED_SHARE, _REPLY_RATE, _RESTRICTIONS)

A window says nothing until it holds EARLY_WARNING_MIN_SENDS attempts (a chip that sent three messages and lost one
is not at 33 %). And a share takes a chip past watch (a rest, a stop) only on EARLY_WARNING_MIN_FAILURES bad messages
(failed, or not delivered) in the window: in a window of 10 to 20 sends one unlucky receipt is already 5-10 %, and a
healthy chip that loses 2 % of its messages would be rested every few days and stopped within a week
(bench/pool_simulation.py found it); fewer bad messages than that are a watch.

Events count from the chip's `signals_since` (the end of its last rest), so a rested chip is judged on what it does
after the rest, not again on what put it there.

Sends come from the `sent` / `send_failed` events every sender writes through instances.services; a receipt for a
message whose send was not recorded still counts as a send (the denominator is never smaller than the receipts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Q
from django.utils import timezone

from chips.models import Chip
from common.texts import Text
from instances.models import ChipCapacity, DeliveryEvent

K = DeliveryEvent.Kind
LEVELS: tuple[str, ...] = ("ok", "watch", "rest", "stop")
HOUR, DAY = timedelta(hours=1), timedelta(hours=24)
# Receipts take a while: the delivered share only counts sends at least this old.
DELIVERY_GRACE = timedelta(minutes=15)


@dataclass(frozen=True)
class Thresholds:
    failed_share: tuple[int, int, int]      # watch, rest, stop: at or above (percent)
    delivered_share: tuple[int, int, int]   # watch, rest, stop: below (percent)
    reply_rate: int                         # watch: below (percent)
    restrictions: tuple[int, int]           # watch, rest: at or above (count in 24 h)
    min_sends: int
    min_failures: int = 3                   # bad messages a share needs to reach rest or stop

    def as_dict(self) -> dict:
        return asdict(self)


def thresholds() -> Thresholds:
    return Thresholds(failed_share=tuple(settings.EARLY_WARNING_FAILED_SHARE),
                      delivered_share=tuple(settings.EARLY_WARNING_DELIVERED_SHARE),
                      reply_rate=settings.EARLY_WARNING_REPLY_RATE,
                      restrictions=tuple(settings.EARLY_WARNING_RESTRICTIONS),
                      min_sends=settings.EARLY_WARNING_MIN_SENDS, min_failures=settings.EARLY_WARNING_MIN_FAILURES)


@dataclass(frozen=True)
class WindowFigures:
    attempted: int = 0     # sends tried: sent + failed at the gateway
    sent: int = 0          # accepted by the gateway
    failed: int = 0        # failed at the gateway + error receipts
    delivered: int = 0     # messages with a delivery or read receipt
    settled: int = 0       # sends old enough for their receipt to be in (the delivered share's denominator)
    replies: int = 0       # inbound messages
    restrictions: int = 0  # reach-out restrictions

    def share(self, part: int, whole: int) -> float | None:
        return round(100.0 * part / whole, 1) if whole >= settings.EARLY_WARNING_MIN_SENDS else None

    @property
    def failed_share(self) -> float | None:
        return self.share(self.failed, self.attempted)

    @property
    def delivered_share(self) -> float | None:
        return self.share(min(self.delivered, self.settled), self.settled)

    @property
    def reply_rate(self) -> float | None:
        return self.share(self.replies, self.sent)

    def as_dict(self) -> dict:
        return {**asdict(self), "failed_share": self.failed_share, "delivered_share": self.delivered_share,
                "reply_rate": self.reply_rate}


@dataclass(frozen=True)
class ChipFigures:
    chip_id: int
    hour: WindowFigures = field(default_factory=WindowFigures)
    day: WindowFigures = field(default_factory=WindowFigures)
    restricted: bool = False
    since: datetime | None = None  # the events counted start here (None: the whole 24 h)

    def as_dict(self) -> dict:
        return {"hour": self.hour.as_dict(), "day": self.day.as_dict(), "restricted": self.restricted,
                "since": self.since.isoformat() if self.since else None}


@dataclass(frozen=True)
class Assessment:
    level: str
    reasons: list[str]

    @property
    def rank(self) -> int:
        return LEVELS.index(self.level)


def _window_counts(prefix: str, start: Q) -> dict[str, Count]:
    receipts = Q(kind__in=[K.SERVER_ACK, K.DELIVERED, K.READ, K.FAILED]) & ~Q(message_id="")
    return {
        f"{prefix}sent": Count("pk", filter=start & Q(kind=K.SENT)),
        f"{prefix}receipted": Count("message_id", filter=start & receipts, distinct=True),
        f"{prefix}send_failed": Count("pk", filter=start & Q(kind=K.SEND_FAILED)),
        f"{prefix}failed": Count("pk", filter=start & Q(kind=K.FAILED)),
        f"{prefix}delivered": Count("message_id", filter=start & Q(kind__in=[K.DELIVERED, K.READ]) & ~Q(message_id=""),
                                    distinct=True),
        f"{prefix}replies": Count("pk", filter=start & Q(kind=K.INBOUND)),
        f"{prefix}restrictions": Count("pk", filter=start & Q(kind=K.TIMELOCK)),
    }


def _window(row: dict, prefix: str, settled: int) -> WindowFigures:
    sent = max(row[f"{prefix}sent"], row[f"{prefix}receipted"])
    return WindowFigures(attempted=sent + row[f"{prefix}send_failed"], sent=sent,
                         failed=row[f"{prefix}send_failed"] + row[f"{prefix}failed"],
                         delivered=row[f"{prefix}delivered"], settled=settled, replies=row[f"{prefix}replies"],
                         restrictions=row[f"{prefix}restrictions"])


def chip_figures(*, now: datetime, chip_ids: list[int] | None = None) -> dict[int, ChipFigures]:
    """The figures of production chips (or of `chip_ids`), keyed by chip: one grouped query over their events of
    the last 24 h (deliveryevent_chip_at_idx), whatever the pool's size, plus one for their restrictions. Without
    `chip_ids`, chips with no event in the window are absent (nothing to say about them)."""
    day_ago, hour_ago = now - DAY, now - HOUR
    chips = Q(chip_id__in=chip_ids) if chip_ids is not None else Q(chip__status__in=Chip.PRODUCTION_STATES)
    counted = Q(chip__capacity__signals_since__isnull=True) | Q(occurred_at__gte=F("chip__capacity__signals_since"))
    rows = (
        DeliveryEvent.objects.filter(chips, counted, occurred_at__gte=day_ago, occurred_at__lte=now)
        .values("chip_id")
        .annotate(**_window_counts("d_", Q()), **_window_counts("h_", Q(occurred_at__gte=hour_ago)),
                  d_settled=Count("pk", filter=Q(kind=K.SENT, occurred_at__lt=now - DELIVERY_GRACE)))
        .order_by()
    )
    capacity = ChipCapacity.objects.filter(chip_id__in=chip_ids) if chip_ids is not None else \
        ChipCapacity.objects.filter(chip__status__in=Chip.PRODUCTION_STATES)
    facts = {c: (r, s) for c, r, s in capacity.filter(Q(restricted_until__gt=now) | Q(signals_since__isnull=False))
             .values_list("chip_id", "restricted_until", "signals_since")}
    def _facts(chip_id: int) -> dict:
        restricted_until, since = facts.get(chip_id, (None, None))
        return {"restricted": bool(restricted_until and restricted_until > now),
                "since": since if since and since > day_ago else None}

    out = {row["chip_id"]: ChipFigures(chip_id=row["chip_id"], hour=_window(row, "h_", 0),
                                       day=_window(row, "d_", row["d_settled"]), **_facts(row["chip_id"]))
           for row in rows}
    for chip_id in chip_ids or ():  # asked for by id: present even without events
        out.setdefault(chip_id, ChipFigures(chip_id=chip_id, **_facts(chip_id)))
    return out


def assess(figures: ChipFigures, limits: Thresholds | None = None) -> Assessment:
    """The level the figures reach, with a reason per threshold crossed (pure: the same figures, the same level)."""
    t = limits or thresholds()
    level, reasons = 0, []

    def crossed(rank: int, reason: Text) -> None:
        nonlocal level
        if rank:
            level = max(level, rank)
            reasons.append(Text("health.level", level=Text(f"level.{LEVELS[rank]}"), reason=reason))

    def evidenced(rank: int, bad: int, reason: Text) -> tuple[int, Text]:
        """Past watch only on enough bad messages (see the module docstring)."""
        if rank > 1 and bad < t.min_failures:
            return 1, Text("health.too_few", reason=reason, n=bad, m=t.min_failures)
        return rank, reason

    for name, window in ((Text("health.last_hour"), figures.hour), (Text("health.last_day"), figures.day)):
        share = window.failed_share
        if share is not None:
            rank = sum(share >= limit for limit in t.failed_share)
            crossed(*evidenced(rank, window.failed, Text(
                "health.failed", share=share, n=window.attempted, window=name, w=t.failed_share[0],
                r=t.failed_share[1], s=t.failed_share[2])))
    day = figures.day
    delivered = day.delivered_share
    if delivered is not None:
        rank = sum(delivered < limit for limit in t.delivered_share)
        crossed(*evidenced(rank, day.settled - min(day.delivered, day.settled), Text(
            "health.delivered", share=delivered, n=day.settled, w=t.delivered_share[0], r=t.delivered_share[1],
            s=t.delivered_share[2])))
    replies = day.reply_rate
    if replies is not None and replies < t.reply_rate:
        crossed(1, Text("health.replies", rate=replies, n=day.sent, w=t.reply_rate))
    restrictions = day.restrictions
    rank = sum(restrictions >= limit for limit in t.restrictions)
    if rank:
        crossed(rank, Text("health.restrictions", n=restrictions, w=t.restrictions[0], r=t.restrictions[1]))
    elif figures.restricted:
        crossed(1, Text("health.restricted"))
    return Assessment(level=LEVELS[level], reasons=reasons)


def figures_restart(*, chip_id: int, since: datetime) -> None:
    """Judge the chip's delivery from `since` on (the end of a rest): what put it there is not counted again."""
    ChipCapacity.objects.get_or_create(chip_id=chip_id)
    ChipCapacity.objects.filter(chip_id=chip_id).update(signals_since=since, updated_at=timezone.now())
