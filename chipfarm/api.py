"""/api/v1/pool: counts, targets, deficits, health and the kill switch."""

from datetime import datetime

from django.http import HttpRequest
from ninja import Router, Schema

from chipfarm.pool import pool_status
from chips.schemas import AUTH_RESPONSES
from instances.models import RoutingPolicy

router = Router(tags=["pool"])


class PoolOut(Schema):
    counts: dict[str, int]
    targets: dict[str, int]
    deficits: dict[str, int]
    pipeline: int
    health: str
    reasons: list[str]
    paused: bool
    paused_reason: str
    paused_at: datetime | None


@router.get("/pool", response={200: PoolOut, **AUTH_RESPONSES},
            summary="Pool counts, targets, deficits, health, paused flag")
def get_pool(request: HttpRequest):
    status = pool_status()
    policy = RoutingPolicy.objects.filter(pk=1).first() or RoutingPolicy()
    return {**status.as_dict(), "paused": policy.is_paused, "paused_reason": policy.paused_reason,
            "paused_at": policy.paused_at}
