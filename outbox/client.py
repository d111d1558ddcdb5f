"""The HTTP client for consumer endpoints: one signed POST per attempt, the answer normalised.

Consumers are anyone's servers, so nothing about their answers is trusted: any 2xx is a success, 410 means
"stop sending" (the endpoint is disabled), everything else is a failure that the retry schedule tries again.
Redirects are not followed (a redirect could point anywhere, past the SSRF check).
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from common.http import ClientError, HttpClient

USER_AGENT = "chipfarm-webhooks/1"
EXCERPT = 500


class ConsumerError(ClientError):
    """An attempt that did not get a 2xx: `status_code` None when no answer came back."""

    RETRYABLE_KINDS: ClassVar[frozenset[str]] = frozenset({"server", "timeout", "transport", "rejected"})

    def __init__(self, kind: str, message: str = "", *, status_code: int | None = None,
                 excerpt: str = "") -> None:
        super().__init__(kind, message, status_code=status_code)
        #: the start of the consumer's answer, for the operator looking at the attempts.
        self.excerpt = excerpt

    @property
    def is_gone(self) -> bool:
        """410 Gone: the consumer asks to be sent nothing more."""
        return self.status_code == 410


def excerpt_of(response: httpx.Response) -> str:
    # PostgreSQL text cannot hold NUL; a consumer's answer may carry anything.
    return response.text[:EXCERPT].replace("\x00", "")


class ConsumerClient(HttpClient):
    """POSTs exact bytes to absolute URLs (no base URL: each endpoint is its own)."""

    service = "Consumer endpoint"
    error_class = ConsumerError

    def __init__(self, *, timeout: float, transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url="", headers={"User-Agent": USER_AGENT}, timeout=timeout, transport=transport)

    def error_for(self, response: httpx.Response, *, operation: str, **context: Any) -> ConsumerError | None:
        if response.is_success:
            return None
        kind = "gone" if response.status_code == 410 else "server" if response.status_code >= 500 else "rejected"
        return ConsumerError(kind, f"HTTP {response.status_code}", status_code=response.status_code,
                             excerpt=excerpt_of(response))

    def transport_error(self, kind: str, exc: httpx.HTTPError, *, operation: str, read: float,
                        **context: Any) -> ConsumerError:
        what = f"no answer within {read:g} s" if kind == "timeout" else "connection failed"
        return ConsumerError(kind, f"{what}: {type(exc).__name__} {exc}".strip())

    def post_event(self, *, url: str, body: bytes, headers: dict[str, str],
                   extensions: dict[str, Any] | None = None) -> httpx.Response:
        """One POST of a signed body; the response when it is a 2xx, else ConsumerError."""
        return self.exchange("POST", url, operation="post", content=body, extensions=extensions,
                             headers={"Content-Type": "application/json", **headers})
