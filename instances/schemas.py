from datetime import datetime
from typing import Literal

from ninja import Schema
from pydantic import Field, field_validator

from chips.schemas import StorableStr
from instances.phones import normalize_contact


class ContactIn(Schema):
    contact: str = Field(min_length=1, max_length=40, description="Phone number; Brazil is the default region.")

    @field_validator("contact")
    @classmethod
    def _valid_phone(cls, value: str) -> str:
        return normalize_contact(value)


Kind = Literal["prospecting", "follow_up", "reply"]


class RouteIn(ContactIn):
    kind: Kind = Field("follow_up", description="prospecting: a contact who never wrote to us; follow_up; reply: "
                                                "the contact wrote within 24 h (the only kind an opted-out contact "
                                                "gets).")


class RouteOut(Schema):
    chip_id: int
    phone: str
    instance: str
    binding: str


class MessageIn(RouteIn):
    text: StorableStr = Field(min_length=1, max_length=4096)
    idempotency_key: StorableStr = Field(min_length=1, max_length=100)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be blank")
        return value


class MessageOut(Schema):
    message_id: int
    idempotency_key: str
    contact: str
    chip_id: int
    phone: str | None
    instance: str | None
    status: str
    evolution_message_id: str | None
    error: str
    created_at: datetime
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    read_at: datetime | None = None


class ContactOut(Schema):
    contact: str
    chip_id: int | None
    phone: str | None = Field(description="The number the contact hears from now.")
    bound_since: datetime | None
    binding_origin: str | None
    previous_chip_id: int | None
    opted_out: bool
    opted_out_at: datetime | None
    last_inbound_at: datetime | None


class SuppressionIn(ContactIn):
    reason: StorableStr = Field("", max_length=300)


class SuppressionOut(Schema):
    contact: str
    opted_out: bool
    reason: str
    source: str
    created_at: datetime


class PauseIn(Schema):
    reason: StorableStr = Field(min_length=1, max_length=300)


class ResumeIn(Schema):
    reason: StorableStr = Field(default="", max_length=300)


class SwitchOut(Schema):
    paused: bool
    reason: str
    by: str
    at: datetime | None


class RefusalOut(Schema):
    code: str
    message: str
    retry_after: int | None = None
    kind: str | None = Field(None, description="The message kind no chip could take (no_capacity).")


class MessageQuery(Schema):
    idempotency_key: StorableStr = Field(min_length=1, max_length=100)
