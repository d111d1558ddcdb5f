"""/api/v1/chips: list, detail with history, run a transition."""


from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja.pagination import LimitOffsetPagination, paginate
from pydantic import Field

from chips import selectors, services
from chips.models import Chip
from chips.schemas import AUTH_RESPONSES, ChipDetailOut, ChipOut, ConflictOut, ErrorOut, TransitionIn

router = Router(tags=["chips"])


class ChipFilters(Schema):
    status: Chip.Status | None = None


class ChipPagination(LimitOffsetPagination):
    class Input(LimitOffsetPagination.Input):
        # PostgreSQL's OFFSET is a bigint: a larger one is invalid input, not a database error.
        offset: int = Field(0, ge=0, le=2**63 - 1)


@router.get("", response={200: list[ChipOut], **AUTH_RESPONSES, 422: ErrorOut}, summary="List chips")
@paginate(ChipPagination)
def list_chips(request: HttpRequest, filters: Query[ChipFilters]):
    return selectors.chip_list(status=filters.status)


def _detail(chip: Chip) -> dict:
    data = ChipOut.model_validate(chip).model_dump()
    data["history"] = list(chip.transitions.all()[: selectors.HISTORY_LIMIT])
    data["allowed_transitions"] = services.chip_allowed_transitions(chip=chip, operator_only=True)
    data.update(selectors.chip_detail_sections(chip))
    return data


# `{chip_id}`, not `{int:chip_id}`: a malformed id is a 422 from the API, not Django's HTML 404 page.
@router.get("/{chip_id}", response={200: ChipDetailOut, **AUTH_RESPONSES, 404: ErrorOut, 422: ErrorOut},
            summary="A chip with its history")
def get_chip(request: HttpRequest, chip_id: int):
    return _detail(selectors.chip_detail(chip_id=chip_id))


@router.post(
    "/{chip_id}/transitions",
    response={200: ChipDetailOut, **AUTH_RESPONSES, 404: ErrorOut, 409: ConflictOut, 422: ErrorOut},
    summary="Run a transition",
)
def run_transition(request: HttpRequest, chip_id: int, payload: TransitionIn):
    services.chip_transition(
        chip=chip_id,
        transition=payload.transition,
        reason=payload.reason,
        actor=services.Actor.api(request.auth.name),
        operator_only=True,
    )
    return _detail(selectors.chip_detail(chip_id=chip_id))
