"""Svix / Standard Webhooks signatures, checked and made by the `standardwebhooks` library.

Salvy delivers `sms.received` through Svix (contracts/evolution-and-salvy.md §7.3). Svix signs
``"{msg_id}.{timestamp}.{raw body}"`` with HMAC-SHA256 under the endpoint secret and sends three headers:

- ``svix-id``: the message id. It is the same on every retry of one message, so it is the dedup key.
- ``svix-timestamp``: unix seconds of *this attempt* (a retry gets a fresh timestamp and signature).
- ``svix-signature``: space-separated ``v1,<base64>`` entries — several while a secret is being rotated.

The Standard Webhooks spec is the same scheme under the names ``webhook-id`` / ``webhook-timestamp`` /
``webhook-signature``; both spellings are accepted here and handed to the library under its own. The secret is
shown as ``whsec_<base64>``: the prefix is a label, the HMAC key is the base64-decoded remainder. The signature
covers the raw bytes, so verify before parsing JSON, never a re-serialised body.

What stays in this module around the library: finding the headers under either name (with a reason naming the
missing one), refusing what the library would choke on (it raises ValueError, UnicodeDecodeError or
binascii.Error on hostile input rather than its own error), and turning everything into `SignatureError` — a
forged request must be answered 401, never 500.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError

__all__ = ["SECRET_PREFIX", "SignatureError", "decode_secret", "sign", "signed_headers", "verify"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300  # the library's own window; see verify()

_HEADER_NAMES = {
    "id": ("svix-id", "webhook-id"),
    "timestamp": ("svix-timestamp", "webhook-timestamp"),
    "signature": ("svix-signature", "webhook-signature"),
}

# The library's messages, as the short reasons our logs and tests have always used.
_LIBRARY_REASONS = {
    "Message timestamp too old": "timestamp too old",
    "Message timestamp too new": "timestamp too far in the future",
    "Invalid Signature Headers": "invalid timestamp header",
    "No matching signature found": "no matching signature",
}


class SignatureError(Exception):
    """The delivery is not authentic (or is a replay): answer 4xx and do not process it.

    `reason` is a short machine-friendly text ("missing svix-id header", "timestamp too old", ...) for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_secret(secret: str) -> bytes:
    """The HMAC key behind a ``whsec_<base64>`` secret (a bare base64 secret is accepted too).

    Stricter than the library, which silently drops characters that are not base64: a secret that does not
    decode is a configuration error, not a forged request, hence ValueError rather than SignatureError — it must
    surface as a server error, not be silently answered with 4xx forever.
    """
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64 (expected 'whsec_<base64>')") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _webhook(secret: str) -> Webhook:
    # The library is given the decoded key (bytes), so our strict decoding is the one that applies.
    return Webhook(decode_secret(secret))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``"v1,<base64 HMAC-SHA256>"`` over ``f"{msg_id}.{timestamp}.{body}"`` — one `svix-signature` entry.

    `body` must be UTF-8 (the library signs text); every Salvy delivery is JSON, hence UTF-8.
    """
    return _webhook(secret).sign(msg_id, datetime.fromtimestamp(int(timestamp), tz=UTC), body.decode("utf-8"))


def signed_headers(secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
    """The three Svix headers for a delivery of `body` (timestamp defaults to now), as a sender would set them."""
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(ts),
        "svix-signature": sign(secret, msg_id, ts, body),
    }


def _header(lowered: Mapping[str, str], field: str) -> str:
    for name in _HEADER_NAMES[field]:
        value = lowered.get(name)
        if value and value.strip():
            return value.strip()
    raise SignatureError(f"missing {_HEADER_NAMES[field][0]} header")


def _signature_entries(header: str) -> str:
    """The entries the library can read: ``<version>,<value>`` separated by single spaces.

    The library unpacks ``entry.split(",")`` into two names and raises ValueError on anything else (an unversioned
    value, a stray comma, the empty entry a double space makes). Such an entry cannot match a signature, so it is
    dropped here — as the library itself skips versions it does not know.
    """
    return " ".join(entry for entry in header.split() if entry.count(",") == 1)


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    """Return if `body` was signed by the holder of `secret`; raise SignatureError otherwise.

    `headers` may be any mapping (Django's `request.headers`, Starlette's, a plain dict): names are matched
    case-insensitively. The timestamp window is Svix's replay protection; dedup of genuine retries is the caller's
    job (on `svix-id`). The library always enforces its own 5 minutes, both directions, around the real clock;
    `now` and `tolerance` are checked first, so a caller (or a test) can ask for a narrower window or a given
    instant and get a precise reason.

    A secret that does not decode raises ValueError (a configuration error, see `decode_secret`).
    """
    webhook = _webhook(secret)
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    msg_id = _header(lowered, "id")
    raw_ts = _header(lowered, "timestamp")
    signatures = _signature_entries(_header(lowered, "signature"))

    # Svix sends whole seconds. The library would take "1.5e9" or "nan" and sign a rounded value: refuse them, and
    # refuse lengths no clock reaches (12 digits is year 33658) before int() or float() meet a 400-digit number.
    if not raw_ts.isascii() or not raw_ts.isdigit() or len(raw_ts) > 12:
        raise SignatureError("invalid timestamp header")
    timestamp = int(raw_ts)
    current = time.time() if now is None else now
    if current - timestamp > tolerance:
        raise SignatureError("timestamp too old")
    if timestamp - current > tolerance:
        raise SignatureError("timestamp too far in the future")
    if not signatures:
        raise SignatureError("no matching signature")
    try:
        text = body.decode("utf-8")  # the library decodes bytes itself and would raise UnicodeDecodeError
    except UnicodeDecodeError:
        raise SignatureError("body is not UTF-8") from None

    try:
        webhook.verify(text, {"webhook-id": msg_id, "webhook-timestamp": raw_ts, "webhook-signature": signatures},
                       json_parse=False)  # parsing is the caller's, after this returns (a 422, not a 401)
    except WebhookVerificationError as exc:
        raise SignatureError(_LIBRARY_REASONS.get(str(exc), str(exc) or "invalid signature")) from None
    except (ValueError, TypeError, OverflowError):
        # A v1 entry whose value is not base64 (binascii.Error is a ValueError): the header is hostile or broken.
        raise SignatureError("malformed signature header") from None
