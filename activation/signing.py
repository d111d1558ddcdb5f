"""Svix / Standard Webhooks signatures, implemented here instead of depending on the `svix` package.

Salvy delivers `sms.received` through Svix (contracts/evolution-and-salvy.md §7.3). Svix signs
``"{msg_id}.{timestamp}.{raw body}"`` with HMAC-SHA256 under the endpoint secret and sends three headers:

- ``svix-id``: the message id. It is the same on every retry of one message, so it is the dedup key.
- ``svix-timestamp``: unix seconds of *this attempt* (a retry gets a fresh timestamp and signature).
- ``svix-signature``: space-separated ``v1,<base64>`` entries — several while a secret is being rotated.

The Standard Webhooks spec names the same headers ``webhook-id`` / ``webhook-timestamp`` /
``webhook-signature``; both spellings are accepted. The secret is shown as ``whsec_<base64>``: the prefix is a
label, the HMAC key is the base64-decoded remainder (the same rule as the svix library, which also accepts a bare
base64 secret). The signature covers the raw bytes, so verify before parsing JSON, never a re-serialised body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

__all__ = ["SECRET_PREFIX", "SignatureError", "decode_secret", "sign", "signed_headers", "verify"]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300

_HEADER_NAMES = {
    "id": ("svix-id", "webhook-id"),
    "timestamp": ("svix-timestamp", "webhook-timestamp"),
    "signature": ("svix-signature", "webhook-signature"),
}


class SignatureError(Exception):
    """The delivery is not authentic (or is a replay): answer 4xx and do not process it.

    `reason` is a short machine-friendly text ("missing svix-id header", "timestamp too old", ...) for logs.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def decode_secret(secret: str) -> bytes:
    """The HMAC key behind a ``whsec_<base64>`` secret.

    A secret that does not decode is a configuration error, not a forged request, hence ValueError rather than
    SignatureError: it must surface as a server error, not be silently answered with 4xx forever.
    """
    raw = secret[len(SECRET_PREFIX):] if secret.startswith(SECRET_PREFIX) else secret
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("webhook secret is not valid base64 (expected 'whsec_<base64>')") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int | str, body: bytes) -> str:
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, to_sign, hashlib.sha256).digest()).decode("ascii")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """``"v1,<base64 HMAC-SHA256>"`` over ``f"{msg_id}.{timestamp}.{body}"`` — one `svix-signature` entry."""
    return "v1," + _digest(decode_secret(secret), msg_id, int(timestamp), body)


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
        if value:
            return value.strip()
    raise SignatureError(f"missing {_HEADER_NAMES[field][0]} header")


def verify(secret: str, headers: Mapping[str, str], body: bytes, *, now: float | None = None,
           tolerance: int = DEFAULT_TOLERANCE_SECONDS) -> None:
    """Return if `body` was signed by the holder of `secret`; raise SignatureError otherwise.

    `headers` may be any mapping (Django's `request.headers`, Starlette's, a plain dict): names are matched
    case-insensitively. The timestamp window (default 5 min, both directions) is Svix's replay protection; dedup
    of genuine retries is the caller's job (on `svix-id`).
    """
    lowered = {str(k).lower(): str(v) for k, v in headers.items()}
    msg_id = _header(lowered, "id")
    raw_ts = _header(lowered, "timestamp")
    signatures = _header(lowered, "signature")

    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise SignatureError("invalid timestamp header") from None
    current = time.time() if now is None else now
    if current - timestamp > tolerance:
        raise SignatureError("timestamp too old")
    if timestamp - current > tolerance:
        raise SignatureError("timestamp too far in the future")

    expected = _digest(decode_secret(secret), msg_id, timestamp, body).encode("ascii")
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        # Unknown versions (e.g. the asymmetric "v1a") are skipped, not failed: a newer sender may add entries.
        if version == "v1" and hmac.compare_digest(value.encode("ascii", "replace"), expected):
            return
    raise SignatureError("no matching signature")
