from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, Field


def _storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL: refuse it as input (422), not at the database (500)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


# A string that is stored as given: the input models use it for every free-text field.
StorableStr = Annotated[str, AfterValidator(_storable)]


class TransitionOut(Schema):
    source: str
    target: str
    transition: str
    reason: str
    actor_kind: str
    actor_id: str
    created_at: datetime


class ChipOut(Schema):
    id: int
    status: str
    phone: str | None
    area_code: str
    provider_line_id: str | None
    instance_name: str | None
    trust_score: int
    trust_level: str
    warming_phase: str | None
    warming_started_at: datetime | None
    is_connected: bool
    connection_changed_at: datetime | None
    cooling_until: datetime | None
    activation_attempts: int
    created_at: datetime
    updated_at: datetime


class ReleaseOut(Schema):
    """What a retired chip has not given back yet (its gateway instance, its paid line), and why."""

    reason: str
    pending: list[str] = Field(description='"instance" and/or "line": what is not released yet.')
    instance_deleted_at: datetime | None
    line_canceled_at: datetime | None
    next_attempt_at: datetime | None
    gave_up_at: datetime | None
    last_error: str


class KindCapOut(Schema):
    per_hour: int = Field(description="The kind's share of the hourly cap.")
    used_this_hour: int
    min_trust: int


class CapacityOut(Schema):
    """The caps in effect for the chip now (they follow its status: production, warming phase) and its usage."""

    per_hour: int
    per_day: int
    new_contacts_per_day: int
    used_this_hour: int
    used_today: int
    restricted_until: datetime | None
    kinds: dict[str, KindCapOut] = Field(default={}, description="prospecting / follow_up / reply: each kind's "
                                                                 "share of this hour and the trust it needs.")
    new_contacts_step: int = Field(default=1, description="The growing new-contact allowance's step (1-based).")
    new_contacts_steps: list[int] = []
    new_contacts_reason: str = ""


class CircuitOut(Schema):
    state: str = Field(description="closed | open | half_open")
    failures: int
    open_until: datetime | None
    trial_in_flight: bool
    times_opened: int
    reason: str
    known: bool = Field(description="False when Redis could not be read (routing then fails open).")


class HealthOut(Schema):
    """The pool's early warning on the chip: its level, the live figures and the thresholds they are judged by."""

    level: str = Field(description="ok | watch | rest | stop: the level the pool acted on.")
    since: datetime | None
    assessed_level: str = Field(description="The level the live figures reach now.")
    reasons: list[str]
    figures: dict[str, Any]
    thresholds: dict[str, Any]
    rests_recent: int
    rest_memory_days: int
    next_rest_minutes: int
    stop_requested_at: datetime | None
    stop_reason: str
    circuit: CircuitOut
    allowance: dict[str, Any]


class ChipDetailOut(ChipOut):
    allowed_transitions: list[str]
    history: list[TransitionOut]
    release: ReleaseOut | None = None
    capacity: CapacityOut | None = None
    health: HealthOut | None = None


class TransitionIn(Schema):
    transition: StorableStr = Field(min_length=1, max_length=40)
    reason: StorableStr = Field(default="", max_length=500)


class FieldErrorOut(Schema):
    field: str
    message: str


class ErrorOut(Schema):
    code: str
    message: str
    field: str | None = Field(default=None, description="The input the error is about, when there is one.")
    errors: list[FieldErrorOut] = Field(default=[], description="Every invalid input (422 from validation).")


# What every operation behind X-API-Key may answer besides its own responses: merge into `response=`.
AUTH_RESPONSES: dict[int, type[Schema]] = {401: ErrorOut}


class ConflictOut(ErrorOut):
    state: str | None = None
    allowed: list[str] = []
