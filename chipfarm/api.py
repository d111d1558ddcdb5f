"""/api/v1/pool: counts, targets, deficits, health, buying lines by hand; adding and linking numbers."""

from datetime import datetime
from typing import Literal

from django.http import HttpRequest
from django.utils import timezone
from ninja import Router, Schema, Status
from pydantic import Field

from chipfarm.models import PoolConfiguration
from chipfarm.numbers import chip_add_own, lines_buy
from chipfarm.orchestrator import bought_today
from chipfarm.pool import pool_status
from chips.api import router as chips_router
from chips.schemas import AUTH_RESPONSES, ChipDetailOut, ErrorOut, StorableStr
from chips.services import Actor
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


# --- numbers by hand (W2 3/7) ----------------------------------------------------------------------------------
# These operations belong under /api/v1/chips, whose router chips owns; the pool app (above chips, DESIGN §11)
# adds them to it, since adding a number or linking one needs the gateway and the pool's configuration.

class OwnNumberIn(Schema):
    phone: StorableStr = Field(min_length=1, max_length=40, description="The number, in any common format.")
    source: Literal["own"] = Field(description='Only "own": numbers from Salvy are bought, not added.')
    warm: bool = Field(False, description="An aged number: its warming starts at a later phase.")


class LinkOut(Schema):
    chip_id: int
    url: str = Field(description="The pool's link: the current QR (PNG), or JSON with the pairing code.")
    purpose: str
    expires_at: datetime


class ProvisionIn(Schema):
    count: int = Field(ge=1, le=100)
    area_code: StorableStr | None = Field(None, min_length=2, max_length=2)


class ProvisionOut(Schema):
    chip_ids: list[int]
    remaining_today: int


class BudgetOut(ErrorOut):
    remaining: int


def _actor(request: HttpRequest) -> Actor:
    return Actor.api(request.auth.name)


@chips_router.post("", response={201: ChipDetailOut, **AUTH_RESPONSES, 422: ErrorOut, 503: ErrorOut},
                   summary="Add a number the company owns (no purchase; it waits to be linked)")
def add_own_number(request: HttpRequest, payload: OwnNumberIn):
    from chips.api import _detail
    from chips.selectors import chip_detail

    chip = chip_add_own(phone=payload.phone, warm=payload.warm, actor=_actor(request))
    return Status(201, _detail(chip_detail(chip_id=chip.pk)))


@chips_router.post("/{chip_id}/link", response={201: LinkOut, **AUTH_RESPONSES, 404: ErrorOut, 409: ErrorOut,
                                                422: ErrorOut, 503: ErrorOut},
                   summary="Start linking (or re-linking) a chip; returns the link to scan")
def link_chip(request: HttpRequest, chip_id: int):
    from chips.selectors import chip_detail
    from instances.linking import chip_link, link_url

    link = chip_link(chip=chip_detail(chip_id=chip_id), requested_by=f"api:{request.auth.name}")
    return Status(201, {"chip_id": chip_id, "url": link_url(link), "purpose": link.purpose,
                        "expires_at": link.expires_at})


@router.post("/pool/provision", response={201: ProvisionOut, **AUTH_RESPONSES, 409: BudgetOut, 422: ErrorOut},
             summary="Buy lines by hand, within the daily budget")
def provision(request: HttpRequest, payload: ProvisionIn):
    chips = lines_buy(count=payload.count, area_code=payload.area_code, actor=_actor(request))
    left = PoolConfiguration.load().provision_daily_budget - bought_today(timezone.now())
    return Status(201, {"chip_ids": [c.pk for c in chips], "remaining_today": max(0, left)})
