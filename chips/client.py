"""Slack incoming-webhook client (operator alerts).

Slack's incoming webhooks answer in plain text, not JSON: 200 ``ok`` on success, and on failure a short error
string as the body — 400 ``invalid_payload``, 403 ``action_prohibited``, 404 ``no_service`` (webhook revoked),
410 ``channel_is_archived``, 429 ``rate_limited`` with a ``Retry-After`` header (seconds), 5xx when Slack is down.
Only 429, 5xx and network failures are worth retrying; the 4xx ones need a human to fix the webhook.

No Django models here: the URL and timeout default to settings.SLACK_WEBHOOK_URL / HTTP_TIMEOUT_SECONDS.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = ["SlackError", "post_message"]


class SlackError(Exception):
    """A message Slack did not accept. `status_code` is None when no answer came back (timeout, connection)."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retryable = retryable
        #: seconds Slack asked us to wait (429 Retry-After); None when it did not say.
        self.retry_after = retry_after
        #: Slack's error string from the body ("invalid_payload", "rate_limited", ...).
        self.error = error

    def __repr__(self) -> str:
        return (f"SlackError(status_code={self.status_code!r}, error={self.error!r}, retryable={self.retryable!r}, "
                f"retry_after={self.retry_after!r})")


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` is seconds in practice, but HTTP also allows a date; both are read, garbage is None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _settings(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name)


def post_message(*, text: str, blocks: list[Any] | None = None, webhook_url: str | None = None,
                 timeout: float | None = None) -> None:
    """Post `text` (also the notification fallback when `blocks` are given) to an incoming webhook.

    Raises SlackError on anything but 2xx, on timeouts and on connection failures, and when no webhook URL is
    configured (not retryable: a configuration problem).
    """
    url = webhook_url if webhook_url is not None else _settings("SLACK_WEBHOOK_URL")
    if not url:
        raise SlackError("no Slack webhook URL configured (SLACK_WEBHOOK_URL)")
    seconds = float(timeout if timeout is not None else _settings("HTTP_TIMEOUT_SECONDS"))
    payload: dict[str, Any] = {"text": text}
    if blocks:
        payload["blocks"] = blocks
    try:
        response = httpx.post(
            url, json=payload,
            timeout=httpx.Timeout(connect=min(seconds, 5.0), read=seconds, write=seconds, pool=seconds),
        )
    except httpx.TimeoutException as exc:
        raise SlackError(f"Slack webhook timed out: {exc!r}", retryable=True) from exc
    except httpx.TransportError as exc:
        raise SlackError(f"Slack webhook unreachable: {exc!r}", retryable=True) from exc
    if response.is_success:
        return
    status = response.status_code
    error = response.text.strip()[:200] or None
    raise SlackError(
        f"Slack webhook -> {status}: {error}",
        status_code=status,
        retryable=status == 429 or status >= 500,
        retry_after=_retry_after(response.headers.get("retry-after")) if status == 429 else None,
        error=error,
    )
