"""What the pool needs from a WhatsApp gateway, in the pool's own words (DESIGN §11).

The rest of the pool speaks only these types: an implementation (Evolution 2.3.7 today) translates its wire
format into them. A gateway is one server: `gateway_for(server)` builds the implementation for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from common.http import ClientError

#: The normalised error kinds every implementation maps its failures to.
ERROR_KINDS = (
    "not_found",          # the instance does not exist on the gateway (deleted, database lost)
    "exists",             # create: the name is taken
    "not_on_whatsapp",    # send: the number has no WhatsApp account
    "unauthorized",       # our key is wrong
    "bad_request",        # the gateway refused the request as it is
    "connection_closed",  # the session's socket is dead although the gateway may still report it open
    "license_required",   # the gateway's business routes are locked until it is licensed (Evolution 2.4)
    "server",             # the gateway failed (5xx)
    "timeout",            # no answer in time (a send's outcome is then unknown)
    "transport",          # no connection
    "error_body",         # a 2xx whose body says it failed, or an answer of an unexpected shape
)


class GatewayError(ClientError):
    """Any failed gateway call, normalised.

    ``kind`` is one of :data:`ERROR_KINDS`; ``status_code`` is ``None`` for timeouts and transport errors;
    ``messages`` is the gateway's own explanation as a list of strings; ``payload`` the parsed body (``None`` if
    absent or not JSON). ``operation``/``instance`` say what was being done, for logs.
    """

    def __init__(self, kind: str, *, operation: str = "request", instance: str | None = None,
                 status_code: int | None = None, messages: list[str] | None = None, payload: Any = None) -> None:
        self.operation = operation
        self.instance = instance
        self.messages = list(messages or [])
        self.payload = payload
        super().__init__(kind, kind, status_code=status_code)

    @property
    def retryable(self) -> bool:
        """True for timeouts, transport errors and 5xx.

        Advisory for idempotent reads only. For ``send_text`` a timeout may mean the message *was* sent: never
        use this flag to resend; reconcile through the gateway's delivery receipts instead.
        """
        if self.kind in ("timeout", "transport"):
            return True
        return self.kind in ("server", "connection_closed") and (self.status_code or 0) >= 500

    def __str__(self) -> str:
        target = f"{self.operation} {self.instance!r}" if self.instance is not None else self.operation
        where = f"HTTP {self.status_code}" if self.status_code is not None else "no response"
        text = "; ".join(self.messages) if self.messages else "(no message)"
        return f"Gateway {target} failed: {where} [{self.kind}]: {text}"

    def __repr__(self) -> str:
        return (f"GatewayError(kind={self.kind!r}, operation={self.operation!r}, instance={self.instance!r}, "
                f"status_code={self.status_code!r}, messages={self.messages!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructor: teach pickle (Celery results, multiprocessing) how to rebuild us.
        return (_rebuild_error, (self.__dict__.copy(),))


def _rebuild_error(state: dict[str, Any]) -> GatewayError:
    err = GatewayError(state.get("kind", "error_body"))
    err.__dict__.update(state)
    return err


@dataclass(frozen=True)
class SendResult:
    """A message the gateway accepted. ``message_id`` correlates its later delivery receipts."""

    message_id: str
    remote_jid: str
    status: str
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class ConnectInfo:
    """The pairing material of an instance that is linking, or ``state == "open"`` when it is already linked.

    ``code`` is the raw QR string (what a QR image encodes), ``image`` a PNG data URL of it when the gateway sends
    one, ``pairing_code`` the 8-character code for "link with phone number" (only when asked with a number),
    ``count`` how many QR codes this socket generated. All QR fields are ``None`` before the first QR exists.
    """

    code: str | None
    image: str | None
    pairing_code: str | None
    count: int | None
    state: str | None
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class InstanceRecord:
    """One instance as the gateway's own database keeps it (durable, unlike the live socket state).

    ``disconnection_code``/``disconnection_at`` are written only by final closes: a ban (402/403/406) or a logout
    (401) whose webhook never arrived is still here.
    """

    name: str
    status: str                     # open | connecting | close (as persisted; may lag the live state)
    disconnection_code: int | None
    disconnection_at: datetime | None
    owner: str | None               # the linked phone's JID
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class WebhookConfig:
    """Where an instance delivers its events, with the secret header it sends."""

    url: str
    secret: str
    events: tuple[str, ...]
    enabled: bool = True


class Gateway(Protocol):
    """The operations the pool uses. Implementations raise :class:`GatewayError` and nothing else."""

    base_url: str

    def create_instance(self, name: str, *, number: str | None = None, webhook: WebhookConfig | None = None,
                        qrcode: bool = False) -> dict: ...

    def connect(self, name: str, *, number: str | None = None) -> ConnectInfo: ...

    def connection_state(self, name: str) -> str: ...

    def list_instances(self) -> list[InstanceRecord]: ...

    def restart(self, name: str) -> None: ...

    def logout(self, name: str) -> None: ...

    def delete(self, name: str) -> None: ...

    def find_webhook(self, name: str) -> WebhookConfig | None: ...

    def set_webhook(self, name: str, config: WebhookConfig) -> None: ...

    def webhook_config(self, *, url: str, secret: str) -> WebhookConfig: ...

    def send_text(self, name: str, *, number: str, text: str, delay_ms: int | None = None) -> SendResult: ...

    def connection_states(self, names: Iterable[str], *, concurrency: int) -> dict[str, str | GatewayError]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Gateway: ...

    def __exit__(self, *exc: object) -> None: ...
