"""Request and response bodies of /api/v1/endpoints.

The error bodies repeat the shape of every other operation's (`{code, message, field?, errors?}`): the outbox
imports no other app, and the OpenAPI document shows one `ErrorOut` either way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from ninja import Schema
from pydantic import AfterValidator, Field

from outbox.models import ALL_EVENTS, EVENT_TYPES


def _storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL: refused as input (422), not at the database (500)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


StorableStr = Annotated[str, AfterValidator(_storable)]
EventType = Annotated[str, Field(min_length=1, max_length=50, examples=[ALL_EVENTS, *EVENT_TYPES])]
_TYPES_HELP = f"Event types to receive; empty or [\"*\"] for all. Known: {', '.join(EVENT_TYPES)}."


class FieldErrorOut(Schema):
    field: str
    message: str


class ErrorOut(Schema):
    code: str
    message: str
    field: str | None = Field(default=None, description="The input the error is about, when there is one.")
    errors: list[FieldErrorOut] = Field(default=[], description="Every invalid input (422 from validation).")


class EndpointIn(Schema):
    url: StorableStr = Field(min_length=1, max_length=2000, description="http or https URL of the consumer.")
    event_types: list[EventType] = Field(default=[], max_length=len(EVENT_TYPES) + 1, description=_TYPES_HELP)
    description: StorableStr = Field(default="", max_length=500)
    is_enabled: bool = True


class EndpointPatch(Schema):
    url: StorableStr | None = Field(default=None, min_length=1, max_length=2000)
    event_types: list[EventType] | None = Field(default=None, max_length=len(EVENT_TYPES) + 1,
                                                description=_TYPES_HELP)
    description: StorableStr | None = Field(default=None, max_length=500)
    is_enabled: bool | None = None


class EndpointOut(Schema):
    id: int
    url: str
    event_types: list[str]
    description: str
    is_enabled: bool
    disabled_reason: str
    disabled_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EndpointCreatedOut(EndpointOut):
    secret: str = Field(description="The whsec_ signing secret. Shown this once: store it now.")


class AttemptOut(Schema):
    event_id: str
    event_type: str
    attempted_at: datetime
    status_code: int | None
    error: str
    duration_ms: int
    is_success: bool


class EndpointDetailOut(EndpointOut):
    recent_attempts: list[AttemptOut] = Field(description="The latest delivery attempts, newest first.")


class PingOut(Schema):
    event_id: str
    delivery_id: int
    status: str = Field(description="The delivery's status (queued: it is sent right after this answer).")
