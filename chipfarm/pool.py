"""Pool reads: counts, health, deficits (DESIGN §3). One grouped query, whatever the pool's size."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.db.models import Count

from chipfarm.models import PoolConfiguration
from chips.models import Chip
from chips.policy import Limits
from common.texts import Text

S = Chip.Status


def pool_limits() -> Limits:
    """The thresholds for the lifecycle guards, from the pool configuration row (one PK lookup)."""
    return PoolConfiguration.load().limits()


@dataclass(frozen=True)
class PoolStatus:
    counts: dict[str, int]
    health: str          # healthy | attention | critical
    reasons: list[str]
    deficits: dict[str, int]
    pipeline: int
    targets: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def state_counts() -> dict[str, int]:
    rows = dict(Chip.objects.values_list("status").annotate(n=Count("pk")).order_by())
    return {state.value: rows.get(state.value, 0) for state in S}


def pool_status(*, counts: dict[str, int] | None = None, config: PoolConfiguration | None = None) -> PoolStatus:
    """Health and deficits from the counts. Critical: active < production_min. Attention: ready < ready_min
    or warming under half the buffer. Chips in provisioning, pending or activating count toward the
    warming buffer, so a slow activation never triggers another purchase."""
    counts = counts if counts is not None else state_counts()
    config = config or PoolConfiguration.load()
    active, ready, warming = counts[S.ACTIVE], counts[S.READY], counts[S.WARMING]
    pipeline = sum(counts[s] for s in Chip.PIPELINE_STATES)
    reasons: list[str] = []
    if active < config.production_min:
        health = "critical"
        reasons.append(Text("pool.active_low", n=active, min=config.production_min))
    else:
        health = "healthy"
        if ready < config.ready_min:
            reasons.append(Text("pool.ready_low", n=ready, min=config.ready_min))
        if warming < config.warmup_buffer / 2:
            reasons.append(Text("pool.warming_low", n=warming, buffer=config.warmup_buffer))
        if reasons:
            health = "attention"
    deficits = {
        "production": max(0, config.production_min - active),
        "ready": max(0, config.ready_min - ready),
        "warming": max(0, config.warmup_buffer - warming - pipeline),
    }
    targets = {"production_min": config.production_min, "production_max": config.production_max,
               "ready_min": config.ready_min, "warmup_buffer": config.warmup_buffer}
    return PoolStatus(counts=counts, health=health, reasons=reasons, deficits=deficits, pipeline=pipeline,
                      targets=targets)
