"""Logging pieces named in `LOGGING`: the request id filter, the masking filter, the JSON formatter.

Logs leave the process through the console handler only, and both filters sit on it, so every line
(plain or JSON, web or Celery) carries the request id and never a whole phone number, SMS code or secret.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from datetime import UTC, datetime

# Set by config.middleware.RequestIdMiddleware for the duration of one request.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_KEY_NAMES = r"(?:x[-_]?)?api[-_]?key|apikey|[\w-]*token|[\w-]*secret|authorization|password|passwd"
_MASKS: list[tuple[re.Pattern[str], str | object]] = [
    # "Authorization: Bearer x", "apikey=x", '"SALVY_API_TOKEN": "x"', "X-Webhook-Secret: x"
    (re.compile(rf"(?i)\b({_KEY_NAMES})(['\"]?\s*[:=]\s*['\"]?)((?:bearer|basic|token)\s+)?[^\s'\",;&}})\]]+"),
     r"\1\2\3***"),
    (re.compile(r"(?i)\bbearer\s+[\w.~+/=-]{8,}"), "Bearer ***"),
    (re.compile(r"\bwhsec_[\w+/=-]+"), "whsec_***"),
    # chipfarm API keys: cf_ + 43 url-safe characters (ApiKey.issue)
    (re.compile(r"(?<![A-Za-z0-9])cf_[\w-]{16,}"), "cf_***"),
    (re.compile(r"(?i)hooks\.slack\.com/services/[\w/]+"), "hooks.slack.com/services/***"),
    # SMS codes: "code 123456", "código: 123-456", "codigo=123 456"
    (re.compile(r"(?i)\b(c[oó]digo|code)(\W{1,3}(?:\w+\W{1,3}){0,3}?)\d{3}[-\s]?\d{3}(?!\d)"), r"\1\2******"),
    (re.compile(r"(?<![\d-])\d{3}-\d{3}(?![\d-])"), "***-***"),
]
# E.164 (+ and 8–15 digits) keeps "+", the country code's first two digits and the last four.
_E164 = re.compile(r"\+([1-9]\d)(\d{2,9})(\d{4})(?!\d)")
# Bare runs of 10–13 digits (5511987654321, WhatsApp JIDs) keep their last four.
_DIGITS = re.compile(r"(?<![A-Za-z0-9*])(\d{6,9})(\d{4})(?![A-Za-z0-9])")


def mask(text: str) -> str:
    """`text` with secrets, SMS codes and phone numbers masked (idempotent)."""
    if not text:
        return text
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    text = _E164.sub(lambda m: f"+{m[1]}{'*' * len(m[2])}{m[3]}", text)
    return _DIGITS.sub(lambda m: f"{'*' * len(m[1])}{m[2]}", text)


class MaskingFilter(logging.Filter):
    """Masks the formatted message (args included), the exception text and the stack of each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        record.msg, record.args = mask(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id`: the current request's id, or "-" outside a request."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get() or "-",
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


_installed = False


def install_record_masking() -> None:
    """Mask every log record where it is created, so no handler anywhere (a test runner's log file, a
    library's own handler) ever sees a whole phone number, SMS code or secret. The console handler's
    filter stays as a second line of defence."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        MaskingFilter().filter(record)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
