from __future__ import annotations

from datetime import datetime

from ninja import Schema
from pydantic import Field


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


class ChipDetailOut(ChipOut):
    allowed_transitions: list[str]
    history: list[TransitionOut]


class TransitionIn(Schema):
    transition: str = Field(min_length=1, max_length=40)
    reason: str = Field(default="", max_length=500)


class ErrorOut(Schema):
    code: str
    message: str


class ConflictOut(ErrorOut):
    state: str | None = None
    allowed: list[str] = []
