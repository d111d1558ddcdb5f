"""/api/v1/chips: list, detail with history, run a transition."""


from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja.pagination import LimitOffsetPagination, paginate

from chips import selectors, services
from chips.models import Chip
from chips.schemas import ChipDetailOut, ChipOut, ConflictOut, ErrorOut, TransitionIn

router = Router(tags=["chips"])


class ChipFilters(Schema):
    status: Chip.Status | None = None


@router.get("", response=list[ChipOut], summary="List chips")
@paginate(LimitOffsetPagination)
def list_chips(request: HttpRequest, filters: Query[ChipFilters]):
    return selectors.chip_list(status=filters.status)


def _detail(chip: Chip) -> dict:
    data = ChipOut.model_validate(chip).model_dump()
    data["history"] = list(chip.transitions.all()[: selectors.HISTORY_LIMIT])
    data["allowed_transitions"] = services.chip_allowed_transitions(chip=chip, operator_only=True)
    return data


@router.get("/{int:chip_id}", response={200: ChipDetailOut, 404: ErrorOut}, summary="A chip with its history")
def get_chip(request: HttpRequest, chip_id: int):
    return _detail(selectors.chip_detail(chip_id=chip_id))


@router.post(
    "/{int:chip_id}/transitions",
    response={200: ChipDetailOut, 404: ErrorOut, 409: ConflictOut, 422: ErrorOut},
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
