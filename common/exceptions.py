"""The one domain exception type. The API turns it into `{code, message}` with its status."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status_code = 400
    code = "domain_error"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        if status_code:
            self.status_code = status_code
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **self.extra}


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class InvalidInput(DomainError):
    status_code = 422
    code = "invalid_input"


class TransitionNotAllowed(DomainError):
    """The transition does not exist from the chip's state, or its guard does not hold."""

    status_code = 409
    code = "transition_not_allowed"


class TransitionConflict(DomainError):
    """Someone else changed the chip between our read and our write."""

    status_code = 409
    code = "transition_conflict"
