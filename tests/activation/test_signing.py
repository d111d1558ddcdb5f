"""Svix / Standard Webhooks signatures: the reference test vector, and every way a delivery is refused."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from activation.signing import SignatureError, decode_secret, sign, signed_headers, verify

SECRET = "whsec_ZGV2LXNhbHZ5LXdlYmhvb2stc2VjcmV0"
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW5vdC1zYWx2eXM="
BODY = '{"type":"sms.received","data":{"message":"Seu código é 123456"}}'.encode()


def test_sign_matches_the_svix_reference_vector():
    # The example from the svix / Standard Webhooks libraries' own tests.
    assert sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_prefix_is_optional_and_only_a_label():
    assert decode_secret(SECRET) == b"dev-salvy-webhook-secret"
    assert sign(SECRET, "msg_1", 1, b"x") == sign(SECRET.removeprefix("whsec_"), "msg_1", 1, b"x")


def test_invalid_secret_is_a_configuration_error_not_a_signature_error():
    with pytest.raises(ValueError):
        decode_secret("whsec_not base64!!")


def test_verify_accepts_a_fresh_signature_with_any_header_case():
    headers = signed_headers(SECRET, "msg_1", BODY)
    verify(SECRET, headers, BODY)
    verify(SECRET, {k.title(): v for k, v in headers.items()}, BODY)


def test_verify_accepts_standard_webhooks_header_names():
    headers = signed_headers(SECRET, "msg_1", BODY)
    verify(SECRET, {k.replace("svix-", "webhook-"): v for k, v in headers.items()}, BODY)


def test_verify_accepts_any_of_several_signatures():
    ts = int(time.time())
    good = sign(SECRET, "msg_1", ts, BODY)
    bad = sign(OTHER_SECRET, "msg_1", ts, BODY)
    headers = {"svix-id": "msg_1", "svix-timestamp": str(ts), "svix-signature": f"v1a,whatever {bad} {good}"}
    verify(SECRET, headers, BODY)


def test_verify_rejects_a_tampered_body():
    headers = signed_headers(SECRET, "msg_1", BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY.replace(b"123456", b"654321"))


def test_verify_rejects_a_changed_msg_id():
    headers = {**signed_headers(SECRET, "msg_1", BODY), "svix-id": "msg_2"}
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY)


def test_verify_rejects_the_wrong_secret():
    headers = signed_headers(OTHER_SECRET, "msg_1", BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY)


def test_verify_rejects_a_timestamp_older_than_five_minutes():
    now = time.time()
    old = signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) - 301)
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, old, BODY, now=now)
    # Just inside the window is fine; a custom tolerance is honoured.
    verify(SECRET, signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) - 290), BODY, now=now)
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) - 20), BODY, now=now, tolerance=10)


def test_verify_rejects_a_timestamp_from_the_future():
    now = time.time()
    with pytest.raises(SignatureError, match="future"):
        verify(SECRET, signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) + 400), BODY, now=now)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_verify_rejects_missing_headers(missing):
    headers = signed_headers(SECRET, "msg_1", BODY)
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing}") as exc:
        verify(SECRET, headers, BODY)
    assert exc.value.reason == f"missing {missing} header"


def test_verify_rejects_a_non_numeric_timestamp_and_unversioned_signatures():
    headers = {**signed_headers(SECRET, "msg_1", BODY), "svix-timestamp": "yesterday"}
    with pytest.raises(SignatureError, match="invalid timestamp"):
        verify(SECRET, headers, BODY)
    headers = signed_headers(SECRET, "msg_1", BODY)
    headers["svix-signature"] = headers["svix-signature"].removeprefix("v1,")
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY)


def test_sign_is_the_librarys_and_verify_uses_it():
    from standardwebhooks import Webhook

    ts = int(time.time())
    headers = signed_headers(SECRET, "msg_1", BODY, timestamp=ts)
    assert headers["svix-signature"] == Webhook(decode_secret(SECRET)).sign(
        "msg_1", datetime.fromtimestamp(ts, tz=UTC), BODY.decode())
    # What the library itself accepts, under its own header names.
    Webhook(SECRET).verify(BODY, {k.replace("svix-", "webhook-"): v for k, v in headers.items()})


@pytest.mark.parametrize(("change", "reason"), [
    ({"svix-signature": "v1,abc"}, "malformed signature header"),           # bad base64 padding (binascii.Error)
    ({"svix-signature": "v1,a,b v1,c,d"}, "no matching signature"),        # too many commas: unreadable entries
    ({"svix-signature": "  "}, "missing svix-signature header"),
    ({"svix-signature": "v1,%%%%"}, "no matching signature"),              # the library drops non-base64 chars
    ({"svix-timestamp": "1.7e9"}, "invalid timestamp header"),
    ({"svix-timestamp": "nan"}, "invalid timestamp header"),
    ({"svix-timestamp": "-1"}, "invalid timestamp header"),
    ({"svix-timestamp": "١٧٠٠٠٠٠٠٠٠"}, "invalid timestamp header"),       # non-ASCII digits
    ({"svix-timestamp": "9" * 400}, "invalid timestamp header"),
    ({"svix-timestamp": "99999999999"}, "timestamp too far in the future"),
    ({"svix-id": "msg_ü\x00"}, "no matching signature"),
])
def test_hostile_headers_are_signature_errors_never_crashes(change, reason):
    headers = {**signed_headers(SECRET, "msg_1", BODY), **change}
    with pytest.raises(SignatureError) as exc:
        verify(SECRET, headers, BODY)
    assert exc.value.reason == reason


def test_a_body_that_is_not_utf8_is_a_signature_error():
    headers = signed_headers(SECRET, "msg_1", BODY)
    with pytest.raises(SignatureError, match="not UTF-8"):
        verify(SECRET, headers, b"\xff\xfe" + BODY)


def test_a_valid_signature_over_a_body_that_is_not_json_verifies():
    # Parsing is the caller's (a 422 after the signature, not a 401): the library is told not to parse.
    body = b"not json"
    verify(SECRET, signed_headers(SECRET, "msg_1", body), body)


def test_a_broken_entry_beside_a_good_one_is_skipped():
    headers = signed_headers(SECRET, "msg_1", BODY)
    headers["svix-signature"] = "garbage v1,a,b  " + headers["svix-signature"]
    verify(SECRET, headers, BODY)
