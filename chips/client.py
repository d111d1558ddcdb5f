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

from common.http import ClientError, HttpClient, setting_or

__all__ = ["SlackError", "post_message"]


class SlackError(ClientError):
    """A message Slack did not accept. `status_code` is None when no answer came back (timeout, connection)."""

    def __init__(self, message: str, *, status_code: int | None = None, retryable: bool = False,
                 retry_after: float | None = None, error: str | None = None, kind: str = "rejected") -> None:
        super().__init__(kind, message, status_code=status_code)
        self._retryable = retryable
        #: seconds Slack asked us to wait (429 Retry-After); None when it did not say.
        self.retry_after = retry_after
        #: Slack's error string from the body ("invalid_payload", "rate_limited", ...).
        self.error = error

    @property
    def retryable(self) -> bool:
        return self._retryable

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


class SlackClient(HttpClient):
    """An incoming webhook: one POST of `{"text", "blocks"?}` to its URL."""

    service = "Slack"
    error_class = SlackError

    def __init__(self, *, webhook_url: str, timeout: float) -> None:
        # The webhook URL is used as it is (a base URL would gain a trailing slash, which Slack 404s).
        super().__init__(base_url="", headers={}, timeout=timeout)
        self.webhook_url = webhook_url

    def error_for(self, response: httpx.Response, *, operation: str, **context: Any) -> SlackError | None:
        if response.is_success:
            return None
        status = response.status_code
        error = response.text.strip()[:200] or None
        return SlackError(
            f"Slack webhook -> {status}: {error}",
            status_code=status,
            retryable=status == 429 or status >= 500,
            retry_after=_retry_after(response.headers.get("retry-after")) if status == 429 else None,
            error=error,
        )

    def transport_error(self, kind: str, exc: httpx.HTTPError, *, operation: str, read: float,
                        **context: Any) -> SlackError:
        what = "timed out" if kind == "timeout" else "unreachable"
        return SlackError(f"Slack webhook {what}: {exc!r}", retryable=True, kind=kind)

    def post(self, *, text: str, blocks: list[Any] | None = None) -> None:
        payload: dict[str, Any] = {"text": text}
        if blocks:
            payload["blocks"] = blocks
        self.exchange("POST", self.webhook_url, operation="post", json=payload)


def post_message(*, text: str, blocks: list[Any] | None = None, webhook_url: str | None = None,
                 timeout: float | None = None) -> None:
    """Post `text` (also the notification fallback when `blocks` are given) to an incoming webhook.

    Raises SlackError on anything but 2xx, on timeouts and on connection failures, and when no webhook URL is
    configured (not retryable: a configuration problem).
    """
    url = setting_or(webhook_url, "SLACK_WEBHOOK_URL")
    if not url:
        raise SlackError("no Slack webhook URL configured (SLACK_WEBHOOK_URL)", kind="not_configured")
    seconds = float(setting_or(timeout, "HTTP_TIMEOUT_SECONDS"))
    with SlackClient(webhook_url=url, timeout=seconds) as slack:
        slack.post(text=text, blocks=blocks)
