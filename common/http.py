"""One small HTTP base for the outside-system clients (Evolution, Salvy, the activator, Slack).

Each client is a thin subclass naming its operations: this module owns what they all share — the pooled
httpx client with one TLS context per process, timeouts per operation (a short connect timeout: a slow
handshake means the other side is down), transport failures turned into the client's own error type, the
`retryable` rule, and the context-manager lifecycle. What differs per system (its error envelope, which
answers are failures) stays in the subclass's `error_for()`.
"""

from __future__ import annotations

import ssl
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar

import httpx

CONNECT_TIMEOUT = 5.0


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """One TLS context for every httpx client in the process.

    Building it (loading the CA bundle) costs tens of milliseconds; httpx does it on every new client,
    which made short-lived clients (one per task run) spend most of their time there.
    """
    return httpx.create_ssl_context()


def setting_or(value: Any, name: str) -> Any:
    """`value` when the caller gave one, else the Django setting `name` (read lazily: the client modules import
    without Django configured)."""
    if value is not None:
        return value
    from django.conf import settings

    return getattr(settings, name)


def iso_datetime(value: Any) -> datetime | None:
    """An ISO-8601 timestamp as the providers send it (``...Z`` included); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def timeout_for(read: float, *, connect: float = CONNECT_TIMEOUT) -> httpx.Timeout:
    """Explicit on all four phases; the connect phase capped so a dead host fails fast."""
    return httpx.Timeout(connect=min(connect, read), read=read, write=read, pool=read)


class ClientError(Exception):
    """A call to an outside system that did not succeed, normalised.

    `kind` is a small closed set per system; `status_code` is None when no answer came back (timeout,
    connection failure). `retryable` says whether the same call may work later — advisory, and only for
    calls that are safe to repeat (a timed-out send may have been delivered).
    """

    RETRYABLE_KINDS: ClassVar[frozenset[str]] = frozenset({"server", "timeout", "transport"})

    def __init__(self, kind: str, message: str = "", *, status_code: int | None = None) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message or kind
        self.status_code = status_code

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE_KINDS or self.status_code == 429

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, status_code={self.status_code!r}, {self.message!r})"


class HttpClient:
    """The shared plumbing. Subclasses set `service` and `error_class`, and implement `error_for()`."""

    service: ClassVar[str] = "HTTP"
    error_class: ClassVar[type[ClientError]] = ClientError
    #: the setting that holds the service's URL, read when the caller gives no `base_url`
    url_setting: ClassVar[str | None] = None

    def __init__(self, *, base_url: str | None = None, headers: dict[str, str], timeout: float | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if base_url is None and self.url_setting is not None:
            base_url = setting_or(None, self.url_setting)
        self.base_url = str(base_url or "").rstrip("/")
        self.timeout = float(setting_or(timeout, "HTTP_TIMEOUT_SECONDS"))
        self._http = httpx.Client(verify=tls_context(), base_url=self.base_url,
                                  headers={"Accept": "application/json", **headers},
                                  timeout=timeout_for(self.timeout), transport=transport)

    # -- hooks ---------------------------------------------------------------------------------------------

    def error_for(self, response: httpx.Response, *, operation: str, **context: Any) -> ClientError | None:
        """The error this answer stands for, or None when it is a success (default: any non-2xx)."""
        if response.is_success:
            return None
        return self.error_class("server" if response.status_code >= 500 else "bad_request",
                                f"{self.service} {operation} -> {response.status_code}: {response.text[:300]}",
                                status_code=response.status_code)

    def transport_error(self, kind: str, exc: httpx.HTTPError, *, operation: str, read: float,
                        **context: Any) -> ClientError:
        """The error for no answer at all (`kind` is "timeout" or "transport")."""
        what = "timed out" if kind == "timeout" else "failed"
        return self.error_class(kind, f"{self.service} {operation} {what}: {exc!r}")

    # -- the one exchange ----------------------------------------------------------------------------------

    def exchange(self, method: str, path: str, *, operation: str, json: Any = None,
                 params: dict[str, Any] | None = None, read_timeout: float | None = None,
                 content: bytes | None = None, headers: dict[str, str] | None = None,
                 extensions: dict[str, Any] | None = None, **context: Any) -> httpx.Response:
        """One HTTP request: the response when it is a success, else the client's error (raised).

        `content` sends exact bytes (a signed body must go out as it was signed, not re-serialised);
        `headers` are added to the client's own for this request; `extensions` go to httpx as they are
        (e.g. ``sni_hostname`` when the URL names an address that was resolved beforehand).
        """
        read = self.timeout if read_timeout is None else float(read_timeout)
        try:
            response = self._http.request(method, path, json=json, params=params, content=content,
                                          headers=headers, extensions=extensions, timeout=timeout_for(read))
        except httpx.TimeoutException as exc:
            raise self.transport_error("timeout", exc, operation=operation, read=read, **context) from exc
        except httpx.HTTPError as exc:
            raise self.transport_error("transport", exc, operation=operation, read=read, **context) from exc
        error = self.error_for(response, operation=operation, **context)
        if error is not None:
            raise error
        return response

    @staticmethod
    def json_of(response: httpx.Response) -> Any:
        """The parsed body, or None when it is empty or not JSON (a proxy's HTML page)."""
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
